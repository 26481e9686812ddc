"""Server worker kills: ``signoff serve`` as its own process, SIGKILLed between proposal and execution.

The worker runs on its own data dir (SQLite) against the same Odoo stand-in, with a sweep every
``SWEEP`` seconds and a realistic stale bound for interrupted writes (``STALE`` s, not 0): after a kill it is
started again on the same data dir and port, and the sweep (or the next decision) must finish what was
decided: every approved proposal written exactly once, pending ones still pending. Kill points:

* ``triage``: while the webhook's run is in flight (the ticket is triaged again by the next event);
* ``pending``: with the proposals pending (nothing may be written; they are decided after the restart);
* ``decide``: a random moment after a REST decision was sent (during the resume and the write);
* ``before_write`` / ``after_write``: the worker dies at the executor's fault point
  (``SIGNOFF_FAULT_INJECTION``, exit 137) right before / after the Odoo write.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from run_trials import Stack, Trial

SWEEP = 0.5
STALE = 2.0
KILL_POINTS = ("triage", "pending", "decide", "before_write", "after_write")


class Worker:
    """One ``signoff serve`` process; :meth:`kill` is SIGKILL, :meth:`start` reuses data dir and port."""

    def __init__(self, stack: Stack, work: Path, name: str = "worker", database_url: str | None = None) -> None:
        from run_trials import API_TOKEN, WEBHOOK_SECRET

        self.stack = stack
        self.database_url = database_url
        self.data_dir = work / f"{name}-state"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"{name}.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**stack.env, "SIGNOFF_DATA_DIR": str(self.data_dir), "SIGNOFF_API_TOKEN": API_TOKEN,
                    "SIGNOFF_WEBHOOK_SECRET": WEBHOOK_SECRET, "SIGNOFF_SWEEP_SECONDS": str(SWEEP),
                    "SIGNOFF_EXECUTOR_STALE_SECONDS": str(STALE), "SIGNOFF_LOG_LEVEL": "INFO",
                    "SIGNOFF_SERVER_WORKERS": "2"}
        if database_url:
            self.env["SIGNOFF_DATABASE_URL"] = database_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.threads: list[str] = []
        self.http = httpx.Client(timeout=60.0, trust_env=False,
                                 headers={"Authorization": f"Bearer {API_TOKEN}"})

    def start(self, fault: str | None = None) -> None:
        env = dict(self.env)
        if fault:
            env["SIGNOFF_FAULT_INJECTION"] = fault
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "signoff.cli", "serve", "--port", str(self.port)],
                                     env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"signoff serve exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.http.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"signoff serve did not start: {self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        rc = self.proc.wait(30)
        self.proc = None
        return rc

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.proc = None
        return rc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self.http.close()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-1500:] if self.log_path.exists() else ""

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.url + path, **kwargs)

    def webhook(self, ticket_id: int) -> httpx.Response:
        from run_trials import WEBHOOK_SECRET

        return self.http.post(self.url + "/webhooks/odoo", headers={"X-Signoff-Webhook-Secret": WEBHOOK_SECRET},
                              json={"_model": "helpdesk.ticket", "_id": ticket_id, "_action": "Notify(#1)"})

    def states(self, thread: str) -> dict[str, str]:
        rows = self.api("GET", "/api/proposals", params={"state": "all", "thread": thread}).json()["proposals"]
        return {p["id"]: p["state"] for p in rows}

    def run_status(self, thread: str) -> str:
        return str(self.api("GET", f"/api/runs/{thread}").json()["status"])

    def age_claim(self, thread: str) -> bool:
        """Let the run claim a killed worker held go stale now instead of in ``CLAIM_SECONDS`` (time travel,
        as the expiry scenario moves ``expires_at``). True when there was a claim."""
        import sqlite3
        from datetime import timedelta

        from signoff.agents.runner import CLAIM_SECONDS
        from signoff.domain import utcnow

        if self.database_url:
            import psycopg

            with psycopg.connect(self.database_url, autocommit=True) as pg:
                aged = pg.execute("UPDATE claims SET claimed_at = clock_timestamp() - make_interval(secs => %s) "
                                  "WHERE key = %s", (CLAIM_SECONDS + 1, thread))
                return aged.rowcount > 0
        conn = sqlite3.connect(self.data_dir / "signoff.sqlite", timeout=30)
        try:
            with conn:
                cur = conn.execute("UPDATE claims SET claimed_at = ? WHERE key = ?",
                                   ((utcnow() - timedelta(seconds=CLAIM_SECONDS + 1)).isoformat(), thread))
            return cur.rowcount > 0
        finally:
            conn.close()


def wait_run(worker: Worker, thread: str, timeout: float = 60, allow: tuple[str, ...] = ()) -> str:
    from run_trials import wait_for

    return str(wait_for(lambda: (s := worker.run_status(thread)) in ("paused", "done", "stopped", *allow) and s,
                        timeout, f"worker run {thread}"))


def worker_kill(trial: Trial, tid: int) -> None:
    from run_trials import APPROVERS, wait_for

    rng, tally = trial.rng, trial.tally
    worker = trial.worker()
    point = rng.choice(KILL_POINTS)
    trial.scenario = f"worker_kill_{point}"
    tally.faults[trial.scenario] += 1
    thread = f"ticket:{trial.stack.settings.odoo_db}:{tid}"
    worker.threads.append(thread)
    writes_before = trial.ticket_writes(tid)
    if point in ("before_write", "after_write"):  # this worker life dies at the fault point of its write
        worker.kill()
        worker.start(fault=point)
    accepted = worker.webhook(tid).json()
    if point == "triage":
        time.sleep(rng.uniform(0.0, 1.5))
        tally.kills["worker_sigkill"] += 1
        worker.kill()
        worker.start()
        if worker.run_status(thread) in ("none", "failed", "stopped"):
            # The run died with the worker (before its first checkpoint, or mid-way): the next event for the
            # ticket (Odoo's next webhook, or /api/triage) starts it again or finishes it from its checkpoint.
            tally.outcomes["worker_triage_killed_mid_run"] += 1
            again = worker.webhook(tid).json()
            if again["status"] != "accepted":
                tally.problems.append(f"{thread}: after a worker kill mid-triage the webhook answered {again}")
            status = wait_run(worker, thread, timeout=60, allow=("none", "failed"))
            if status in ("none", "failed", "stopped") and worker.age_claim(thread):
                # The dead worker's claim on the run blocks it until it goes stale (CLAIM_SECONDS).
                tally.outcomes["worker_run_waited_for_stale_claim"] += 1
                worker.webhook(tid)
    elif accepted.get("status") != "accepted":
        tally.problems.append(f"{thread}: worker webhook answered {accepted}")
    status = wait_run(worker, thread)
    if status == "stopped":
        tally.problems.append(f"{thread}: run stopped after a restart and a fresh event")
    ids = list(worker.states(thread))
    if not ids:
        tally.no_proposals += 1
        return
    if point == "pending":
        tally.kills["worker_sigkill"] += 1
        worker.kill()
        worker.start()
        after = worker.states(thread)
        if any(s != "pending" for s in after.values()) or trial.ticket_writes(tid) != writes_before:
            tally.problems.append(f"{thread}: a restart changed pending proposals: {after}")
    verdicts = {pid: ("reject" if rng.random() < 0.2 else "approve") for pid in ids}
    if point == "decide":
        *first, last = ids
        for pid in first:
            worker.api("POST", f"/api/proposals/{pid}/decision", json={"verdict": verdicts[pid],
                       "actor": rng.choice(APPROVERS), "reason": "trial"})
        verdicts[last] = "approve"
        import threading

        def send() -> None:
            try:
                worker.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve",
                           "actor": rng.choice(APPROVERS)}, timeout=30)
            except httpx.HTTPError:
                pass  # the worker died under the request

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(rng.uniform(0.0, 0.6))
        tally.kills["worker_sigkill"] += 1
        worker.kill()
        sender.join(30)
        worker.start()
        if worker.states(thread).get(last) == "pending":  # killed before the decision was recorded
            tally.kills["worker_sigkill_before_decision"] += 1
            worker.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve",
                       "actor": rng.choice(APPROVERS)})
    else:
        for pid in ids:
            try:
                r = worker.api("POST", f"/api/proposals/{pid}/decision", json={
                    "verdict": verdicts[pid], "actor": rng.choice(APPROVERS), "reason": "trial"}, timeout=30)
                if r.status_code not in (200, 409):
                    tally.problems.append(f"{thread}: worker decision {r.status_code}: {r.text[:200]}")
            except httpx.HTTPError:
                if point not in ("before_write", "after_write"):
                    raise
        if point in ("before_write", "after_write"):
            rc = worker.wait_exit(10)
            tally.kills[f"worker_{point}" if rc == 137 else f"worker_{point}_not_reached"] += 1
            if rc is None:
                worker.kill()
            worker.start()

    def settled() -> bool:
        return not any(s in ("approved", "executing") for s in worker.states(thread).values())

    try:  # the sweep after the restart finishes decided runs (interrupted writes after the stale bound)
        try:
            wait_for(settled, STALE + 8, f"{thread} to settle on the worker")
        except TimeoutError:
            if not worker.age_claim(thread):
                raise
            tally.outcomes["worker_resume_waited_for_stale_claim"] += 1
            wait_for(settled, STALE + 20, f"{thread} to settle on the worker")
    except TimeoutError:
        tally.stuck.append(f"{thread} ({trial.scenario}) on the worker: {worker.states(thread)}")
        tally.problems.append(f"{thread}: decided proposals not finished by the sweep after a worker restart")
    tally.outcomes["worker_restarts"] += 1


PG_POINTS = ("triage", "decide", "after_write")


def pg_worker_kill(trial: Trial, tid: int) -> None:
    """Two ``signoff serve`` workers on the private Postgres; the one doing the work is SIGKILLed and the other
    one (its sweep, or the next event sent to it) must finish the run: written once, nothing lost."""
    import threading

    from run_trials import APPROVERS, wait_for

    rng, tally = trial.rng, trial.tally
    side = trial.pg()
    a, b = trial.pg_worker(), trial.pg_worker(second=True)
    point = rng.choice(PG_POINTS)
    trial.scenario = f"pg_worker_kill_{point}"
    tally.faults[trial.scenario] += 1
    thread = f"ticket:{trial.stack.settings.odoo_db}:{tid}"
    side.threads.append(thread)
    if point == "after_write":
        a.kill()
        a.start(fault="after_write")
    a.webhook(tid)
    if point == "triage":
        time.sleep(rng.uniform(0.0, 1.5))
        tally.kills["pg_worker_sigkill"] += 1
        a.kill()
        if b.run_status(thread) in ("none", "failed", "stopped"):  # the next event goes to the other worker
            tally.outcomes["pg_worker_triage_killed_mid_run"] += 1
            if b.webhook(tid).json().get("status") != "accepted" or \
                    wait_run(b, thread, timeout=60, allow=("none", "failed")) in ("none", "failed", "stopped"):
                if b.age_claim(thread):
                    tally.outcomes["pg_worker_run_waited_for_stale_claim"] += 1
                b.webhook(tid)
    # Only the worker running it knows a run is in flight (to the other one it looks "stopped" mid-way).
    wait_run(b if a.proc is None else a, thread, timeout=90)
    if a.proc is not None:
        wait_for(lambda: a.run_status(thread) in ("paused", "done"), 60, f"{thread} on the first worker")
    ids = list(b.states(thread))
    if not ids:
        tally.no_proposals += 1
        if a.proc is None:
            a.start()
        return
    *first, last = ids
    for pid in first:
        b.api("POST", f"/api/proposals/{pid}/decision", json={
            "verdict": "reject" if rng.random() < 0.2 else "approve", "actor": rng.choice(APPROVERS),
            "reason": "trial"})
    if point == "triage":
        b.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve", "actor": "cli:lead"})
    else:
        def send() -> None:
            try:
                a.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve", "actor": "cli:lead"},
                      timeout=30)
            except httpx.HTTPError:
                pass  # the worker died under the request

        sender = threading.Thread(target=send)
        sender.start()
        if point == "decide":
            time.sleep(rng.uniform(0.0, 0.6))
            tally.kills["pg_worker_sigkill"] += 1
            a.kill()
        else:
            rc = a.wait_exit(15)
            tally.kills["pg_worker_after_write" if rc == 137 else "pg_worker_after_write_not_reached"] += 1
            if rc is None:
                a.kill()
        sender.join(30)
        if b.states(thread).get(last) == "pending":
            tally.kills["pg_worker_sigkill_before_decision"] += 1
            b.api("POST", f"/api/proposals/{last}/decision", json={"verdict": "approve", "actor": "cli:lead"})

    def settled() -> bool:
        return not any(s in ("approved", "executing") for s in b.states(thread).values())

    try:  # the other worker's sweep finishes the run (after the stale bound, or the dead worker's claim)
        try:
            wait_for(settled, STALE + 8, f"{thread} to settle on the other worker")
        except TimeoutError:
            if not b.age_claim(thread):
                raise
            tally.outcomes["pg_worker_resume_waited_for_stale_claim"] += 1
            wait_for(settled, STALE + 20, f"{thread} to settle on the other worker")
    except TimeoutError:
        tally.problems.append(f"{thread}: the surviving worker did not finish the run: {b.states(thread)}")
    tally.outcomes["pg_worker_kill_trials_finished"] += 1
    if a.proc is None:
        a.start()
