"""Two real ``signoff serve`` processes (uvicorn on free 127.0.0.1 ports) on one throwaway Postgres database,
with the Odoo stand-in and an event consumer over sockets.

A ticket webhook into worker 1, REST decisions on worker 2: the run resumes on worker 2 from Postgres's
checkpoints and each approved proposal is written to Odoo exactly once. Both workers' sweeps triggered at the
same moment expire an overdue proposal exactly once. Both workers run the outbox: every event reaches the
consumer exactly once. The audit chain verifies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import API_TOKEN, WEBHOOK_SECRET, wait_for, write_policy
from test_orchestration import SUB_SECRET, Receiver
from test_triage import ticket_writes

from signoff.config import Settings
from signoff.domain import utcnow
from signoff.guardrails.postgres import PostgresApprovalStore, PostgresAuditLog, PostgresDatabase
from signoff.integrations.odoo import ReadOnlyOdoo
from signoff.sandbox.odoo import OdooStandIn
from signoff.tools.tickets import untriaged_ticket_ids


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """``python -m signoff.cli serve`` in its own process, with its own (unused) data directory."""

    def __init__(self, name: str, env: dict[str, str], data_dir: Path) -> None:
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / "serve.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "signoff.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            env={**env, "SIGNOFF_DATA_DIR": str(data_dir)}, stdout=self._out, stderr=subprocess.STDOUT)
        self.http = httpx.Client(timeout=60.0, trust_env=False)

    def wait_up(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if self.http.get(self.url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not become ready: {self.log.read_text()[-3000:]}")

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.url + path, headers={"Authorization": f"Bearer {API_TOKEN}"}, **kwargs)

    def webhook(self, ticket_id: int) -> httpx.Response:
        return self.http.post(self.url + "/webhooks/odoo", headers={"X-Signoff-Webhook-Secret": WEBHOOK_SECRET},
                              json={"_model": "helpdesk.ticket", "_id": ticket_id, "_action": "Notify(#1)"})

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._out.close()


@pytest.fixture
def workers(settings: Settings, model_dir: Path, tmp_path: Path, postgres_url: str,
            odoo_standin: OdooStandIn) -> Iterator[Callable[[int], list[Worker]]]:
    started: list[Worker] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({
        "SIGNOFF_DATABASE_URL": postgres_url,
        "SIGNOFF_ODOO_URL": odoo_standin.url,
        "SIGNOFF_ODOO_DB": settings.odoo_db,
        "SIGNOFF_ODOO_TIMEOUT": "5",
        "SIGNOFF_MODEL_DIR": str(model_dir),
        "SIGNOFF_POLICY_PATH": str(write_policy(tmp_path / "policy.yaml", 0.0, channel="inbox")),
        "SIGNOFF_PUBLIC_DATA_DIR": str(settings.public_data_dir),
        "SIGNOFF_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SIGNOFF_API_TOKEN": API_TOKEN,
        "SIGNOFF_SWEEP_SECONDS": "0",  # only the sweeps the test triggers
        "SIGNOFF_EXECUTOR_STALE_SECONDS": "0",
        "SIGNOFF_OUTBOUND_POLL_SECONDS": "0.05",
        "SIGNOFF_OUTBOUND_BACKOFF_SECONDS": "0.05",
        "SIGNOFF_SERVER_WORKERS": "2",
        "NO_PROXY": "127.0.0.1,localhost",
    })

    def start(n: int) -> list[Worker]:
        made = [Worker(f"worker{i + 1}", env, tmp_path / f"worker{i + 1}") for i in range(n)]
        started.extend(made)
        for w in made:  # started together: their migrations race (serialised by an advisory lock)
            w.wait_up()
        return made

    yield start
    for w in started:
        w.stop()


def test_two_workers_on_one_postgres_decide_resume_sweep_and_deliver_once(
    workers: Callable[[int], list[Worker]], postgres_url: str, odoo_standin: OdooStandIn, settings: Settings,
    tmp_path: Path,
) -> None:
    consumer = Receiver(SUB_SECRET)
    try:
        w1, w2 = workers(2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
        added = subprocess.run(  # the CLI subscribes on Postgres too (no server involved)
            [sys.executable, "-m", "signoff.cli", "subscriptions", "add", consumer.url, "--secret", SUB_SECRET,
             "--event", "proposal.created", "--event", "proposal.decided", "--event", "proposal.expired",
             "--event", "execution.succeeded"],
            env={**env, "SIGNOFF_DATABASE_URL": postgres_url, "SIGNOFF_DATA_DIR": str(tmp_path / "cli")},
            capture_output=True, text=True, timeout=120)
        assert added.returncode == 0, added.stderr
        reader = ReadOnlyOdoo.connect(odoo_standin.url, settings.odoo_db, "agent", "agent", timeout=5.0)
        tid_a, tid_b = untriaged_ticket_ids(reader)[:2]
        thread_a, thread_b = f"ticket:signoff:{tid_a}", f"ticket:signoff:{tid_b}"

        # -- a webhook into worker 1; the decisions on worker 2 ------------------------------------------
        assert w1.webhook(tid_a).status_code == 202
        wait_for(lambda: w2.api("GET", f"/api/runs/{thread_a}").json()["status"] == "paused", 60,
                 "worker 2 sees worker 1's paused run")
        assert w2.webhook(tid_a).json()["status"] == "duplicate", "one run per ticket across workers"
        pending = w2.api("GET", "/api/proposals", params={"thread": thread_a}).json()["proposals"]
        assert pending and all(p["state"] == "pending" for p in pending)
        assert ticket_writes(odoo_standin) == [], "nothing written before approval"
        answers = [w2.api("POST", f"/api/proposals/{p['id']}/decision", json={"verdict": "approve",
                                                                              "actor": "cli:lead"})
                   for p in pending]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert answers[-1].json()["proposal"]["state"] == "executed", "worker 2 resumed the run and wrote"
        again = w1.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                       json={"verdict": "reject", "actor": "cli:lead", "reason": "late"})
        assert again.status_code == 409 and again.json()["decided_by"] == "cli:lead"
        after = w1.api("GET", "/api/proposals", params={"thread": thread_a, "state": "all"}).json()["proposals"]
        assert {p["state"] for p in after} == {"executed"}
        assert w1.api("GET", f"/api/runs/{thread_a}").json()["status"] == "done"
        writes = ticket_writes(odoo_standin)
        assert len(writes) == len(pending), "each approved proposal written exactly once"
        assert {w["login"] for w in writes} == {"executor"}

        # -- an overdue proposal; both workers sweep at once -------------------------------------------------
        assert w2.webhook(tid_b).status_code == 202
        wait_for(lambda: w1.api("GET", f"/api/runs/{thread_b}").json()["status"] == "paused", 60, "run b paused")
        db = PostgresDatabase(postgres_url, max_size=2)
        try:
            store, audit = PostgresApprovalStore(db), PostgresAuditLog(db)
            overdue = store.find(thread_id=thread_b, states=("pending",))
            assert overdue
            for p in overdue:
                assert store.transition(p.id, ("pending",), expires_at=utcnow() - timedelta(minutes=1))
            barrier, swept = threading.Barrier(2), list[dict[str, Any]]()

            def sweep(w: Worker) -> None:
                barrier.wait()
                swept.append(w.api("POST", "/api/sweep").json())

            threads = [threading.Thread(target=sweep, args=(w,)) for w in (w1, w2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert len(swept) == 2, swept
            assert sum(s["expired"] for s in swept) == len(overdue), swept
            assert {p.state for p in store.find(thread_id=thread_b)} == {"expired"}
            kinds = Counter(e.kind for e in audit.trail(thread_b))
            assert kinds["proposal.expired"] == len(overdue), "expired exactly once"
            assert kinds["proposal.rejected"] == 0 and kinds["execution.succeeded"] == 0
            assert len(ticket_writes(odoo_standin)) == len(pending), "an expired proposal is never written"
            assert w2.api("POST", "/api/sweep").json()["expired"] == 0

            # -- events: both workers run the outbox; each event reaches the consumer once ---------------
            expected = {"proposal.created": len(pending) + len(overdue), "proposal.decided": len(pending),
                        "execution.succeeded": len(pending), "proposal.expired": len(overdue)}
            wait_for(lambda: Counter(e["type"] for e in consumer.delivered()) == expected, 30,
                     f"events {expected}")
            time.sleep(0.5)  # a second sender would have posted by now
            ids = [c["event_id"] for c in consumer.calls]
            assert len(ids) == len(set(ids)) == sum(expected.values()), "no event sent twice"
            assert all(c["good"] for c in consumer.calls)

            trail_a = [e.kind for e in audit.trail(thread_a)]
            assert trail_a.count("execution.succeeded") == len(pending)
            assert audit.verify() >= len(trail_a), "one intact hash chain across both workers"
        finally:
            db.close()
        metrics = w1.http.get(w1.url + "/metrics").text
        assert f'signoff_proposals{{state="executed"}} {len(pending)}' in metrics, "/metrics reads Postgres"
        assert f'signoff_proposals{{state="expired"}} {len(overdue)}' in metrics
    finally:
        consumer.stop()
