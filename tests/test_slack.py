"""Slack end to end: the Slack stand-in (real HTTP, real HMAC signatures) drives Bolt inside the server.

A click travels: stand-in -> signed POST /slack/events -> Bolt (verify, ack) -> decide -> resume ->
executor -> Odoo stand-in write (counted in its call log) -> chat.update on the stand-in.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import LEAD, OUTSIDER, Live, new_ticket_ids, wait_for

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
