"""Orchestration over real sockets both ways: runs started from outside with scoped API keys, events out
to a receiving HTTP server (stdlib, in a thread) that checks every signature, inbound signed webhooks,
and the n8n example workflows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import Live, both_dbs, new_ticket_ids, wait_for
from pydantic import SecretStr

from signoff.config import Settings
from signoff.guardrails.audit import SqliteAuditLog
from signoff.integrations.webhooks_in import json_path
from signoff.integrations.webhooks_out import Deliverer, Outbox, RetryPolicy, sign
from signoff.server.apikeys import ApiKeyStore

ROOT = Path(__file__).resolve().parent.parent
SUB_SECRET = "subscription-secret-for-tests"
INBOUND_SECRET = "crm-inbound-secret-for-tests"


class Receiver:
    """A webhook consumer on 127.0.0.1: verifies the signature itself; fails the first ``fail_first`` calls."""

    def __init__(self, secret: str, *, fail_first: int = 0, port: int = 0) -> None:
        self.secret, self.fail_first = secret, fail_first
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                ts, given = self.headers.get("X-Signoff-Timestamp", ""), self.headers.get("X-Signoff-Signature", "")
                expected = "sha256=" + hmac.new(outer.secret.encode(), ts.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                good = hmac.compare_digest(expected, given) and abs(time.time() - float(ts or 0)) < 300
                with outer.lock:
                    failing = good and outer.fail_first > 0
                    outer.fail_first -= 1 if failing else 0
                    status = 401 if not good else 500 if failing else 200
                    outer.calls.append({"status": status, "good": good, "event_id": self.headers["X-Signoff-Event-Id"],
                                        "body": json.loads(body), "raw": body})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c["body"] for c in self.calls if c["status"] == 200]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs: Any) -> Receiver:
        made.append(Receiver(SUB_SECRET, **kwargs))
        return made[-1]

    yield make
    for r in made:
        r.stop()


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The shared settings, with a fast event worker and an inbound ``crm`` source."""
    mapping = tmp_path / "inbound.yaml"
    mapping.write_text('crm:\n  agent: triage\n  input: {ticket_id: "$.ticket.id"}\n  when: {"$.type": "escalated"}\n')
    return settings.model_copy(update={
        "outbound_poll_seconds": 0.05, "outbound_backoff_seconds": 0.05, "outbound_backoff_max_seconds": 0.2,
        "inbound_mapping_path": mapping, "inbound_secrets": {"crm": SecretStr(INBOUND_SECRET)},
    })


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@both_dbs
def test_runs_keys_scopes_events_signed_retried_in_order(start_server: Callable[..., Live],
                                                        receivers: Callable[..., Receiver]) -> None:
    live = start_server(channel="inbox")
    keys = ApiKeyStore(live.svc.rt.statedb)
    _, starter = keys.create("n8n", ["start", "read"])
    _, decider = keys.create("approver-bot", ["decide", "read"], actor="cli:lead")
    revoked_info, revoked = keys.create("old", ["start", "read", "decide"])

    consumer = receivers(fail_first=2)
    # Subscriptions need decide (or admin): a start/read key may not add one.
    sub_body = {"url": consumer.url, "secret": SUB_SECRET,
                "events": ["proposal.created", "proposal.decided", "execution.succeeded"]}
    assert live.http.post(live.url + "/subscriptions", json=sub_body, headers=bearer(starter)).status_code == 403
    for metadata in ("http://169.254.169.254/latest/meta-data", "http://[::ffff:169.254.169.254]/",
                     "http://0.0.0.0:9/"):  # never a webhook target (cloud metadata, not a host)
        refused = live.http.post(live.url + "/subscriptions", json={**sub_body, "url": metadata},
                                 headers=bearer(decider))
        assert refused.status_code == 422 and "may not point at" in refused.text, refused.text
    made = live.http.post(live.url + "/subscriptions", json=sub_body, headers=bearer(decider))
    assert made.status_code == 201 and made.json()["secret"] == SUB_SECRET
    listed = live.http.get(live.url + "/subscriptions", headers=bearer(decider)).json()
    assert [s["id"] for s in listed] == [made.json()["id"]] and "secret" not in listed[0]

    # Start a run with an idempotency key: the repeat replays the first answer, a changed body is refused.
    tid = new_ticket_ids(live)[0]
    run = {"agent": "triage", "input": {"ticket_id": tid}, "idempotency_key": "n8n-exec-1"}
    first = live.http.post(live.url + "/runs", json=run, headers=bearer(starter))
    assert first.status_code == 202 and first.json()["status"] == "accepted", first.text
    thread = first.json()["thread_id"]
    again = live.http.post(live.url + "/runs", json=run, headers=bearer(starter))
    assert again.status_code == 202 and again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = live.http.post(live.url + "/runs", json={**run, "input": {"ticket_id": tid + 1}}, headers=bearer(starter))
    assert other.status_code == 422 and other.json()["error"] == "idempotency_conflict"
    two_keys = live.http.post(live.url + "/runs", json=run, headers={**bearer(starter), "Idempotency-Key": "n8n-2"})
    assert two_keys.status_code == 422 and "disagree" in two_keys.json()["detail"], two_keys.text
    assert live.http.post(live.url + "/runs", json={"agent": "triage", "input": {"partner_id": 3}},
                          headers=bearer(starter)).status_code == 422
    assert live.http.post(live.url + "/runs", json=run, headers=bearer(decider)).status_code == 403  # no start

    def settled() -> dict[str, Any] | None:
        view = live.http.get(f"{live.url}/runs/{thread}", headers=bearer(starter)).json()
        return view if view["state"] == "paused" else None

    view = wait_for(settled, 30, "paused run")
    assert isinstance(view, dict) and view["agent"] == "triage" and view["outcome"]["category"]
    proposals = live.http.get(f"{live.url}/runs/{thread}/proposals", headers=bearer(starter)).json()["proposals"]
    assert proposals and [p["id"] for p in proposals] == [p["id"] for p in view["proposals"]]
    assert live.http.get(live.url + "/runs/ticket:nope:1", headers=bearer(starter)).status_code == 404

    # Revoked keys are refused; a key without decide cannot decide; a bound key decides only as its actor.
    keys.revoke(revoked_info.id)
    gone = live.http.get(f"{live.url}/runs/{thread}", headers=bearer(revoked))
    assert gone.status_code == 403 and "revoked" in gone.json()["detail"]
    decision = f"{live.url}/api/proposals/{proposals[0]['id']}/decision"
    no_scope = live.http.post(decision, json={"verdict": "approve", "actor": "cli:lead"}, headers=bearer(starter))
    assert no_scope.status_code == 403 and "decide" in no_scope.json()["detail"]
    posing = live.http.post(decision, json={"verdict": "approve", "actor": "cli:alice"}, headers=bearer(decider))
    assert posing.status_code == 403 and "cli:lead" in posing.json()["detail"]
    assert live.http.get(live.url + "/api/proposals", headers=bearer(starter)).status_code == 200  # read scope
    assert live.http.post(live.url + "/api/sweep", headers=bearer(decider)).status_code == 403  # admin only
    assert {p.state for p in live.svc.rt.store.find(thread_id=thread)} == {"pending"}
    for p in proposals:
        done = live.http.post(f"{live.url}/api/proposals/{p['id']}/decision",
                              json={"verdict": "approve", "actor": "cli:lead"}, headers=bearer(decider))
        assert done.status_code == 200, done.text
    assert done.json()["proposal"]["state"] == "executed"

    n = len(proposals)
    wait_for(lambda: len(consumer.delivered()) == 3 * n, 20, "all events delivered")
    time.sleep(0.2)
    assert all(c["good"] for c in consumer.calls), "every delivery is signed with the subscription's secret"
    got = consumer.delivered()
    assert len({e["id"] for e in got}) == len(got) == 3 * n, "each event once"
    assert [e["sequence"] for e in got] == sorted(e["sequence"] for e in got), "in audit order for one run"
    for p in proposals:
        mine = [e["type"] for e in got if e["subject"] == p["id"]]
        assert mine == ["proposal.created", "proposal.decided", "execution.succeeded"]
    decided = next(e for e in got if e["type"] == "proposal.decided")
    assert decided["data"]["decision"]["verdict"] == "approved" and decided["data"]["decision"]["by"] == "cli:lead"
    assert decided["thread_id"] == thread and decided["data"]["proposal"]["target"]["id"] == tid
    ticket = live.svc.rt.reader.read("helpdesk.ticket", [tid], ["name", "description"])[0]
    for call in consumer.calls:
        assert ticket["name"] not in call["raw"].decode() and "description" not in call["body"]["data"]

    # The first event failed twice, then succeeded: recorded as delivered after 3 attempts.
    first_event = got[0]["id"]
    assert [c["status"] for c in consumer.calls if c["event_id"] == first_event] == [500, 500, 200]
    rows = live.http.get(f"{live.url}/subscriptions/{made.json()['id']}/deliveries", headers=bearer(decider)).json()
    by_event = {r["event_id"]: r for r in rows}
    assert by_event[first_event]["status"] == "delivered" and by_event[first_event]["attempts"] == 3
    assert by_event[first_event]["last_status"] == 200
    assert all(r["status"] == "delivered" for r in rows) and len(rows) == 3 * n

    # Replay by hand: the same event id again (consumers deduplicate on it).
    replayed = live.http.post(f"{live.url}/events/{first_event}/replay", headers=bearer(decider))
    assert replayed.status_code == 200
    wait_for(lambda: [e["id"] for e in consumer.delivered()].count(first_event) == 2, 10, "replay")


def test_outbox_orders_per_subject_survives_restart_and_loses_nothing(tmp_path: Path,
                                                                      receivers: Callable[..., Receiver]) -> None:
    db = tmp_path / "state.sqlite"
    audit = SqliteAuditLog(db)
    audit.append("run.needs_human", "ticket:x:0", "agent:triage", {"reasons": ["old"]}, thread_id="ticket:x:0")
    down = receivers()
    port = down.server.server_address[1]
    down.stop()  # the consumer is down
    outbox = Outbox(db)
    sub, _ = outbox.subscribe(down.url, ["run.needs_human", "proposal.created"], secret=SUB_SECRET)
    retry = RetryPolicy(backoff=0.0, backoff_max=0.0, give_up=3600, timeout=2.0)
    for thread in ("ticket:x:1", "ticket:x:2"):
        audit.append("proposal.created", f"p_{thread[-1]}", "agent:triage", {}, thread_id=thread)
        audit.append("run.needs_human", thread, "agent:triage",
                     {"reasons": ["possible prompt injection in the ticket: ignore all previous instructions"]},
                     thread_id=thread)
    sender = Deliverer(outbox, retry, workers=2)
    assert sender.run_once() == 2, "one head per subject; the event before the subscription is not sent"
    assert {d.status for d in outbox.deliveries()} == {"pending"}
    assert all(d.attempts == 1 and "ConnectError" in (d.last_error or "") for d in outbox.deliveries() if d.attempts)
    sender.stop()

    # A restart: new objects over the same file; the consumer is back on the same address.
    consumer = receivers(port=port)
    sender = Deliverer(Outbox(db), retry, workers=2)
    for _ in range(4):
        sender.run_once()
    sender.stop()
    got = consumer.delivered()
    assert len(got) == 4 and all(c["good"] for c in consumer.calls)
    for thread in ("ticket:x:1", "ticket:x:2"):
        assert [e["type"] for e in got if e["thread_id"] == thread] == ["proposal.created", "run.needs_human"]
    needs = next(e for e in got if e["type"] == "run.needs_human")
    assert needs["data"]["run"]["reasons"] == ["possible prompt injection in the ticket"], "no ticket text"
    assert {d.status for d in Outbox(db).deliveries(subscription_id=sub.id)} == {"delivered"}

    # Gave up after the bounded time: the next event for that subject is not held back for ever.
    gone = Outbox(db)
    gone.unsubscribe(sub.id)
    short, _ = gone.subscribe("http://127.0.0.1:9/nothing", ["run.needs_human"], secret=SUB_SECRET)
    audit.append("run.needs_human", "ticket:x:3", "agent:triage", {}, thread_id="ticket:x:3")
    audit.append("run.needs_human", "ticket:x:3", "agent:triage", {}, thread_id="ticket:x:3")
    quick = Deliverer(gone, RetryPolicy(backoff=0.0, backoff_max=0.0, give_up=0.0, timeout=1.0))
    quick.run_once()
    quick.run_once()
    quick.stop()
    assert [d.status for d in gone.deliveries(subscription_id=short.id)] == ["failed", "failed"]


def test_inbound_webhook_signature_mapping_and_nothing_runs_on_a_bad_one(start_server: Callable[..., Live]) -> None:
    live = start_server(channel="inbox")
    tid = new_ticket_ids(live)[0]
    url = live.url + "/webhooks/in/crm"
    body = json.dumps({"type": "escalated", "ticket": {"id": str(tid)}}).encode()

    def post(raw: bytes, *, secret: str = INBOUND_SECRET, ts: float | None = None, **headers: str) -> Any:
        stamp = str(int(ts if ts is not None else time.time()))
        return live.http.post(url, content=raw, headers={"X-Signoff-Timestamp": stamp, "Content-Type":
                                                         "application/json",
                                                         "X-Signoff-Signature": sign(secret, stamp, raw), **headers})

    assert post(body, secret="not-the-secret-at-all").status_code == 401
    assert post(body, ts=time.time() - 3600).status_code == 401, "a stale timestamp is a replay"
    assert live.http.post(url, content=body).status_code == 401
    assert live.svc.rt.store.find() == []
    assert "ticket.loaded" not in [e.kind for e in live.svc.rt.audit.trail()]
    accepted = post(body)
    assert accepted.status_code == 202 and accepted.json()["status"] == "accepted", accepted.text
    ignored = post(json.dumps({"type": "note", "ticket": {"id": tid}}).encode())
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    bad = post(json.dumps({"type": "escalated", "ticket": {}}).encode())
    assert bad.status_code == 422 and "ticket" in bad.json()["detail"]
    dup = post(body, **{"Idempotency-Key": "crm-1"})
    assert dup.status_code == 200 and dup.json()["status"] == "duplicate"
    assert dup.json()["thread_id"] == accepted.json()["thread_id"] == f"ticket:{live.settings.odoo_db}:{tid}"
    assert live.http.post(live.url + "/webhooks/in/billing", content=body).status_code == 404
    run = live.api("GET", f"/runs/{dup.json()['thread_id']}")
    assert run.status_code == 200 and run.json()["agent"] == "triage"  # the admin token reads everything


def test_openapi_documents_the_orchestration_api(start_server: Callable[..., Live]) -> None:
    live = start_server()
    schema = live.http.get(live.url + "/openapi.json").json()
    for path in ("/runs", "/runs/{thread_id}", "/runs/{thread_id}/proposals", "/subscriptions",
                 "/webhooks/in/{source}", "/events/{event_id}/replay"):
        assert path in schema["paths"], path
    post = schema["paths"]["/runs"]["post"]
    assert post["tags"] == ["runs"] and "202" in post["responses"] and post["description"]
    assert "RunView" in schema["components"]["schemas"] and "apiKey" in schema["components"]["securitySchemes"]


def test_cli_keys_and_subscriptions(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({"SIGNOFF_DATA_DIR": str(tmp_path), "COLUMNS": "200", "SIGNOFF_INBOUND_SECRETS": "{}"})
    script = (
        "import sys; from typer.testing import CliRunner; from signoff.cli import app\n"
        "r = CliRunner()\n"
        "for args in [a.split('|') for a in sys.argv[1:]]:\n"
        "    out = r.invoke(app, args)\n"
        "    print('>>>', out.exit_code); print(out.output)\n"
    )
    calls = ["apikeys|create|n8n|--scope|start|--scope|read", "apikeys|list",
             "subscriptions|add|https://n8n.example.com/webhook/x|--event|proposal.decided|--scope|ids",
             "subscriptions|list", "subscriptions|add|ftp://x|--event|proposal.decided",
             "subscriptions|replay|evt_nothing", "apikeys|revoke|n8n", "apikeys|create|x|--scope|everything"]
    out = subprocess.run([sys.executable, "-c", script, *calls], env=env, capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    parts = out.stdout.split(">>> ")[1:]
    codes = [int(p.split("\n", 1)[0]) for p in parts]
    assert codes == [0, 0, 0, 0, 2, 1, 0, 2], out.stdout + out.stderr
    key = next(line for line in parts[0].splitlines() if line.startswith("so_"))
    keys = ApiKeyStore(tmp_path / "signoff.sqlite")
    for stored in tmp_path.glob("signoff.sqlite*"):
        assert key.encode() not in stored.read_bytes(), "stored hashed"
    assert keys.authenticate(key) == "revoked"
    assert "n8n" in parts[1] and "read, start" in parts[1]
    assert "proposal.decided" in parts[3] and "ids" in parts[3] and "whsec_" not in parts[3]


def test_n8n_examples_parse_and_use_the_expected_nodes() -> None:
    folder = ROOT / "examples" / "n8n"
    decided = json.loads((folder / "signoff-proposal-decided.json").read_text())
    start = json.loads((folder / "signoff-start-triage.json").read_text())
    for flow in (decided, start):
        assert flow["name"] and isinstance(flow["nodes"], list) and isinstance(flow["connections"], dict)
        names = {n["name"] for n in flow["nodes"]}
        for source, outs in flow["connections"].items():
            assert source in names
            assert all(t["node"] in names for branch in outs["main"] for t in branch)
    types = {n["type"] for n in decided["nodes"]}
    assert {"n8n-nodes-base.webhook", "n8n-nodes-base.code", "n8n-nodes-base.httpRequest"} <= types
    code = next(n for n in decided["nodes"] if n["type"] == "n8n-nodes-base.code")["parameters"]["jsCode"]
    assert "createHmac('sha256'" in code and "x-signoff-signature" in code and "x-signoff-timestamp" in code
    request = next(n for n in start["nodes"] if n["type"] == "n8n-nodes-base.httpRequest")["parameters"]
    assert request["url"].endswith("/runs") and request["method"] == "POST"
    assert "triage" in json.dumps(request) and "Bearer" in json.dumps(request)


def test_json_path_subset() -> None:
    doc = {"customer": {"odoo_id": 7, "tags": [{"id": 3}], "odd key": 1}}
    assert json_path(doc, "$.customer.odoo_id") == 7
    assert json_path(doc, "$.customer.tags[0].id") == 3
    assert json_path(doc, "$.customer['odd key']") == 1
    with pytest.raises(Exception, match="no field"):
        json_path(doc, "$.customer.missing")


def test_webhook_destinations_refused_on_delivery_too() -> None:
    import ipaddress

    from signoff.errors import DataError
    from signoff.integrations.webhooks_out import check_destination, refused_address

    assert refused_address(ipaddress.ip_address("169.254.169.254"))
    assert refused_address(ipaddress.ip_address("fe80::1"))
    assert refused_address(ipaddress.ip_address("224.0.0.1"))
    for ok in ("127.0.0.1", "10.1.2.3", "192.168.0.10", "::1"):
        assert refused_address(ipaddress.ip_address(ok)) is None, ok
    with pytest.raises(DataError, match="169.254.169.254"):
        check_destination("http://169.254.169.254/latest/meta-data")
    check_destination("http://localhost:9/")  # loopback: allowed (n8n beside Signoff)
