"""Load on ``signoff serve``: webhooks in, proposals out, REST decisions to Odoo writes, per worker count.

Loopback only and bounded. Seeds an Odoo stand-in with ``--tickets`` new tickets, starts ``--workers``
``signoff serve`` processes (uvicorn, free 127.0.0.1 ports) on one state database (``--db sqlite``: one
shared data directory; ``--db postgres``: a throwaway ``signoff_bench_<random>`` database on
``--postgres-url``, dropped after), then:

1. **in**: posts one Odoo webhook per ticket, round-robin over the workers (8 at a time), and waits until
   every run has paused at the gate (or finished). Events/s = tickets / (first post -> last run settled).
2. **decisions**: approves every pending proposal through the REST API, round-robin over the workers (4
   runs at a time; a run's proposals one after the other). Decision-to-write latency, per run: from sending
   its last decision (the one that resumes the run) to the answer, which comes after the Odoo write.
3. counts the Odoo writes (exactly one per approved proposal, or the bench fails) and reads each worker's
   RSS (VmRSS and the peak VmHWM from /proc).

    nice -n 10 .venv/bin/python bench/serve_load.py --db postgres --workers 2 [--tickets 40] [--model-dir DIR]
    nice -n 10 .venv/bin/python bench/serve_load.py --all     # sqlite and postgres x 1, 2, 4 workers

Without ``--model-dir`` a small triage model is trained first (as the fault trials do). Sweeps are off
(``SIGNOFF_SWEEP_SECONDS=0``) so only this load runs. Figures depend on the machine (2 shared cores here):
compare rows of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "trials"))

import httpx  # noqa: E402

from signoff.config import Settings  # noqa: E402
from signoff.integrations.odoo import ReadOnlyOdoo  # noqa: E402
from signoff.sandbox.odoo import OdooStandIn  # noqa: E402
from signoff.sandbox.seed import seed  # noqa: E402
from signoff.tools.tickets import untriaged_ticket_ids  # noqa: E402

TOKEN, HOOK = "bench-api-token", "bench-webhook-secret"
ADMIN_URL = os.environ.get("SIGNOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def write_policy(path: Path) -> Path:
    import yaml

    from signoff.guardrails.policy import DEFAULT_POLICY_PATH

    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    for name in ("ticket.set_category", "ticket.set_team"):
        policy["actions"][name]["min_confidence"] = 0.0
    for rule in policy["actions"].values():
        rule["channel"] = "inbox"
    path.write_text(yaml.safe_dump(policy))
    return path


@dataclass
class Row:
    db: str
    workers: int
    tickets: int
    proposals: int
    in_seconds: float
    decisions: int
    decide_seconds: float
    latencies: list[float]
    writes: int
    rss: list[tuple[float, float]]


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "signoff.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--log-level", "warning"],
                                     env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def wait_up(self, http: httpx.Client, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"a worker exited: {Path(self.out.name).read_text()[-2000:]}")
            try:
                if http.get(self.url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"a worker did not start: {Path(self.out.name).read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.out.close()


def run_one(db: str, n_workers: int, n_tickets: int, model_dir: Path, work: Path) -> Row:
    base = Settings(_env_file=None)  # type: ignore[call-arg]
    odoo_db = work / "odoo.sqlite"
    seed(odoo_db, base.public_data_dir, n_history=40, n_new=n_tickets + n_workers, n_contracts=0)
    standin = OdooStandIn(odoo_db, port=0, dbname="signoff")
    standin.start()
    pg_name = None
    workers: list[Worker] = []
    http = httpx.Client(timeout=120.0, trust_env=False, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
        env.update({
            "SIGNOFF_DATA_DIR": str(work / "data"), "SIGNOFF_ODOO_URL": standin.url, "SIGNOFF_ODOO_DB": "signoff",
            "SIGNOFF_MODEL_DIR": str(model_dir), "SIGNOFF_POLICY_PATH": str(write_policy(work / "policy.yaml")),
            "SIGNOFF_PUBLIC_DATA_DIR": str(base.public_data_dir), "SIGNOFF_WEBHOOK_SECRET": HOOK,
            "SIGNOFF_API_TOKEN": TOKEN, "SIGNOFF_SWEEP_SECONDS": "0", "SIGNOFF_EXECUTOR_STALE_SECONDS": "0",
            "SIGNOFF_LOG_LEVEL": "warning", "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_OFFLINE": "1",
        })
        if db == "postgres":
            import psycopg
            from psycopg.conninfo import conninfo_to_dict, make_conninfo

            pg_name = f"signoff_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{pg_name}"')
            env["SIGNOFF_DATABASE_URL"] = make_conninfo(**{**conninfo_to_dict(ADMIN_URL), "dbname": pg_name})
        workers = [Worker(env, work / f"worker{i}.log") for i in range(n_workers)]
        for w in workers:
            w.wait_up(http)
        reader = ReadOnlyOdoo.connect(standin.url, "signoff", "agent", "agent", timeout=10.0)
        tickets = untriaged_ticket_ids(reader)[:n_tickets]
        threads = [f"ticket:signoff:{t}" for t in tickets]
        # Warm up each worker's model on a ticket outside the measurement: the first triage loads it.
        warm = untriaged_ticket_ids(reader)[n_tickets:n_tickets + n_workers]
        if len(warm) < n_workers:
            raise SystemExit("not enough seeded tickets")

        def hook(w: Worker, tid: int) -> None:
            answer = http.post(w.url + "/webhooks/odoo", headers={"X-Signoff-Webhook-Secret": HOOK},
                               json={"_model": "helpdesk.ticket", "_id": tid})
            if answer.status_code != 202:
                raise SystemExit(f"webhook {tid}: {answer.status_code} {answer.text}")

        def settled(thread: str, w: Worker) -> bool:
            return bool(http.get(f"{w.url}/api/runs/{thread}").json()["status"] in ("paused", "done"))

        def wait_settled(pairs: list[tuple[str, Worker]], timeout: float = 900.0) -> None:
            left, deadline = list(pairs), time.monotonic() + timeout
            while left:
                left = [(t, w) for t, w in left if not settled(t, w)]
                if left and time.monotonic() > deadline:
                    raise SystemExit(f"{len(left)} runs did not settle")
                if left:
                    time.sleep(0.05)

        for w, tid in zip(workers, warm, strict=True):
            hook(w, tid)
        wait_settled([(f"ticket:signoff:{t}", w) for w, t in zip(workers, warm, strict=True)])
        writes_before = sum(1 for c in standin.calls() if c["method"] == "write" and c["ok"])

        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: hook(workers[i % n_workers], tickets[i]), range(n_tickets)))
        wait_settled([(t, workers[i % n_workers]) for i, t in enumerate(threads)])
        in_seconds = time.monotonic() - start
        pending = {t: [p["id"] for p in http.get(f"{workers[0].url}/api/proposals",
                                                  params={"thread": t}).json()["proposals"]] for t in threads}
        proposals = sum(len(v) for v in pending.values())

        def decide_run(i: int) -> float | None:
            ids = pending[threads[i]]
            if not ids:
                return None
            last = 0.0
            for k, pid in enumerate(ids):  # spread a run's decisions over the workers too
                w = workers[(i + k) % n_workers]
                sent = time.monotonic()
                answer = http.post(f"{w.url}/api/proposals/{pid}/decision",
                                   json={"verdict": "approve", "actor": "cli:lead"})
                if answer.status_code != 200:
                    raise SystemExit(f"decision {pid}: {answer.status_code} {answer.text}")
                last = time.monotonic() - sent
            if answer.json()["proposal"]["state"] != "executed":
                raise SystemExit(f"run {threads[i]} not executed after its last decision: {answer.text}")
            return last

        start = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            latencies = [x for x in pool.map(decide_run, range(n_tickets)) if x is not None]
        decide_seconds = time.monotonic() - start
        writes = sum(1 for c in standin.calls() if c["method"] == "write" and c["ok"]) - writes_before
        if writes != proposals:
            raise SystemExit(f"{writes} Odoo writes for {proposals} approved proposals: not exactly once")
        rss = [rss_mib(w.proc.pid) for w in workers]
        return Row(db, n_workers, n_tickets, proposals, in_seconds, proposals, decide_seconds, latencies, writes,
                   rss)
    finally:
        http.close()
        for w in workers:
            w.stop()
        standin.stop()
        if pg_name:
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--workers", type=int, choices=[1, 2, 4], default=2)
    parser.add_argument("--tickets", type=int, default=40, help="webhooks in (bounded: at most 200)")
    parser.add_argument("--all", action="store_true", help="sqlite and postgres with 1, 2 and 4 workers")
    parser.add_argument("--model-dir", type=Path, default=None, help="a trained triage model (default: train one)")
    args = parser.parse_args()
    n = max(1, min(args.tickets, 200))
    combos = [(d, w) for d in ("sqlite", "postgres") for w in (1, 2, 4)] if args.all else [(args.db, args.workers)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="signoff-serve-load-") as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from run_trials import train_model

            print("training a small triage model ...", file=sys.stderr)
            model_dir = train_model(Settings(_env_file=None).public_data_dir, Path(tmp) / "models")  # type: ignore[call-arg]
        for db, w in combos:
            work = Path(tmp) / f"{db}-{w}"
            work.mkdir()
            print(f"{db}, {w} worker(s), {n} tickets ...", file=sys.stderr)
            rows.append(run_one(db, w, n, model_dir, work))
    print(f"\n{'db':<9}{'workers':>8}{'tickets':>8}{'props':>7}{'events/s':>10}{'decisions/s':>12}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'writes':>8}  RSS MiB per worker (peak)")
    for r in rows:
        rss = ", ".join(f"{now:.0f} ({peak:.0f})" for now, peak in r.rss)
        print(f"{r.db:<9}{r.workers:>8}{r.tickets:>8}{r.proposals:>7}{r.tickets / r.in_seconds:>10.2f}"
              f"{r.decisions / r.decide_seconds:>12.2f}{statistics.median(r.latencies) * 1000:>9.0f}"
              f"{pct(r.latencies, 99) * 1000:>9.0f}{r.writes:>8}  {rss}")


if __name__ == "__main__":
    main()
