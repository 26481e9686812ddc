"""The server over real sockets: Odoo webhook, approvals REST API, health, metrics, the sweep.

Odoo writes are counted in the Odoo stand-in's call log (what Odoo received over the wire).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from conftest import WEBHOOK_SECRET, Live, both_dbs, new_ticket_ids, wait_for
from fastapi.testclient import TestClient

from signoff.config import Settings
from signoff.sandbox.odoo import OdooStandIn
from signoff.server.app import create_app


def ticket_writes(standin: OdooStandIn) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["method"] == "write" and c["model"] == "helpdesk.ticket" and c["ok"]]


def kinds(live: Live, subject: str | None = None) -> list[str]:
    return [e.kind for e in live.svc.rt.audit.trail(subject)]


@both_dbs
def test_health_ready_and_metrics(start_server: Callable[..., Live]) -> None:
    live = start_server()
    assert live.http.get(live.url + "/healthz").json() == {"status": "ok"}
    ready = live.http.get(live.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"odoo": "ok", "state_db": "ok"}
    metrics = live.http.get(live.url + "/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    for name in ("signoff_runs_total", "signoff_decision_latency_seconds_bucket", "signoff_executor_failures_total"):
        assert name in metrics.text


def test_the_server_starts_while_odoo_is_down_and_is_ready_once_odoo_is_up(
        start_server: Callable[..., Live], odoo_standin: OdooStandIn) -> None:
    """In a compose file Odoo often starts after Signoff: serve starts anyway, says so on /readyz, takes
    webhooks, and reads Odoo as soon as it answers (no restart)."""
    port, db_path = odoo_standin.port, odoo_standin.db_path
    odoo_standin.stop()
    live = start_server()
    assert live.http.get(live.url + "/healthz").status_code == 200
    ready = live.http.get(live.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["odoo"].startswith("unreachable"), ready.text
    back = OdooStandIn(db_path, port=port, dbname=live.settings.odoo_db).start()
    try:
        wait_for(lambda: live.http.get(live.url + "/readyz").status_code == 200, what="ready once Odoo is up")
        tid = new_ticket_ids(live)[0]
        assert live.webhook(tid).status_code == 202
        live.wait_run(f"ticket:signoff:{tid}")
        assert live.svc.rt.store.find(thread_id=f"ticket:signoff:{tid}")
    finally:
        back.stop()


def test_webhook_authentication(start_server: Callable[..., Live], settings: Settings) -> None:
    live = start_server()
    body = {"_model": "helpdesk.ticket", "_id": 1}
    url = live.url + "/webhooks/odoo"
    assert live.http.post(url, json=body).status_code == 401
    wrong = live.http.post(url, json=body, headers={"X-Signoff-Webhook-Secret": "guess"})
    assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
    assert live.http.post(url + "?token=guess", json=body).status_code == 403
    assert live.svc.rt.store.find() == [] and "ticket.loaded" not in kinds(live)
    # No secret configured: the endpoint refuses, and says which setting enables it.
    bare = create_app(settings.model_copy(update={"webhook_secret": None}))
    refused = TestClient(bare).post("/webhooks/odoo", json=body, headers={"X-Signoff-Webhook-Secret": "x"})
    assert refused.status_code == 503 and "SIGNOFF_WEBHOOK_SECRET" in refused.json()["detail"]


def test_malformed_webhook_is_422_audited_and_runs_nothing(start_server: Callable[..., Live]) -> None:
    live = start_server()
    headers = {"X-Signoff-Webhook-Secret": WEBHOOK_SECRET}
    url = live.url + "/webhooks/odoo"
    for payload in (b"not json", b'{"_model": "helpdesk.ticket"}', b'{"_model": "helpdesk.ticket", "_id": "x"}',
                    b'{"_model": "res.partner", "_id": 3}', b"[1, 2]"):
        answer = live.http.post(url, content=payload, headers={**headers, "Content-Type": "application/json"})
        assert answer.status_code == 422, payload
        assert answer.json()["error"] == "malformed_payload"
    assert "_id" in live.http.post(url, json={"_model": "helpdesk.ticket"}, headers=headers).json()["detail"]
    assert kinds(live).count("webhook.rejected") == 6
    assert live.svc.rt.store.find() == [] and "ticket.loaded" not in kinds(live)


def test_webhook_triages_in_background_once(start_server: Callable[..., Live], odoo_standin: OdooStandIn) -> None:
    live = start_server()
    tid = new_ticket_ids(live)[0]
    started = time.perf_counter()
    first = live.webhook(tid, name="whatever", partner_id=[7, "Acme"])
    assert first.status_code == 202 and first.json()["status"] == "accepted"
    assert time.perf_counter() - started < 1.0, "Odoo's webhook gives up after 1 s"
    thread = first.json()["thread_id"]
    # Odoo fires on every save: the events that follow start nothing.
    again = [live.webhook(tid) for _ in range(3)]
    assert {a.json()["status"] for a in again} == {"duplicate"}
    run = live.wait_run(thread)
    assert run["status"] == "paused" and run["proposals"]
    assert kinds(live, thread).count("ticket.loaded") == 1
    assert live.webhook(tid).json()["status"] == "duplicate"
    # Each slack-channel proposal was posted once.
    wait_for(lambda: len(live.slack.messages_in("approvals")) == len(run["proposals"]), what="posts")
    assert ticket_writes(odoo_standin) == []


def test_webhook_for_a_record_not_yet_visible_retries_then_audits(start_server: Callable[..., Live]) -> None:
    live = start_server()
    live.svc.record_retry = (3, 0.05)
    answer = live.webhook(999_999)
    assert answer.status_code == 202
    thread = answer.json()["thread_id"]
    wait_for(lambda: "webhook.record_missing" in kinds(live, thread), what="record_missing")
    assert live.svc.rt.store.find() == []
    view = live.api("GET", f"/runs/{thread}").json()
    assert (view["state"], view["error"]) == ("failed", "webhook.record_missing"), view
    assert live.api("GET", f"/api/runs/{thread}").json()["status"] == "failed", "both run views agree"
    assert live.api("GET", "/runs/ticket:signoff:424242/proposals").status_code == 404, "no such run"


def test_a_run_that_failed_once_then_went_further_shows_no_stale_error(start_server: Callable[..., Live],
                                                                      odoo_standin: OdooStandIn) -> None:
    live = start_server(channel="inbox")
    live.svc.record_retry = (1, 0.05)
    tid = new_ticket_ids(live)[0]
    odoo_standin.set_fault(down=True, only="read")  # Odoo drops the reads: the first attempt fails
    try:
        thread = live.webhook(tid).json()["thread_id"]
        wait_for(lambda: live.api("GET", f"/runs/{thread}").status_code == 200
                 and live.api("GET", f"/runs/{thread}").json()["state"] == "failed", what="first attempt failed")
    finally:
        odoo_standin.set_fault(down=False, only=None)
    assert live.api("POST", "/api/triage", json={"ticket_id": tid}).status_code == 202
    live.wait_run(thread)
    view = live.api("GET", f"/runs/{thread}").json()
    assert view["state"] == "paused" and view["error"] is None and view["proposals"], view


@both_dbs
def test_rest_api_decisions_and_error_mapping(start_server: Callable[..., Live],
                                              odoo_standin: OdooStandIn) -> None:
    live = start_server(channel="inbox")
    assert live.http.get(live.url + "/api/proposals").status_code == 401
    wrong = live.http.get(live.url + "/api/proposals", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    tid = new_ticket_ids(live)[0]
    thread = live.api("POST", "/api/triage", json={"ticket_id": tid}).json()["thread_id"]
    live.wait_run(thread)
    pending = live.api("GET", "/api/proposals", params={"thread": thread}).json()["proposals"]
    assert pending and all(p["state"] == "pending" for p in pending)
    one = live.api("GET", f"/api/proposals/{pending[0]['id'][:10]}").json()
    assert one["proposal"]["id"] == pending[0]["id"] and "proposal.created" in [e["kind"] for e in one["audit"]]

    assert live.api("GET", "/api/proposals/p_nothing").status_code == 404
    assert live.api("POST", "/api/proposals/p_nothing/decision",
                    json={"verdict": "approve", "actor": "cli:lead"}).status_code == 404
    refused = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                       json={"verdict": "approve", "actor": "cli:mallory"})
    assert refused.status_code == 403 and "not in approver group" in refused.json()["detail"]
    as_slack = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                        json={"verdict": "approve", "actor": "slack:U0LEAD"})  # a Slack user, claimed over REST
    assert as_slack.status_code == 422 and "decides in Slack" in as_slack.json()["detail"], as_slack.text
    approve_with_args = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                                 json={"verdict": "approve", "actor": "cli:lead", "args": {"category": "x"}})
    assert approve_with_args.status_code == 422 and "for an edit" in approve_with_args.json()["detail"]
    assert "decision.refused" in kinds(live, pending[0]["id"])
    no_reason = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                         json={"verdict": "reject", "actor": "cli:lead"})
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    no_actor = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision", json={"verdict": "approve"})
    assert no_actor.status_code == 422
    two_actors = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision", headers={"X-Signoff-Actor": "cli:x"},
                          json={"verdict": "approve", "actor": "cli:lead"})
    assert two_actors.status_code == 422 and "two different actors" in two_actors.json()["detail"]
    unknown_field = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                             json={"verdict": "edit", "actor": "cli:lead", "args": {"bogus": 1}})
    assert unknown_field.status_code == 422 and "unknown field(s) bogus" in unknown_field.json()["detail"]
    assert "got [" not in unknown_field.json()["detail"], "names only what the approver sent"
    huge = live.api("POST", "/runs",
                    json={"agent": "triage", "input": {"ticket_id": 1}, "idempotency_key": "k" * 100_000})
    assert huge.status_code == 422 and len(huge.content) < 3000 and "100000 characters" in huge.text, huge.text[:300]
    bogus = live.api("GET", "/api/proposals", params={"state": "bogus"})
    assert bogus.status_code == 422 and bogus.json()["error"] == "invalid_request", bogus.text
    assert "query.state" in bogus.json()["message"] and "'pending'" in bogus.json()["message"]
    from typing import get_args

    from signoff.domain import PROPOSAL_STATES
    from signoff.server.app import StateFilter

    assert set(get_args(StateFilter)) == {"all", *PROPOSAL_STATES}, "the API's filter follows the domain's states"
    bad_verdict = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                           json={"verdict": "maybe", "actor": "cli:lead"})
    assert bad_verdict.status_code == 422
    # Schema errors answer like every other error: a code, FastAPI's list as "detail", one line in "message".
    shape = bad_verdict.json()
    assert shape["error"] == "invalid_request" and isinstance(shape["detail"], list), shape
    assert "verdict" in shape["message"] and "body.verdict" in shape["message"], shape

    for i, p in enumerate(pending):
        done = live.api("POST", f"/api/proposals/{p['id']}/decision",
                        headers={"X-Signoff-Actor": "cli:lead"}, json={"verdict": "approve"})
        assert done.status_code == 200, done.text
        if i < len(pending) - 1:
            assert done.json()["run"] is None
    assert done.json()["run"]["status"] == "done" and done.json()["proposal"]["state"] == "executed"
    assert len(ticket_writes(odoo_standin)) == len(pending)
    again = live.api("POST", f"/api/proposals/{pending[0]['id']}/decision",
                     json={"verdict": "approve", "actor": "cli:alice"})
    assert again.status_code == 409
    assert again.json()["decided_by"] == "cli:lead" and again.json()["decided_at"]
    assert len(ticket_writes(odoo_standin)) == len(pending)
    metrics = live.http.get(live.url + "/metrics").text
    assert 'signoff_decisions_total{state="approved",channel="api"}' in metrics
    assert 'signoff_proposals{state="executed"}' in metrics


@both_dbs
def test_sweep_expires_reminds_and_resumes(start_server: Callable[..., Live], odoo_standin: OdooStandIn) -> None:
    live = start_server(expires="2s", remind="1s")
    tid = new_ticket_ids(live)[0]
    thread = live.webhook(tid).json()["thread_id"]
    run = live.wait_run(thread)
    n = len(run["proposals"])
    wait_for(lambda: len(live.slack.messages_in("approvals")) == n, what="posts")
    time.sleep(1.1)
    swept = live.api("POST", "/api/sweep").json()
    assert swept["reminded"] == n and swept["expired"] == 0
    replies = [m for m in live.slack.messages_in("approvals") if m["thread_ts"]]
    assert len(replies) == n and all("Reminder" in m["text"] for m in replies)
    assert live.api("POST", "/api/sweep").json()["reminded"] == 0, "one reminder per period"
    time.sleep(1.0)
    swept = live.api("POST", "/api/sweep").json()
    assert swept["expired"] == n and swept["resumed"] == 1
    states = {p.state for p in live.svc.rt.store.find(thread_id=thread)}
    assert states == {"expired"}, "expired, never recorded as rejected"
    assert live.api("GET", f"/api/runs/{thread}").json()["status"] == "done"
    assert ticket_writes(odoo_standin) == []
    top = [m for m in live.slack.messages_in("approvals") if not m["thread_ts"]]
    assert all(not any(b["type"] == "actions" for b in m["blocks"]) for m in top), "buttons gone"
    assert all("Expired" in str(m["blocks"]) for m in top)
    audit = kinds(live, thread)
    assert audit.count("proposal.reminded") == n and audit.count("proposal.expired") == n


def cli_as_another_process(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process on the server's state (its data dir, or its Postgres database)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")}
    env.update({
        "SIGNOFF_DATA_DIR": str(settings.data_dir), "SIGNOFF_ODOO_URL": str(settings.odoo_url),
        "SIGNOFF_ODOO_DB": settings.odoo_db, "SIGNOFF_MODEL_DIR": str(settings.model_dir),
        "SIGNOFF_POLICY_PATH": str(settings.policy_path), "SIGNOFF_PUBLIC_DATA_DIR": str(settings.public_data_dir),
        "SIGNOFF_EXECUTOR_STALE_SECONDS": str(settings.executor_stale_seconds), "NO_PROXY": "127.0.0.1,localhost",
        **({"SIGNOFF_DATABASE_URL": settings.database_url} if settings.database_url else {}), **extra,
    })
    return subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@both_dbs
def test_sweep_finishes_a_write_a_killed_cli_left_executing_once_its_claim_is_stale(
    start_server: Callable[..., Live], odoo_standin: OdooStandIn
) -> None:
    """The CLI dies after claiming a write (``executing``), before Odoo sees it. The sweep resumes the run at
    once but leaves that write alone while its holder lives (it may still be writing); once the holder is gone
    (or the claim is older than SIGNOFF_EXECUTOR_STALE_SECONDS), a sweep writes it, exactly once, no human."""
    live = start_server(channel="inbox", settings_update={"executor_stale_seconds": 60.0})
    tid = new_ticket_ids(live)[0]
    thread = live.api("POST", "/api/triage", json={"ticket_id": tid}).json()["thread_id"]
    live.wait_run(thread)
    pending = live.api("GET", "/api/proposals", params={"thread": thread}).json()["proposals"]
    assert pending
    for p in pending[:-1]:
        assert live.api("POST", f"/api/proposals/{p['id']}/decision",
                        json={"verdict": "approve", "actor": "cli:lead"}).json()["run"] is None
    crashed = cli_as_another_process(live.settings, "approvals", "approve", pending[-1]["id"], "--as", "cli:lead",
                                     SIGNOFF_FAULT_INJECTION="before_write")
    assert crashed.returncode == 137, crashed.stdout + crashed.stderr
    store = live.svc.rt.store
    interrupted = [p for p in store.find(thread_id=thread) if p.state == "executing"]
    assert len(interrupted) == 1 and ticket_writes(odoo_standin) == []
    pid = interrupted[0].id

    # The dead CLI's claims are free at once (its process is gone: signoff.guardrails.owner). To see what a
    # live holder gets, hand the interrupted write to a process that is still running.
    from signoff.guardrails.owner import owner_of

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        store.transition(pid, ("executing",), executing_owner=owner_of(holder.pid))
        # Held by a live process, not stale: the run is resumed (its other writes happen), this write is left
        # alone, on every sweep.
        for expect_resumed in (1, 0):
            swept = live.api("POST", "/api/sweep").json()
            assert (swept["resumed"], swept["recovered"], swept["waiting"]) == (expect_resumed, 0, 1), swept
            assert store.get(pid).state == "executing"
            assert len(ticket_writes(odoo_standin)) == len(pending) - 1
        assert live.api("GET", f"/api/runs/{thread}").json()["status"] == "done"
        # Its holder dies: the next sweep writes it at once (no waiting for SIGNOFF_EXECUTOR_STALE_SECONDS).
        holder.kill()
        holder.wait(10)
        swept = live.api("POST", "/api/sweep").json()
        assert (swept["resumed"], swept["recovered"], swept["waiting"]) == (0, 1, 0), swept
    finally:
        holder.kill()
        holder.wait(10)
    assert {p.state for p in store.find(thread_id=thread)} == {"executed"}
    assert len(ticket_writes(odoo_standin)) == len(pending), "each approved proposal written exactly once"
    trail = kinds(live, pid)
    assert "execution.reconciling" in trail and trail.count("execution.succeeded") == 1
    swept = live.api("POST", "/api/sweep").json()
    assert (swept["resumed"], swept["recovered"], swept["waiting"]) == (0, 0, 0), swept
    assert len(ticket_writes(odoo_standin)) == len(pending)
    shown = live.api("GET", f"/api/proposals/{pid}").json()["proposal"]
    assert shown["state"] == "executed"


def test_writes_that_failed_on_an_unreachable_odoo_are_requeued_by_the_sweep_once_it_answers(
        start_server: Callable[..., Live], odoo_standin: OdooStandIn) -> None:
    live = start_server(channel="inbox", settings_update={"executor_max_attempts": 1})
    tid = new_ticket_ids(live)[0]
    thread = live.api("POST", "/api/triage", json={"ticket_id": tid}).json()["thread_id"]
    live.wait_run(thread)
    pending = live.api("GET", "/api/proposals", params={"thread": thread}).json()["proposals"]
    odoo_standin.set_fault(down=True, only="write")  # Odoo drops the writes
    try:
        for p in pending:
            live.api("POST", f"/api/proposals/{p['id']}/decision", json={"verdict": "approve", "actor": "cli:lead"})
        failed = [p for p in live.svc.rt.store.find(thread_id=thread) if p.state == "failed"]
        assert len(failed) == len(pending) and all((p.error or "").startswith("OdooConnectionError") for p in failed)
        odoo_standin.set_fault(down=True, only=None)  # all of Odoo down: the sweep leaves them be
        assert live.api("POST", "/api/sweep").json()["requeued"] == 0
    finally:
        odoo_standin.set_fault(down=False, only=None)
    swept = live.api("POST", "/api/sweep").json()
    assert swept["requeued"] == len(pending), swept
    assert {p.state for p in live.svc.rt.store.find(thread_id=thread)} == {"executed"}
    assert len(ticket_writes(odoo_standin)) == len(pending), "each written exactly once"
    assert live.api("POST", "/api/sweep").json()["requeued"] == 0
    assert kinds(live, pending[0]["id"]).count("execution.requeued") == 1


def test_hostile_inputs_are_refused_before_any_work(start_server: Callable[..., Live]) -> None:
    import hashlib
    import hmac

    live = start_server()
    hook = live.url + "/webhooks/odoo"
    headers = {"X-Signoff-Webhook-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"}
    for payload in (b'{"_model": "helpdesk.ticket", "_id": true}',
                    b'{"_model": "helpdesk.ticket", "_id": 99999999999999999999999}'):
        assert live.http.post(hook, content=payload, headers=headers).status_code == 422
    big = b'{"verdict": "reject", "actor": "cli:lead", "reason": "' + b"x" * 2_000_000 + b'"}'
    api = {"Authorization": f"Bearer {live.settings.api_token.get_secret_value()}",  # type: ignore[union-attr]
           "Content-Type": "application/json"}
    assert live.http.post(live.url + "/api/proposals/p_x/decision", content=big, headers=api).status_code == 413
    long_reason = {"verdict": "reject", "actor": "cli:lead", "reason": "x" * 5000}
    assert live.http.post(live.url + "/api/proposals/p_x/decision", json=long_reason,
                          headers=api).status_code == 422
    # Slack: a timestamp that is not a number is not Slack (401, not a crash); signed garbage is a 400.
    slack = live.url + "/slack/events"
    assert live.http.post(slack, content=b"{}", headers={"X-Slack-Request-Timestamp": "abc",
                                                          "X-Slack-Signature": "v0=00"}).status_code == 401
    ts, body = str(int(time.time())), b"{not json"
    secret = live.settings.slack_signing_secret.get_secret_value()  # type: ignore[union-attr]
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    answer = live.http.post(slack, content=body, headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig,
                                                           "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert live.svc.rt.store.find() == [] and "ticket.loaded" not in kinds(live)


def _chunked(url: str, path: str, chunks: int, chunk: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST a body with Transfer-Encoding: chunked (no Content-Length), as a raw http.client does."""
    import http.client
    import json
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in {"Transfer-Encoding": "chunked", "Content-Type": "application/json", **headers}.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for _ in range(chunks):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before the client finished: that is the point
            pass
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read() or b"null")
    finally:
        conn.close()


def test_streamed_bodies_are_limited_and_parse_errors_answer_in_the_error_shape(
        start_server: Callable[..., Live]) -> None:
    live = start_server()
    # A chunked body declares no size: it is counted as it arrives, with or without credentials.
    status, body = _chunked(live.url, "/api/proposals/p_x/decision", 40, b"x" * 65536, {})
    assert (status, body["error"]) == (413, "too_large"), body
    status, body = _chunked(live.url, "/webhooks/odoo", 20, b" " * 65536, {"X-Signoff-Webhook-Secret": WEBHOOK_SECRET})
    assert (status, body["error"]) == (413, "too_large"), body
    status, body = _chunked(live.url, "/webhooks/odoo", 1, b'{"_model": "helpdesk.ticket", "_id": 1',
                            {"X-Signoff-Webhook-Secret": WEBHOOK_SECRET})
    assert status == 422, body  # a small chunked body is read as usual (this one is cut short)
    # JSON nested deeper than the parser goes: a clear 422 / 400, never a 500.
    nested = b"[" * 100_000 + b"]" * 100_000
    hook = live.http.post(live.url + "/webhooks/odoo", content=nested,
                          headers={"X-Signoff-Webhook-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"})
    assert hook.status_code == 422 and "nested too deeply" in hook.json()["detail"], hook.text
    api = live.api("POST", "/api/proposals/p_x/decision", content=nested, headers={"Content-Type": "application/json"})
    assert api.status_code == 400 and api.json()["error"] == "bad_request", api.text
    # Unknown paths and methods answer in the same shape.
    missing = live.http.get(live.url + "/no/such/path")
    assert missing.status_code == 404 and missing.json() == {"error": "not_found", "detail": "Not Found"}
    wrong = live.http.get(live.url + "/webhooks/odoo")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed" and "allow" in wrong.headers
    assert live.svc.rt.store.find() == [] and "ticket.loaded" not in kinds(live)


def test_slack_requests_that_are_not_objects_or_lack_fields_are_401_or_400_never_500(
        start_server: Callable[..., Live]) -> None:
    import hashlib
    import hmac
    from urllib.parse import urlencode

    live = start_server()
    slack = live.url + "/slack/events"
    secret = live.settings.slack_signing_secret.get_secret_value()  # type: ignore[union-attr]

    def post(body: bytes, *, signed: bool, form: bool = False) -> int:
        ts = str(int(time.time()))
        sig = "v0=" + (hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
                       if signed else "00")
        kind = "application/x-www-form-urlencoded" if form else "application/json"
        answer = live.http.post(slack, content=body, headers={"X-Slack-Request-Timestamp": ts,
                                                              "X-Slack-Signature": sig, "Content-Type": kind})
        if answer.status_code != 200:  # a refusal says why, as JSON (an ack is Bolt's empty 200)
            assert answer.headers["content-type"].startswith("application/json"), (answer.headers, answer.text)
        return int(answer.status_code)

    for body in (b"[1, 2]", b'"str"', b"123", b"null"):
        assert post(body, signed=False) == 401, body  # unsigned: refused before the body is parsed
        assert post(body, signed=True) == 400, body
    assert post(urlencode({"payload": "[1]"}).encode(), signed=False, form=True) == 401
    assert post(urlencode({"payload": "[1]"}).encode(), signed=True, form=True) == 400
    for payload in ({"type": "block_actions", "actions": [], "user": {"id": "U1"}},   # no action
                    {"type": "block_actions", "actions": [{"action_id": "approve", "value": "p_x"}]},  # no user
                    {"type": "view_submission", "user": {"id": "U1"}},  # no view: no listener (Bolt's 404)
                    {"type": "view_submission", "user": {"id": "U1"}, "view": {"callback_id": "edit_proposal"}},
                    {"type": "view_submission", "view": {"callback_id": "reject_reason", "private_metadata": "{}"}}):
        import json

        status = post(urlencode({"payload": json.dumps(payload)}).encode(), signed=True, form=True)
        assert status in (200, 400, 404), (payload, status)
    assert live.svc.rt.store.find() == []
    assert "proposal.decided" not in kinds(live)


def test_long_query_strings_are_refused(start_server: Callable[..., Live]) -> None:
    live = start_server()
    answer = live.http.get(live.url + "/inbox/pending?zz=" + "A" * 8000)
    assert answer.status_code == 414


def test_inbox_shows_only_its_own_signed_status_messages() -> None:
    from urllib.parse import parse_qs, urlsplit

    from starlette.requests import Request

    from signoff.server.inbox import _back, _messages

    def request(query: str) -> Request:
        return Request({"type": "http", "query_string": query.encode(), "headers": []})

    ours = urlsplit(_back("/inbox/p/x", flash="approve: the proposal is now executed").headers["location"]).query
    assert _messages(request(ours)) == ("approve: the proposal is now executed", None)
    forged = "flash=Session+expired,+sign+in+at+evil.example"
    assert _messages(request(forged)) == (None, None)
    tampered = ours.replace("executed", "rejected")
    assert parse_qs(tampered)["fs"] and _messages(request(tampered)) == (None, None)
