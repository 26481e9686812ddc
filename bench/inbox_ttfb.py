"""Web inbox: time to first byte of the Pending page with 10,000 pending proposals.

Seeds a small Odoo stand-in, writes N pending proposals straight into a temporary SQLite state
database (spread over actions, approver groups, ages and expiries), starts the Signoff server
(uvicorn, real sockets), signs in as ``cli:lead`` and times, per view, from sending the request to the
first byte of the body: the default Pending page (most urgent first), a filtered one, a deep page, and
one proposal's page (which reads the current value live from Odoo).

    .venv/bin/python bench/inbox_ttfb.py [--proposals 10000] [--requests 20]

No model is needed (nothing is classified).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from signoff.config import Settings  # noqa: E402
from signoff.domain import Proposal, proposal_id, utcnow  # noqa: E402
from signoff.guardrails.store import SqliteApprovalStore  # noqa: E402
from signoff.sandbox.odoo import OdooStandIn  # noqa: E402
from signoff.sandbox.seed import seed  # noqa: E402
from signoff.server.app import create_app  # noqa: E402
from signoff.server.inbox_auth import Signer, UserStore  # noqa: E402

SECRET = "bench-inbox-secret-0123456789"
KINDS = [  # (thread prefix, action, target model, args, group)
    ("ticket", "ticket.set_category", "helpdesk.ticket", {"category": "get_refund"}, "support-leads"),
    ("ticket", "ticket.set_team", "helpdesk.ticket", {"team": "Billing"}, "support-leads"),
    ("ticket", "ticket.set_priority", "helpdesk.ticket", {"priority": "2"}, "support-leads"),
    ("account", "account.csm_followup", "res.partner",
     {"reason": "usage down", "deadline": "2030-01-01", "details": "drivers"}, "cs-leads"),
    ("account", "account.retention_offer", "sale.order",
     {"amount": 900.0, "currency": "EUR", "reason": "renewal", "deadline": "2030-01-01"}, "finance"),
    ("contract", "contract.legal_review", "sale.order",
     {"reason": "liability cap", "deadline": "2030-01-01", "details": "spans"}, "legal"),
]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def fill(path: Path, n: int, ticket_ids: list[int]) -> None:
    SqliteApprovalStore(path)  # the schema
    rng, now, rows = random.Random(7), utcnow(), []
    for i in range(n):
        prefix, action, model, args, group = KINDS[i % len(KINDS)]
        target = ticket_ids[i % len(ticket_ids)] if model == "helpdesk.ticket" else 1 + i % 5
        thread = f"{prefix}:signoff:{i}"
        created = now - timedelta(minutes=rng.randint(0, 7 * 24 * 60))
        p = Proposal(id=proposal_id(thread, action, model, target, args), thread_id=thread, action=action,
                     target_model=model, target_id=target, args=args, current={}, rationale="bench",
                     confidence=round(rng.random(), 3), evidence=[{"text": "similar ticket", "label": "x",
                                                                  "similarity": 0.8}] * 3,
                     approver_group=group, created_at=created,
                     expires_at=created + timedelta(hours=rng.choice([24, 48, 120])), policy_version="v1")
        rows.append((p.id, p.thread_id, p.state, p.created_at.isoformat(), p.model_dump_json()))
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO proposals (id, thread_id, state, created_at, data) VALUES (?, ?, ?, ?, ?)",
                         rows)
    conn.close()


def ttfb(client: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    with client.stream("GET", url) as response:
        chunks = response.iter_raw()
        next(chunks, b"")
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, (url, response.status_code)
        for _ in chunks:  # drain the rest
            pass
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per view (after 2 warm-ups)")
    args = parser.parse_args()

    from conftest import LiveServer

    base = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="signoff-inbox-bench-"))
    seed(tmp / "odoo.sqlite", base.public_data_dir, n_history=10, n_new=5, n_contracts=0)
    odoo = OdooStandIn(tmp / "odoo.sqlite", port=0, dbname="signoff").start()
    settings = base.model_copy(update={
        "data_dir": tmp, "odoo_url": odoo.url, "odoo_db": "signoff", "sweep_seconds": 0.0,
        "inbox_secret": SecretStr(SECRET), "inbox_trusted_header": None, "policy_path": None,
    })
    started = time.perf_counter()
    ticket_ids = [1, 2, 3, 4, 5]
    fill(settings.state_db_path, args.proposals, ticket_ids)
    print(f"inserted {args.proposals} pending proposals in {time.perf_counter() - started:.1f}s")
    UserStore(settings.state_db_path).add("lead", "cli:lead", "bench-password")
    server = LiveServer(create_app(settings)).start()
    cookie, _ = Signer(SECRET).issue("lead", 3600)
    client = httpx.Client(base_url=server.url, cookies={"signoff_inbox": cookie}, timeout=60.0, trust_env=False)
    any_id = next(iter(SqliteApprovalStore(settings.state_db_path).find(states=("pending",)))).id
    views = {
        "pending (default: most urgent first)": "/inbox/pending",
        "pending ?action=ticket.set_team&age=1d": "/inbox/pending?action=ticket.set_team&age=1d",
        "pending ?sort=newest&page=60": "/inbox/pending?sort=newest&page=60",
        "one proposal (live Odoo read)": f"/inbox/p/{any_id}",
    }
    try:
        print(f"{'view':45s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}   (n={args.requests}, "
              f"{args.proposals} pending; cli:lead sees support-leads + cs-leads)")
        for name, url in views.items():
            for _ in range(2):
                ttfb(client, url)
            times = [ttfb(client, url) * 1000 for _ in range(args.requests)]
            print(f"{name:45s} {statistics.median(times):8.1f} {pct(times, 95):8.1f} {max(times):8.1f}")
        body = client.get("/inbox/pending").text
        print(f"pending page: {len(body) / 1024:.0f} KiB, {body.count('<tr') - 1} rows shown")
    finally:
        client.close()
        server.stop()
        odoo.stop()


if __name__ == "__main__":
    main()
