"""Slack end to end: the Slack stand-in (real HTTP, real HMAC signatures) drives Bolt inside the server.

A click travels: stand-in -> signed POST /slack/events -> Bolt (verify, ack) -> decide -> resume ->
executor -> Odoo stand-in write (counted in its call log) -> chat.update on the stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import LEAD, OUTSIDER, Live, both_dbs, new_ticket_ids, wait_for

from signoff.integrations.slack import approval_blocks
from signoff.sandbox.odoo import OdooStandIn
from signoff.sandbox.slack import validate_blocks


def ticket_writes(standin: OdooStandIn) -> list[dict[str, Any]]:
    return [c for c in standin.calls() if c["method"] == "write" and c["model"] == "helpdesk.ticket" and c["ok"]]


def posted_run(live: Live) -> tuple[str, list[dict[str, Any]]]:
    """Triage one new ticket through the webhook; return its thread and its approval messages."""
    tid = new_ticket_ids(live)[0]
    thread = live.webhook(tid).json()["thread_id"]
    n = len(live.wait_run(thread)["proposals"])
    assert n >= 2
    wait_for(lambda: len(live.slack.messages_in("approvals")) == n, what="approval messages")
    return thread, live.slack.messages_in("approvals")


def states(live: Live, thread: str) -> set[str]:
    return {p.state for p in live.svc.rt.store.find(thread_id=thread)}


def has_buttons(message: dict[str, Any]) -> bool:
    return any(b["type"] == "actions" for b in message["blocks"])


def test_approval_message_is_valid_block_kit_with_the_diff(start_server: Callable[..., Live]) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    proposals = {p.id: p for p in live.svc.rt.store.find(thread_id=thread)}
    for message in messages:
        assert validate_blocks(message["blocks"]) == []
        buttons = next(b for b in message["blocks"] if b["type"] == "actions")["elements"]
        assert [b["action_id"] for b in buttons] == ["approve", "edit", "reject"]
        pid = buttons[0]["value"]
        assert pid in proposals and {b["value"] for b in buttons} == {pid}, "the button carries the id only"
        text = str(message["blocks"])
        p = proposals[pid]
        assert str(p.args[next(iter(p.args))]) in text and "Why" in text
    # The builder stays inside Slack's limits even with huge inputs.
    p = next(iter(proposals.values())).model_copy(update={"rationale": "x" * 10_000})
    assert validate_blocks(approval_blocks(p)[1]) == []


def test_forged_or_stale_requests_are_401_and_change_nothing(start_server: Callable[..., Live],
                                                             odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    updates_before = len(live.slack.api_calls("chat.update"))
    for mode in ({"forged": True}, {"stale": True}):
        answer = live.slack.click("approvals", messages[0]["ts"], "approve", LEAD, **mode)
        assert answer.status == 401
        answer = live.slack.mention(LEAD, "triage 1", **mode)
        assert answer.status == 401
    assert states(live, thread) == {"pending"}
    assert ticket_writes(odoo_standin) == []
    assert len(live.slack.api_calls("chat.update")) == updates_before
    assert len(live.slack.api_calls("chat.postMessage")) == len(messages), "the forged mention triaged nothing"


def test_click_approve_resumes_the_run_and_writes_once(start_server: Callable[..., Live],
                                                       odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    for message in messages:
        answer = live.slack.click("approvals", message["ts"], "approve", LEAD)
        assert answer.status == 200 and answer.seconds < 3.0
    wait_for(lambda: states(live, thread) == {"executed"}, what="executed")
    assert len(ticket_writes(odoo_standin)) == len(messages)
    assert {w["login"] for w in ticket_writes(odoo_standin)} == {"executor"}
    wait_for(lambda: all("Executed" in str(m["blocks"]) for m in live.slack.messages_in("approvals")),
             what="messages show the execution")
    for message in live.slack.messages_in("approvals"):
        assert f"<@{LEAD}>" in str(message["blocks"]) and not has_buttons(message)
    audit = [e for e in live.svc.rt.audit.trail(thread) if e.kind == "proposal.approved"]
    assert {e.actor for e in audit} == {f"slack:{LEAD}"} and all(e.data["channel"] == "slack" for e in audit)


@both_dbs
def test_double_click_and_retried_click_write_once(start_server: Callable[..., Live],
                                                   odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    for message in messages[:-1]:
        live.slack.click("approvals", message["ts"], "approve", LEAD)
    last = messages[-1]
    stale_view = live.slack.snapshot("approvals", last["ts"])  # a client that still shows the buttons
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: live.slack.click("approvals", last["ts"], "approve", LEAD,
                                                           message=stale_view), range(2)))
    assert [a.status for a in answers] == [200, 200]
    assert live.slack.replay(retry_num=1).status == 200  # Slack re-sends the very same click
    wait_for(lambda: states(live, thread) == {"executed"}, what="executed")
    wait_for(lambda: live.slack.ephemerals_for(LEAD), what="already-decided note")
    assert len(ticket_writes(odoo_standin)) == len(messages)
    note = live.slack.ephemerals_for(LEAD)[0]["text"]
    assert note.startswith("Already") and f"<@{LEAD}>" in note
    # After the update the button is gone: the stand-in cannot click it any more.
    wait_for(lambda: not has_buttons(live.slack.snapshot("approvals", last["ts"])), what="update")
    with pytest.raises(LookupError):
        live.slack.click("approvals", last["ts"], "approve", LEAD)
    assert len(ticket_writes(odoo_standin)) == len(messages)


def test_unauthorised_clicker_is_refused_told_and_audited(start_server: Callable[..., Live],
                                                          odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    pid = next(b for b in messages[0]["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    assert live.slack.click("approvals", messages[0]["ts"], "approve", OUTSIDER).status == 200
    assert live.slack.click("approvals", messages[0]["ts"], "reject", OUTSIDER).status == 200
    wait_for(lambda: len(live.slack.ephemerals_for(OUTSIDER)) == 2, what="refusals")
    assert all("can't decide" in e["text"] for e in live.slack.ephemerals_for(OUTSIDER))
    assert live.slack.api_calls("views.open") == [], "no modal for someone who may not decide"
    refused = [e for e in live.svc.rt.audit.trail(pid) if e.kind == "decision.refused"]
    assert len(refused) == 2 and {e.actor for e in refused} == {f"slack:{OUTSIDER}"}
    assert states(live, thread) == {"pending"} and ticket_writes(odoo_standin) == []
    assert live.slack.ephemerals_for(LEAD) == [], "only the clicker is told"


def test_reject_with_a_reason_through_the_modal(start_server: Callable[..., Live],
                                                odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    for message in messages:
        views_before = len(live.slack.views)
        assert live.slack.click("approvals", message["ts"], "reject", LEAD).status == 200
        wait_for(lambda: len(live.slack.views) > views_before, what="modal")  # noqa: B023
        view = live.slack.last_view()
        assert view["callback_id"] == "reject_reason"
        empty = live.slack.submit_view(view["id"], {"reason": "   "}, LEAD)
        assert empty.status == 200 and empty.json()["response_action"] == "errors"
        assert "reason" in empty.json()["errors"]
        ok = live.slack.submit_view(view["id"], {"reason": "wrong queue, this is a VIP"}, LEAD)
        assert ok.status == 200 and not ok.body
    wait_for(lambda: states(live, thread) == {"rejected"}, what="rejected")
    wait_for(lambda: live.svc.run_status(thread)["status"] == "done", what="run done")
    stored = live.svc.rt.store.find(thread_id=thread)
    assert {p.decision_reason for p in stored} == {"wrong queue, this is a VIP"}
    assert ticket_writes(odoo_standin) == []
    wait_for(lambda: all("Rejected" in str(m["blocks"]) and not has_buttons(m)
                         for m in live.slack.messages_in("approvals")), what="updates")


def test_edit_through_the_modal_is_revalidated_then_written(start_server: Callable[..., Live],
                                                            odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    proposals = live.svc.rt.store.find(thread_id=thread)
    category = next(p for p in proposals if p.action == "ticket.set_category")
    message = next(m for m in messages if category.id in str(m["blocks"]))
    live.slack.click("approvals", message["ts"], "edit", LEAD)
    view = wait_for(lambda: live.slack.views and live.slack.last_view(), what="modal")
    assert view["callback_id"] == "edit_proposal"  # type: ignore[index]
    other = next(c for c in ("get_refund", "track_order", "check_invoice") if c != category.args["category"])
    ok = live.slack.submit_view(view["id"], {"value": other}, LEAD)  # type: ignore[index]
    assert ok.status == 200
    wait_for(lambda: live.svc.rt.store.get(category.id).state == "approved", what="edit approved")
    stored = live.svc.rt.store.get(category.id)
    assert stored.edited_args == {"category": other} and stored.decided_by == f"slack:{LEAD}"
    for m in messages:
        if m["ts"] != message["ts"]:
            live.slack.click("approvals", m["ts"], "approve", LEAD)
    wait_for(lambda: states(live, thread) == {"executed"}, what="executed")
    row = live.svc.rt.reader.read("helpdesk.ticket", [category.target_id], ["category_id"])[0]
    assert row["category_id"][1] == other
    assert len(ticket_writes(odoo_standin)) == len(messages)
    # "why" tells what was written and that a human changed the agent's proposal.
    live.slack.dm(LEAD, f"why did you route {category.target_id} there?")
    wait_for(lambda: any(f"a human edited it; I had proposed {category.args['category']}" in m["text"]
                         for m in live.slack.messages_in("D" + LEAD[1:])), what="why names the edit")


def test_chat_triage_why_and_help_and_a_retried_event_runs_once(start_server: Callable[..., Live]) -> None:
    live = start_server()
    tid = new_ticket_ids(live)[0]
    answer = live.slack.mention(LEAD, f"triage {tid}", channel="support")
    assert answer.status == 200 and answer.seconds < 3.0
    assert live.slack.replay(retry_num=1).status == 200
    assert live.slack.replay(retry_num=2).status == 200

    def replies() -> list[dict[str, Any]]:
        return [m for m in live.slack.messages_in("support") if m.get("user") == live.slack.bot_user_id]

    wait_for(lambda: replies(), what="triage reply")
    thread = f"ticket:signoff:{tid}"
    wait_for(lambda: live.svc.run_status(thread)["status"] == "paused", what="paused")
    reply = replies()[0]
    assert f"Ticket {tid}" in reply["text"] and reply["thread_ts"], "answered in the thread"
    kinds = [e.kind for e in live.svc.rt.audit.trail(thread)]
    assert kinds.count("chat.triage_requested") == 1 and kinds.count("ticket.loaded") == 1
    assert len(replies()) == 1, "the retried event was dropped"
    live.slack.dm(LEAD, f"why did you route {tid} there?")
    wait_for(lambda: any("team" in m["text"] and "classified" in m["text"]
                         for m in live.slack.messages_in("D" + LEAD[1:])), what="why answer")
    live.slack.dm(LEAD, "hello?")
    wait_for(lambda: any("triage 4312" in m["text"] for m in live.slack.messages_in("D" + LEAD[1:])),
             what="help")
    # Ids no Odoo record can have are refused with the rule every other way in uses, not an internal error.
    for text, says in (("triage 99999999999999999999999", "no ticket 99999999999999999999999: a ticket id"),
                       ("why did you route -5 to billing?", "no ticket -5: a ticket id"),
                       ("risk -3", "no partner -3: a partner id")):
        live.slack.dm(LEAD, text)
        wait_for(lambda says=says: any(says in m["text"] for m in live.slack.messages_in("D" + LEAD[1:])),  # type: ignore[misc]
                 what=text)
    assert not any("SQLite" in m["text"] or "int too large" in m["text"]
                   for m in live.slack.messages_in("D" + LEAD[1:]))


# --- chat intents for the renewal and contracts agents --------------------------------------------


class StubClauseModel:
    """Stands in for the clause model: fixed scores per CUAD category on the first chunk, else 0.02."""

    version = "stub-clauses"

    def __init__(self, scores: dict[str, float]) -> None:
        from signoff.llm.clauses import CATEGORIES

        self.categories = CATEGORIES
        self.thresholds = dict.fromkeys(CATEGORIES, 0.5)
        self.scores = scores

    def score(self, text: str, chunks: Any = None) -> tuple[list[Any], Any, Any]:
        import numpy as np

        from signoff.tools.contracts import chunk_text

        found = chunk_text(text)
        proba = np.full((len(found), len(self.categories)), 0.02)
        for j, category in enumerate(self.categories):
            if category in self.scores and found:
                proba[0, j] = self.scores[category]
        return found, proba, np.zeros((len(found), 4), dtype=np.float32)

    def evidence(self, vector: Any, category: str, k: int = 2) -> list[dict[str, Any]]:
        return []


def bot_replies(live: Live, channel: str) -> list[dict[str, Any]]:
    return [m for m in live.slack.messages_in(channel) if m.get("user") == live.slack.bot_user_id]


def ask(live: Live, text: str, *, channel: str = "support") -> str:
    """Mention the bot and wait for its answer in the thread."""
    before = len(bot_replies(live, channel))
    answer = live.slack.mention(LEAD, text, channel=channel)
    assert answer.status == 200 and answer.seconds < 3.0
    wait_for(lambda: len(bot_replies(live, channel)) > before, what=f"answer to {text!r}")
    reply = bot_replies(live, channel)[-1]
    assert reply["thread_ts"], "answered in the thread"
    return str(reply["text"])


def test_chat_says_how_to_train_then_summarises_a_contract_by_customer_and_id(
        start_server: Callable[..., Live]) -> None:
    from signoff.tools.contracts import list_contract_attachments

    live = start_server()
    assert "signoff train risk" in ask(live, "which accounts are at risk this month?")
    assert "signoff contracts train" in ask(live, "summarise contract 1")
    reader = live.svc.rt.reader
    attachment = list_contract_attachments(reader)[0]
    order = reader.read("sale.order", [attachment["res_id"]], ["partner_id"])[0]
    customer = order["partner_id"][1]
    live.app.state.slack.contract_model = StubClauseModel({"Anti-Assignment": 0.9, "Governing Law": 0.3})
    writes_before = len(live.slack.api_calls("chat.postMessage"))
    text = ask(live, f"can you summarise {customer}'s contract?")
    assert str(attachment["name"]) in text and f"attachment {attachment['id']}" in text
    assert "Anti-assignment: yes (0.90)" in text
    assert "Governing law: _needs review_" in text and "below 0.50" in text
    assert f"review contract {attachment['id']}" in text, "the write is offered, not done"
    assert ask(live, f"summarise contract {attachment['id']}").startswith(f"*{attachment['name']}*")
    assert "can't find a customer" in ask(live, "summarise Nobody Inc's contract")
    assert len(live.slack.api_calls("chat.postMessage")) == writes_before + 3, "replies only: nothing proposed"
    assert live.svc.rt.store.find() == []


def test_chat_lists_accounts_at_risk_and_risk_n_posts_the_renewal_proposals(
        start_server: Callable[..., Live], model_dir: Any, tmp_path: Any, odoo_standin: OdooStandIn) -> None:
    import yaml
    from conftest import write_policy

    from signoff.agents.risk_model import RiskModel
    from signoff.tools.accounts import read_telco, telco_paths

    dev, _ = telco_paths(live_public_data())
    if not dev.exists():
        pytest.skip("the public Telco data is not beside the checkout")
    models = tmp_path / "models-with-risk"
    models.mkdir()
    for entry in model_dir.iterdir():
        (models / entry.name).symlink_to(entry)
    _, feats, labels = read_telco(dev)
    RiskModel.fit(feats[::3], labels[::3], source="telco:dev").save(models / "risk")
    policy_path = write_policy(tmp_path / "risk-policy.yaml", 0.0, channel="slack")
    policy = yaml.safe_load(policy_path.read_text())
    policy["risk"]["followup_bands"] = ["low", "medium", "high"]
    policy["actions"]["account.csm_followup"]["min_confidence"] = 0.0
    policy["groups"]["cs-leads"].append(f"slack:{LEAD}")
    policy_path.write_text(yaml.safe_dump(policy))
    live = start_server(settings_update={"model_dir": models, "policy_path": policy_path})

    text = ask(live, "which accounts are at risk this month?")
    assert text.startswith("*Accounts most at risk*") and "this month" in text
    lines = [line for line in text.splitlines() if line[:2] in {f"{i}." for i in range(1, 10)}]
    assert 1 <= len(lines) <= 5 and all("band *" in line and "top driver:" in line for line in lines)
    assert live.svc.rt.store.find() == [], "listing proposes nothing"
    partner = int(lines[0].split("(partner ")[1].split(")")[0])

    text = ask(live, f"risk {partner}")
    assert "proposal(s) wait for approval" in text and "account.csm_followup" in text
    # One run per account and renewal cycle: the thread is account:<db>:<partner>:<cycle>.
    thread = next(p.thread_id for p in live.svc.rt.store.find()
                  if p.thread_id.startswith(f"account:signoff:{partner}:"))
    proposals = live.svc.rt.store.find(thread_id=thread)
    wait_for(lambda: len(live.slack.messages_in("approvals")) == len(proposals), what="approval messages")
    followup = next(m for m in live.slack.messages_in("approvals") if "account.csm_followup" in m["text"])
    assert validate_blocks(followup["blocks"]) == [] and f"res.partner({partner})" in str(followup["blocks"])
    for message in live.slack.messages_in("approvals"):
        assert live.slack.click("approvals", message["ts"], "approve", LEAD).status == 200
    wait_for(lambda: states(live, thread) == {"executed"}, what="renewal proposals executed")
    creates = [c for c in odoo_standin.calls() if c["method"] == "create" and c["ok"]]
    assert len(creates) == len(proposals)
    assert "already has a run" in ask(live, f"risk {partner}")
    assert len(live.svc.rt.store.find(thread_id=thread)) == len(proposals)


def live_public_data() -> Any:
    from conftest import public_data_dir

    return public_data_dir()


# --- escalation -------------------------------------------------------------------------------------


@both_dbs
def test_a_reminded_proposal_escalates_to_the_next_group(start_server: Callable[..., Live]) -> None:
    import time

    live = start_server(remind="1s", escalate_to="support-managers", escalate_after="2s")
    thread, messages = posted_run(live)
    time.sleep(1.1)
    counts = live.api("POST", "/api/sweep").json()
    assert counts["reminded"] == len(messages) and counts["escalated"] == 0, "the reminder comes first"
    time.sleep(1.0)
    counts = live.api("POST", "/api/sweep").json()
    assert counts["escalated"] == len(messages)
    assert live.api("POST", "/api/sweep").json()["escalated"] == 0, "once"
    proposals = live.svc.rt.store.find(thread_id=thread)
    assert {p.approver_group for p in proposals} == {"support-managers"} and states(live, thread) == {"pending"}
    for p in proposals:
        [event] = [e for e in live.svc.rt.audit.trail(p.id) if e.kind == "proposal.escalated"]
        assert event.data["from"] == "support-leads" and event.data["to"] == "support-managers"
    for message in live.slack.messages_in("approvals"):
        if message.get("thread_ts") is None:
            assert "support-managers" in str(message["blocks"]) and has_buttons(message)
    notes = [m for m in live.slack.messages_in("approvals") if "Escalated from *support-leads*" in m["text"]]
    assert len(notes) == len(messages) and all(m["thread_ts"] for m in notes)
    # The old group may no longer decide; the new one may.
    live.slack.click("approvals", messages[0]["ts"], "approve", LEAD)
    wait_for(lambda: live.slack.ephemerals_for(LEAD), what="refusal")
    assert "support-managers" in live.slack.ephemerals_for(LEAD)[0]["text"]
    for p in proposals:
        answer = live.api("POST", f"/api/proposals/{p.id}/decision",
                          json={"verdict": "approve", "actor": "cli:manager"})
        assert answer.status_code == 200
    wait_for(lambda: states(live, thread) == {"executed"}, what="executed")


def test_policy_escalation_is_validated(tmp_path: Any) -> None:
    from conftest import write_policy

    from signoff.errors import PolicyError
    from signoff.guardrails.policy import load_policy

    with pytest.raises(PolicyError, match="unknown group 'nobody'"):
        load_policy(write_policy(tmp_path / "a.yaml", 0.5, remind="1h", escalate_to="nobody"))
    with pytest.raises(PolicyError, match="no escalate_to"):
        load_policy(write_policy(tmp_path / "b.yaml", 0.5, escalate_after="1h"))
    with pytest.raises(PolicyError, match="bad duration"):
        load_policy(write_policy(tmp_path / "c.yaml", 0.5, escalate_to="support-managers", escalate_after="soon"))
    ok = load_policy(write_policy(tmp_path / "d.yaml", 0.5, escalate_to="support-managers", escalate_after="8h"))
    assert ok.action("ticket.set_team").escalate_to == "support-managers"


# --- the offline demo: the stand-in's UI and `signoff serve --slack-standin` -----------------------------


def test_standin_ui_lists_messages_and_its_buttons_deliver_signed_clicks(start_server: Callable[..., Live],
                                                                       odoo_standin: OdooStandIn) -> None:
    live = start_server()
    thread, messages = posted_run(live)
    page = live.http.get(f"{live.slack.url}/_fake/ui", params={"as": LEAD})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count("action='/_fake/click'") == 3 * len(messages) and "Approval needed" in page.text
    token = live.slack.ui_token
    forged = live.http.post(f"{live.slack.url}/_fake/click", data={
        "csrf": "wrong", "as": LEAD, "channel": "approvals", "ts": messages[0]["ts"], "action": "approve"})
    assert forged.status_code == 403 and states(live, thread) == {"pending"}
    for message in messages:
        answer = live.http.post(f"{live.slack.url}/_fake/click", data={
            "csrf": token, "as": LEAD, "channel": "approvals", "ts": message["ts"], "action": "approve"})
        assert answer.status_code == 303
    wait_for(lambda: states(live, thread) == {"executed"}, what="executed")
    assert len(ticket_writes(odoo_standin)) == len(messages)
    said = live.http.post(f"{live.slack.url}/_fake/say", data={"csrf": token, "as": LEAD, "text": "hello"})
    assert said.status_code == 303
    wait_for(lambda: any("triage 4312" in m["text"] for m in live.slack.messages_in("D" + LEAD[1:])), what="help")
    # The messages show "Executed" once the resumed run has refreshed them (just after the store says so).
    def shown() -> str | None:
        text = live.http.get(f"{live.slack.url}/_fake/ui", params={"as": LEAD}).text
        return text if "Executed" in text else None

    page = str(wait_for(shown, what="Executed shown"))
    assert "click: the app answered 200" in page


def test_serve_slack_standin_points_the_server_at_a_fresh_standin(settings: Any, tmp_path: Any) -> None:
    import yaml

    from signoff.guardrails.policy import load_policy
    from signoff.server.cli import start_slack_standin

    standin, pointed = start_slack_standin(settings, "0.0.0.0", 8123)
    try:
        assert pointed.slack_api_base_url == standin.api_url and standin.app_url == "http://127.0.0.1:8123/slack/events"
        assert pointed.slack_bot_token.get_secret_value() == standin.token  # type: ignore[union-attr]
        assert pointed.slack_signing_secret.get_secret_value() == standin.signing_secret  # type: ignore[union-attr]
        assert standin.signing_secret != "standin-signing-secret", "a generated secret"
        assert pointed.policy_path is not None and pointed.policy_path.parent == tmp_path
        policy = load_policy(pointed.policy_path)
        assert {a.channel for a in policy.actions.values()} == {"slack"}
        assert all(any(m.startswith("slack:") for m in members) for members in policy.groups.values())
        assert "groups" in yaml.safe_load(pointed.policy_path.read_text())
    finally:
        standin.stop()
