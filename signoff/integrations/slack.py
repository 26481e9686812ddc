"""Slack as an approval channel: Block Kit views of a proposal, and where each one was posted.

A proposal whose policy channel is ``slack`` is posted once (a row per proposal in the
``slack_messages`` table of the state database reserves it before the post, so two workers never post
it twice); its message is updated in place after a decision (buttons gone, who and when shown).
Buttons carry the proposal id only: the click is authorised and decided server-side.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from signoff.domain import PRIORITY_NAMES, Proposal, utcnow
from signoff.guardrails.actions import ACTIONS
from signoff.guardrails.statedb import StateDB, as_statedb

log = logging.getLogger(__name__)

STATE_ICONS = {"approved": ":white_check_mark:", "executed": ":white_check_mark:", "executing": ":hourglass:",
               "rejected": ":no_entry_sign:", "expired": ":alarm_clock:", "cancelled": ":heavy_minus_sign:",
               "failed": ":warning:", "edited": ":pencil2:"}


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _show(value: Any, arg: str) -> str:
    if value in (None, False, ""):
        return "(empty)"
    if arg == "priority" and str(value) in PRIORITY_NAMES:
        return f"{PRIORITY_NAMES[str(value)]} ({value})"
    return str(value)


def describe(p: Proposal) -> str:
    """``category: (empty) -> get_refund`` for the approver's eyes."""
    arg = next(iter(p.effective_args))
    return f"{arg}: {_show(p.current.get(arg), arg)} → {_show(p.effective_args[arg], arg)}"


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "?"


def who(actor: str | None) -> str:
    if actor and actor.startswith("slack:"):
        return f"<@{actor.split(':', 1)[1]}>"
    return actor or "unknown"


def _target(p: Proposal, *, capital: bool = False) -> str:
    """``ticket 42`` / ``res.partner(7)``: what the proposal writes to, for people."""
    if p.target_model == "helpdesk.ticket":
        return f"{'T' if capital else 't'}icket {p.target_id}"
    return f"{p.target_model}({p.target_id})"


def approval_blocks(p: Proposal) -> tuple[str, list[dict[str, Any]]]:
    """The approval message: what will be written, why, confidence, evidence, the diff, and the buttons."""
    arg = next(iter(p.args))
    text = f"Approval needed: {p.action} on {p.target_model}({p.target_id}): {describe(p)}"
    confidence = f"{p.confidence:.2f}" if p.confidence is not None else "explicit rule"
    diff = (f"```{p.target_model}({p.target_id}).{arg}\n- {_show(p.current.get(arg), arg)}\n"
            f"+ {_show(p.args[arg], arg)}```")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(f"Approval needed: {p.action}", 150)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
            f"*{_target(p, capital=True)}* · write `{p.target_model}({p.target_id})`\n{diff}", 3000)},
         "fields": [{"type": "mrkdwn", "text": f"*Confidence*\n{confidence}"},
                    {"type": "mrkdwn", "text": f"*Approvers*\n{p.approver_group}"},
                    {"type": "mrkdwn", "text": f"*Expires*\n{_when(p.expires_at)}"},
                    {"type": "mrkdwn", "text": f"*Policy / model*\n{p.policy_version} / {p.model_version}"}]},
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*Why*\n{p.rationale or '(no rationale)'}",
                                                                      3000)}},
    ]
    if p.evidence:
        lines = [f"• {n.get('similarity', 0):.2f} `{n.get('label')}`: {_clip(str(n.get('text', '')), 140)}"
                 for n in p.evidence[:3]]
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip("*Similar resolved tickets*\n" + "\n".join(lines),
                                                                 3000)}})
    blocks += [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(
            f"Proposed by *{p.requested_by}* · proposal `{p.id}` · run `{p.thread_id}`", 2000)}]},
        {"type": "actions", "block_id": "approval_actions", "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": p.id,
             "text": {"type": "plain_text", "text": "Approve"},
             "confirm": {"title": {"type": "plain_text", "text": "Apply this change?"},
                         "text": {"type": "mrkdwn", "text": _clip(f"Writes {describe(p)} to {_target(p)}.",
                                                                  300)},
                         "confirm": {"type": "plain_text", "text": "Approve"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}},
            {"type": "button", "action_id": "edit", "value": p.id, "text": {"type": "plain_text", "text": "Edit…"}},
            {"type": "button", "action_id": "reject", "style": "danger", "value": p.id,
             "text": {"type": "plain_text", "text": "Reject…"}},
        ]},
    ]
    return text, blocks


def decided_blocks(p: Proposal) -> tuple[str, list[dict[str, Any]]]:
    """The same message once decided: no buttons; who decided, when, and what happened."""
    text, blocks = approval_blocks(p)
    blocks = [b for b in blocks if b["type"] != "actions"]
    icon = STATE_ICONS.get(p.state, ":information_source:")
    line = f"{icon} *{p.state.capitalize()}* by {who(p.decided_by)} at {_when(p.decided_at)}"
    if p.edited_args is not None:
        line += f" · edited to {describe(p)}"
    if p.decision_reason:
        line += f" · reason: {_clip(p.decision_reason, 500)}"
    if p.state == "failed" and p.error:
        line += f" · execution failed: {_clip(p.error, 300)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(line, 2000)}]})
    return f"{p.state}: {text}", blocks


def reject_modal(p: Proposal, channel: str, ts: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": "reject_reason",
        "title": {"type": "plain_text", "text": "Reject proposal"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"proposal": p.id, "channel": channel, "ts": ts}),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"Reject *{describe(p)}* on ticket "
                                                                         f"{p.target_id}?", 3000)}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
             "element": {"type": "plain_text_input", "action_id": "reason_input", "multiline": True,
                         "max_length": 2000}},
        ],
    }


def edit_modal(p: Proposal, channel: str, ts: str) -> dict[str, Any]:
    action = ACTIONS.get(p.action)
    editable = getattr(action, "editable", None)
    arg = next((k for k in p.args if editable is None or k in editable), next(iter(p.args)))
    element: dict[str, Any]
    if action is not None and action.choices:
        options = [{"text": {"type": "plain_text", "text": _show(c, arg)}, "value": c} for c in action.choices]
        element = {"type": "static_select", "action_id": "value_input", "options": options,
                   "initial_option": next((o for o in options if o["value"] == str(p.args[arg])), options[0])}
    else:
        element = {"type": "plain_text_input", "action_id": "value_input", "initial_value": str(p.args[arg]),
                   "max_length": 200}
    return {
        "type": "modal", "callback_id": "edit_proposal",
        "title": {"type": "plain_text", "text": "Edit and approve"},
        "submit": {"type": "plain_text", "text": "Approve edit"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"proposal": p.id, "channel": channel, "ts": ts, "arg": arg}),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(
                f"{_target(p, capital=True)}: proposed {describe(p)}. The new value is checked by the same "
                "guardrails before it is written.", 3000)}},
            {"type": "input", "block_id": "value", "label": {"type": "plain_text", "text": arg}, "element": element},
            {"type": "input", "block_id": "reason", "optional": True,
             "label": {"type": "plain_text", "text": "Why the change (optional)"},
             "element": {"type": "plain_text_input", "action_id": "reason_input", "max_length": 2000}},
        ],
    }


# --- where each proposal was posted ----------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS slack_messages (
    proposal_id TEXT PRIMARY KEY,
    channel TEXT,
    ts TEXT,
    posted_at TEXT NOT NULL,
    reminded_at TEXT,
    shown_state TEXT
);
CREATE TABLE IF NOT EXISTS slack_seen (
    key TEXT PRIMARY KEY,
    at TEXT NOT NULL
);
"""


@dataclass
class PostedMessage:
    proposal_id: str
    channel: str | None
    ts: str | None
    posted_at: datetime
    reminded_at: datetime | None
    shown_state: str | None


class SlackMessages:
    """The ``slack_messages`` and ``slack_seen`` tables in the state database (SQLite or Postgres; safe
    across processes: a reservation and a seen key are single inserts that only one caller wins)."""

    def __init__(self, db: StateDB | Path) -> None:
        self.db = as_statedb(db)
        self.db.ensure(_SCHEMA)

    def reserve(self, proposal_id: str) -> bool:
        """Claim the right to post this proposal; False when it is (being) posted already."""
        with self.db.connect(write=True) as conn:
            cur = conn.execute("INSERT INTO slack_messages (proposal_id, posted_at) VALUES (?, ?)"
                               " ON CONFLICT (proposal_id) DO NOTHING", (proposal_id, utcnow().isoformat()))
            return cur.rowcount == 1

    def release(self, proposal_id: str) -> None:
        with self.db.connect(write=True) as conn:
            conn.execute("DELETE FROM slack_messages WHERE proposal_id = ? AND ts IS NULL", (proposal_id,))

    def posted(self, proposal_id: str, channel: str, ts: str, state: str) -> None:
        with self.db.connect(write=True) as conn:
            conn.execute("UPDATE slack_messages SET channel = ?, ts = ?, shown_state = ? WHERE proposal_id = ?",
                         (channel, ts, state, proposal_id))

    def shown(self, proposal_id: str, state: str) -> None:
        with self.db.connect(write=True) as conn:
            conn.execute("UPDATE slack_messages SET shown_state = ? WHERE proposal_id = ?", (state, proposal_id))

    def reminded(self, proposal_id: str) -> None:
        with self.db.connect(write=True) as conn:
            conn.execute("UPDATE slack_messages SET reminded_at = ? WHERE proposal_id = ?",
                         (utcnow().isoformat(), proposal_id))

    def get(self, proposal_id: str) -> PostedMessage | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT proposal_id, channel, ts, posted_at, reminded_at, shown_state "
                               "FROM slack_messages WHERE proposal_id = ?", (proposal_id,)).fetchone()
        if not row:
            return None
        return PostedMessage(row[0], row[1], row[2], datetime.fromisoformat(row[3]),
                             datetime.fromisoformat(row[4]) if row[4] else None, row[5])

    def by_message(self, channel: str, ts: str) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT proposal_id FROM slack_messages WHERE channel = ? AND ts = ?",
                               (channel, ts)).fetchone()
        return str(row[0]) if row else None

    def first_time(self, key: str, *, keep: timedelta = timedelta(hours=1)) -> bool:
        """Remember ``key`` (an event id, a click); False when it was seen within ``keep``."""
        now = utcnow()
        with self.db.connect(write=True) as conn:
            conn.execute("DELETE FROM slack_seen WHERE at < ?", ((now - keep).isoformat(),))
            cur = conn.execute("INSERT INTO slack_seen (key, at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                               (key, now.isoformat()))
            return cur.rowcount == 1


class SlackApprovalChannel:
    """Posts proposals to Slack and keeps their messages in step with the store."""

    def __init__(self, client: WebClient, messages: SlackMessages, channel: str) -> None:
        self.client, self.messages, self.channel = client, messages, channel

    def post(self, p: Proposal) -> PostedMessage | None:
        """Post the approval message once; None when another worker posted (or is posting) it."""
        if not self.messages.reserve(p.id):
            return None
        text, blocks = approval_blocks(p)
        try:
            response = self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)
        except SlackApiError:
            self.messages.release(p.id)
            raise
        channel, ts = str(response["channel"]), str(response["ts"])
        self.messages.posted(p.id, channel, ts, p.state)
        return self.messages.get(p.id)

    def refresh(self, p: Proposal) -> bool:
        """Show the proposal's current state on its message (no buttons once decided)."""
        posted = self.messages.get(p.id)
        if posted is None or posted.ts is None or posted.channel is None:
            return False
        text, blocks = approval_blocks(p) if p.state == "pending" else decided_blocks(p)
        self.client.chat_update(channel=posted.channel, ts=posted.ts, text=text, blocks=blocks)
        self.messages.shown(p.id, p.state)
        return True

    def remind(self, p: Proposal) -> bool:
        posted = self.messages.get(p.id)
        if posted is None or posted.ts is None or posted.channel is None:
            return False
        self.client.chat_postMessage(
            channel=posted.channel, thread_ts=posted.ts,
            text=(f":bell: Reminder: still waiting for *{p.approver_group}* to decide {describe(p)} on "
                  f"{_target(p)} (expires {_when(p.expires_at)})."))
        self.messages.reminded(p.id)
        return True

    def escalated(self, p: Proposal, previous: str, members: list[str]) -> bool:
        """A thread reply on the approval message: re-routed from ``previous`` to ``p.approver_group``."""
        posted = self.messages.get(p.id)
        if posted is None or posted.ts is None or posted.channel is None:
            return False
        mentions = " ".join(who(m) for m in members if m.startswith("slack:"))
        self.client.chat_postMessage(
            channel=posted.channel, thread_ts=posted.ts, reply_broadcast=True,
            text=(f":arrow_double_up: Escalated from *{previous}* to *{p.approver_group}*"
                  + (f" ({mentions})" if mentions else "") + f": please decide {describe(p)} on "
                  f"{_target(p)} (expires {_when(p.expires_at)})."))
        return True

    def tell(self, channel: str, user: str, text: str) -> None:
        """An ephemeral message only ``user`` sees."""
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            log.warning("could not tell %s in %s: %s", user, channel, exc)
