"""Slack ack latency under load, and click-to-write latency, on loopback.

Starts the Odoo stand-in (seeded), the Slack stand-in and the Signoff server (uvicorn, real sockets),
fires N Odoo webhooks so N triage runs are in flight, and meanwhile measures how long the server takes
to answer signed Slack requests (a click on an approval message: Bolt verifies, acks, and the
decision runs after the ack). Then, with the runs settled, it measures click -> Odoo write: from the
click on the last pending message of a run to the write showing in the Odoo stand-in's call log.

    .venv/bin/python bench/slack_ack_latency.py [--runs 50] [--clicks 200]

Needs a trained model (``signoff train`` or ``signoff demo`` once), found via SIGNOFF_MODEL_DIR or
``.signoff/models``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import yaml  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from signoff.config import Settings  # noqa: E402
from signoff.guardrails.policy import DEFAULT_POLICY_PATH  # noqa: E402
from signoff.sandbox.odoo import OdooStandIn  # noqa: E402
from signoff.sandbox.seed import seed  # noqa: E402
from signoff.sandbox.slack import SlackStandIn  # noqa: E402
from signoff.server.app import create_app  # noqa: E402


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="triage runs in flight during the ack measurement")
    parser.add_argument("--clicks", type=int, default=200, help="signed Slack requests to time under load")
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()

    from conftest import LEAD, LiveServer  # the tests' uvicorn-in-a-thread helper

    base = Settings()
    model_dir = args.model_dir or base.models_path
    if not (model_dir / "manifest.json").exists() and not any(model_dir.glob("*")):
        sys.exit(f"no trained model in {model_dir}: run `signoff train` (or `signoff demo`) first")
    tmp = Path(tempfile.mkdtemp(prefix="signoff-bench-"))
    seed(tmp / "odoo.sqlite", base.public_data_dir, n_history=40, n_new=args.runs + 10, n_contracts=0)
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    for name, rule in policy["actions"].items():
        rule["channel"] = "slack"
        if name in ("ticket.set_category", "ticket.set_team"):
            rule["min_confidence"] = 0.0
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))

    with OdooStandIn(tmp / "odoo.sqlite", port=0) as odoo, SlackStandIn() as slack:
        settings = base.model_copy(update={
            "data_dir": tmp, "odoo_url": odoo.url, "model_dir": model_dir, "policy_path": tmp / "policy.yaml",
            "webhook_secret": SecretStr("bench"), "api_token": SecretStr("bench"),
            "slack_bot_token": SecretStr(slack.token), "slack_signing_secret": SecretStr(slack.signing_secret),
            "slack_api_base_url": slack.api_url, "sweep_seconds": 0.0, "executor_stale_seconds": 0.0,
        })
        app = create_app(settings)
        server = LiveServer(app).start()
        slack.app_url = server.url + "/slack/events"
        http = httpx.Client(timeout=60, trust_env=False)
        svc = app.state.services
        try:
            # Warm up: the model loads on the first triage.
            from signoff.tools.tickets import untriaged_ticket_ids

            ids = untriaged_ticket_ids(svc.rt.reader)
            warm = ids.pop()
            svc.triage_now(warm, source="bench")
            target = next(m for m in slack.messages_in("approvals"))

            hook = {"X-Signoff-Webhook-Secret": "bench"}
            started = time.perf_counter()
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda tid: http.post(server.url + "/webhooks/odoo", headers=hook,
                                                    json={"_model": "helpdesk.ticket", "_id": tid}),
                              ids[: args.runs]))
            in_flight = sum(svc.in_flight(f"ticket:{settings.odoo_db}:{t}") for t in ids[: args.runs])
            loads: list[int] = []
            snapshot = slack.snapshot("approvals", target["ts"])
            acks: list[float] = []
            for _ in range(args.clicks):
                # An outsider's click: verified, acked, refused after the ack (changes nothing).
                loads.append(sum(svc.in_flight(f"ticket:{settings.odoo_db}:{t}") for t in ids[: args.runs]))
                acks.append(slack.click("approvals", target["ts"], "approve", "U0MALLORY", message=snapshot).seconds)
            busy = sum(svc.in_flight(f"ticket:{settings.odoo_db}:{t}") for t in ids[: args.runs])
            while any(svc.in_flight(f"ticket:{settings.odoo_db}:{t}") for t in ids[: args.runs]):
                time.sleep(0.05)
            triage_seconds = time.perf_counter() - started

            # Click -> write: approve every message of some runs; time the last click of each run to its write.
            c2w: list[float] = []
            threads = sorted({p.thread_id for p in svc.rt.store.find(states=("pending",))})[:20]
            for thread in threads:
                proposals = svc.rt.store.find(thread_id=thread, states=("pending",))
                messages = [svc.slack.messages.get(p.id) for p in proposals]
                for posted in messages[:-1]:
                    slack.click("approvals", posted.ts, "approve", LEAD)
                wait = time.monotonic() + 10
                while any(svc.rt.store.get(p.id).state == "pending" for p in proposals[:-1]):
                    if time.monotonic() > wait:
                        raise RuntimeError("approvals did not land")
                    time.sleep(0.005)
                before = len(odoo.calls())
                done = threading.Event()
                t0 = time.perf_counter()
                slack.click("approvals", messages[-1].ts, "approve", LEAD)
                while not done.is_set():
                    writes = [c for c in odoo.calls(since=before) if c["method"] == "write"]
                    if len(writes) >= len(proposals):
                        done.set()
                    elif time.perf_counter() - t0 > 10:
                        raise RuntimeError("write did not land")
                    else:
                        time.sleep(0.002)
                c2w.append(time.perf_counter() - t0)
        finally:
            http.close()
            server.stop()

    print(f"triage runs: {args.runs} webhooks -> {in_flight} in flight at the start of the measurement, "
          f"{busy} still in flight at its end; all settled in {triage_seconds:.1f}s")
    print(f"slack ack latency under load ({len(acks)} signed clicks): p50 {statistics.median(acks) * 1000:.1f} ms, "
          f"p99 {pct(acks, 99) * 1000:.1f} ms, max {max(acks) * 1000:.1f} ms, "
          f"mean runs in flight {statistics.mean(loads):.1f} "
          f"({sum(a > 3 for a in acks)} over Slack's 3 s)")
    print(f"click -> Odoo write ({len(c2w)} runs, last approval of each, {len(proposals)} writes per run, loopback): "
          f"p50 {statistics.median(c2w) * 1000:.1f} ms, p99 {pct(c2w, 99) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
