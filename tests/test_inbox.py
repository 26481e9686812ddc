"""The web inbox over plain HTTP (httpx against a live server): sign-in, sessions, CSRF, who sees what,
two-step edits, the exception queue, audit and quality pages. The browser scenario is in
``test_inbox_browser.py``."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import API_TOKEN, Live, both_dbs, new_ticket_ids
from fastapi.testclient import TestClient
from pydantic import SecretStr

from signoff.config import Settings
from signoff.sandbox.odoo import OdooStandIn
from signoff.server.app import create_app
from signoff.server.inbox_auth import Signer, UserStore

INBOX_SECRET = "inbox-secret-for-tests-0123456789"
USERS = {"lead": ("cli:lead", "lead-password-1"), "alice": ("cli:alice", "alice-password-1"),
         "mallory": ("cli:mallory", "mallory-password-1")}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def settings(settings: Settings, tmp_path: Any) -> Settings:
    """The shared settings, with the inbox enabled and eval reports in ``tmp_path/reports``."""
    return settings.model_copy(update={"inbox_secret": SecretStr(INBOX_SECRET),
                                       "inbox_reports_dir": tmp_path / "reports"})


def add_users(live: Live) -> None:
    store = UserStore(live.svc.rt.statedb)
    for name, (identity, password) in USERS.items():
        store.add(name, identity, password, replace=True)


def triaged(live: Live) -> tuple[str, list[dict[str, Any]]]:
    """Triage one new ticket over the REST API; its thread and pending proposals (as JSON)."""
    tid = new_ticket_ids(live)[0]
    thread = live.api("POST", "/api/triage", json={"ticket_id": tid}).json()["thread_id"]
    live.wait_run(thread)
    return thread, live.api("GET", "/api/proposals", params={"thread": thread}).json()["proposals"]


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(live: Live, name: str) -> tuple[httpx.Client, str]:
    """A client signed in as ``name`` and its session's CSRF token."""
    client = httpx.Client(base_url=live.url, timeout=30.0, trust_env=False)
    form = client.get("/inbox/login")
    assert form.status_code == 200
    answer = client.post("/inbox/login", data={"csrf": csrf_of(form.text), "username": name,
                                               "password": USERS[name][1], "next": "/inbox/pending"})
    assert answer.status_code == 303 and answer.headers["location"] == "/inbox/pending", answer.text
    page = client.get("/inbox/pending")
    assert page.status_code == 200
    return client, csrf_of(page.text)


def state(live: Live, pid: str) -> str:
    return str(live.svc.rt.store.get(pid).state)


def ticket_writes(standin: OdooStandIn) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["method"] == "write" and c["model"] == "helpdesk.ticket" and c["ok"]]


def test_inbox_is_off_without_a_secret(settings: Settings) -> None:
    bare = TestClient(create_app(settings.model_copy(update={"inbox_secret": None})))
    answer = bare.get("/inbox/pending")
    assert answer.status_code == 503 and "SIGNOFF_INBOX_SECRET" in answer.text


@both_dbs
def test_sign_in_sessions_and_csrf(start_server: Callable[..., Live]) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    _, proposals = triaged(live)
    pid = proposals[0]["id"]
    anon = httpx.Client(base_url=live.url, timeout=30.0, trust_env=False)
    # Not signed in: every page sends you to the sign-in form, and nothing can be decided.
    answer = anon.get(f"/inbox/p/{pid}")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/inbox/login?next=")
    assert anon.post(f"/inbox/p/{pid}/approve", data={"csrf": "x"}).status_code == 303
    # The sign-in form itself is CSRF-protected; a wrong password is refused and audited.
    assert anon.post("/inbox/login", data={"username": "lead", "password": USERS["lead"][1]}).status_code == 403
    form = anon.get("/inbox/login")
    wrong = anon.post("/inbox/login", data={"csrf": csrf_of(form.text), "username": "lead", "password": "nope1234"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    assert "inbox.sign_in_failed" in [e.kind for e in live.svc.rt.audit.trail("inbox:lead")]
    # A forged or tampered session cookie is no session.
    cookie, _ = Signer(INBOX_SECRET).issue("lead", 3600)
    forged = httpx.Client(base_url=live.url, cookies={"signoff_inbox": cookie[:-2] + "xx"}, trust_env=False)
    assert forged.get("/inbox/pending").status_code == 303
    other_key, _ = Signer("another-secret-0123456789").issue("lead", 3600)
    assert httpx.Client(base_url=live.url, cookies={"signoff_inbox": other_key},
                        trust_env=False).get("/inbox/pending").status_code == 303
    expired, _ = Signer(INBOX_SECRET).issue("lead", -1)
    assert httpx.Client(base_url=live.url, cookies={"signoff_inbox": expired},
                        trust_env=False).get("/inbox/pending").status_code == 303

    lead, csrf = sign_in(live, "lead")
    page = lead.get("/inbox/pending").text
    assert all(p["id"][:14] in page for p in proposals)
    assert "Content-Security-Policy" in lead.get("/inbox/pending").headers
    # CSRF: missing, wrong, or another session's token: refused, nothing decided.
    assert lead.post(f"/inbox/p/{pid}/approve", data={}).status_code == 403
    assert lead.post(f"/inbox/p/{pid}/approve", data={"csrf": "guess"}).status_code == 403
    _, alice_csrf = sign_in(live, "alice")
    assert lead.post(f"/inbox/p/{pid}/approve", data={"csrf": alice_csrf}).status_code == 403
    assert lead.post(f"/inbox/p/{pid}/approve", json={"csrf": csrf}).status_code == 403
    assert state(live, pid) == "pending"
    # Reject needs a reason; with one it is decided, shown as decided, and the buttons are gone.
    no_reason = lead.post(f"/inbox/p/{pid}/reject", data={"csrf": csrf, "reason": "  "})
    assert no_reason.status_code == 422 and "reason is required" in no_reason.text and state(live, pid) == "pending"
    done = lead.post(f"/inbox/p/{pid}/reject", data={"csrf": csrf, "reason": "not this queue"})
    assert done.status_code == 303 and state(live, pid) == "rejected"
    shown = lead.get(f"/inbox/p/{pid}").text
    assert "cli:lead" in shown and "via <b>inbox</b>" in shown and 'id="approve"' not in shown
    again = lead.post(f"/inbox/p/{pid}/approve", data={"csrf": csrf})
    assert again.status_code == 409 and "Already decided" in again.text
    # Signing out ends the session.
    assert lead.post("/inbox/logout", data={"csrf": csrf}).status_code == 303
    assert lead.get("/inbox/pending").status_code == 303


def test_an_outsider_sees_nothing_to_decide_and_cannot_decide(start_server: Callable[..., Live]) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    _, proposals = triaged(live)
    pid = proposals[0]["id"]
    mallory, csrf = sign_in(live, "mallory")
    page = mallory.get("/inbox/pending").text
    assert 'id="nothing"' in page and not any(p["id"][:14] in page for p in proposals)
    assert mallory.get(f"/inbox/p/{pid}").status_code == 403
    assert mallory.post(f"/inbox/p/{pid}/approve", data={"csrf": csrf}).status_code == 403
    assert mallory.get("/inbox/audit").status_code == 403
    assert state(live, pid) == "pending"


def test_trusted_proxy_header(start_server: Callable[..., Live]) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    _, proposals = triaged(live)
    client = httpx.Client(base_url=live.url, timeout=30.0, trust_env=False)
    assert client.get("/inbox/pending", headers={"X-Remote-User": "lead"}).status_code == 303, "off by default"
    live.app.state.settings = live.settings.model_copy(update={"inbox_trusted_header": "X-Remote-User"})
    page = client.get("/inbox/pending", headers={"X-Remote-User": "lead"})
    assert page.status_code == 200 and proposals[0]["id"][:14] in page.text and "cli:lead" in page.text
    page = client.get(f"/inbox/p/{proposals[0]['id']}", headers={"X-Remote-User": "lead"})
    # An unknown name is inbox:<name>, in no group here.
    assert 'id="nothing"' in client.get("/inbox/pending", headers={"X-Remote-User": "zed"}).text
    pid = proposals[0]["id"]
    assert client.post(f"/inbox/p/{pid}/approve", headers={"X-Remote-User": "lead"}).status_code == 403
    assert client.post(f"/inbox/p/{pid}/approve", headers={"X-Remote-User": "lead"},
                       data={"csrf": "x"}).status_code == 403
    ok = client.post(f"/inbox/p/{pid}/approve", headers={"X-Remote-User": "lead"}, data={"csrf": csrf_of(page.text)})
    assert ok.status_code == 303 and live.svc.rt.store.get(pid).decided_by == "cli:lead"


def test_edit_is_checked_and_shown_before_it_is_confirmed(start_server: Callable[..., Live],
                                                         odoo_standin: OdooStandIn) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    thread, proposals = triaged(live)
    lead, csrf = sign_in(live, "lead")
    team = next(p for p in proposals if p["action"] == "ticket.set_team")
    other = "Customer Care" if team["args"]["team"] != "Customer Care" else "Billing"
    url = f"/inbox/p/{team['id']}"
    view = lead.get(url).text
    assert 'id="diff"' in view and "helpdesk.ticket.team_id" in view and 'id="policy"' in view
    bad = lead.post(url + "/edit", data={"csrf": csrf, "arg.team": "No Such Team"})
    assert bad.status_code == 422 and "guardrails" in bad.text and "No Such Team" in bad.text
    assert state(live, team["id"]) == "pending"
    preview = lead.post(url + "/edit", data={"csrf": csrf, "arg.team": f"  {other} ", "reason": "VIP"})
    assert preview.status_code == 200 and 'id="confirm"' in preview.text and f"<b>{other}</b>" in preview.text
    assert state(live, team["id"]) == "pending", "a preview decides nothing"
    args = re.search(r'name="args" value="([^"]+)"', preview.text)
    assert args
    confirm = lead.post(url + "/edit/confirm", data={"csrf": csrf, "args": html.unescape(args.group(1)),
                                                     "reason": "VIP"})
    assert confirm.status_code == 303, confirm.text
    p = live.svc.rt.store.get(team["id"])
    assert p.edited_args == {"team": other} and p.decided_by == "cli:lead" and p.decision_reason == "VIP"
    assert "proposal.edited" in [e.kind for e in live.svc.rt.audit.trail(p.id)]
    # The rest of the run: approve; the run resumes, and the edit is what gets written.
    for rest in proposals:
        if rest["id"] != team["id"]:
            assert lead.post(f"/inbox/p/{rest['id']}/approve", data={"csrf": csrf}).status_code == 303
    done = live.svc.rt.store.get(team["id"])
    assert done.state == "executed" and done.result and done.result["field"] == "team_id"
    assert len(ticket_writes(odoo_standin)) == len(proposals)
    assert live.svc.rt.reader.read("helpdesk.ticket", [done.target_id], ["team_id"])[0]["team_id"][1] == other


def test_exceptions_retry_and_cancel_are_authorised_and_audited(start_server: Callable[..., Live],
                                                                odoo_standin: OdooStandIn) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    thread, proposals = triaged(live)
    store = live.svc.rt.store
    a, b = proposals[0]["id"], proposals[1]["id"]
    for pid in (a, b):  # as the executor leaves them after its last attempt
        store.transition(pid, ("pending",), state="failed", decided_by="cli:alice", error="OdooConnectionError: down")
    lead, csrf = sign_in(live, "lead")
    page = lead.get("/inbox/exceptions").text
    assert a[:14] in page and "OdooConnectionError" in page
    mallory, m_csrf = sign_in(live, "mallory")
    assert a[:14] not in mallory.get("/inbox/exceptions").text
    assert mallory.post(f"/inbox/p/{a}/retry", data={"csrf": m_csrf}).status_code == 403
    assert lead.post(f"/inbox/p/{a}/retry", data={}).status_code == 403
    no_reason = lead.post(f"/inbox/p/{b}/cancel", data={"csrf": csrf, "reason": ""}, follow_redirects=True)
    assert "reason is required" in no_reason.text and store.get(b).state == "failed"
    lead.post(f"/inbox/p/{b}/cancel", data={"csrf": csrf, "reason": "customer left"})
    assert store.get(b).state == "cancelled"
    retried = lead.post(f"/inbox/p/{a}/retry", data={"csrf": csrf}, follow_redirects=True)
    assert "executed" in retried.text and store.get(a).state == "executed"
    assert len(ticket_writes(odoo_standin)) == 1
    kinds_a = [(e.kind, e.actor) for e in live.svc.rt.audit.trail(a)]
    assert ("execution.requeued", "cli:lead") in kinds_a and ("execution.succeeded", "system:executor") in kinds_a
    assert ("proposal.cancelled", "cli:lead") in [(e.kind, e.actor) for e in live.svc.rt.audit.trail(b)]


@both_dbs
def test_audit_and_quality_pages(start_server: Callable[..., Live]) -> None:
    live = start_server(channel="inbox")
    add_users(live)
    thread, proposals = triaged(live)
    lead, csrf = sign_in(live, "lead")
    lead.post(f"/inbox/p/{proposals[0]['id']}/reject", data={"csrf": csrf, "reason": "no"})
    audit = lead.get("/inbox/audit", params={"subject": thread.rsplit(":", 1)[1]}).text
    assert "Hash chain verified" in audit and "ticket.loaded" in audit and "proposal.rejected" in audit
    one = lead.get("/inbox/audit", params={"subject": proposals[0]["id"][:10]}).text
    assert "proposal.created" in one and "proposal.rejected" in one
    reports = live.settings.inbox_reports_dir
    reports.mkdir()
    (reports / "smoke.html").write_text("<html><body><h1>smoke report</h1></body></html>")
    quality = lead.get("/inbox/quality").text
    assert 'id="quality"' in quality and proposals[0]["action"] in quality and "smoke.html" in quality
    assert "smoke report" in lead.get("/inbox/quality/reports/smoke.html").text
    assert lead.get("/inbox/quality/reports/..%2Fsignoff.sqlite").status_code == 404
    assert live.http.get(live.url + "/api/proposals", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code \
        == 200, "the REST API is untouched by the inbox"
