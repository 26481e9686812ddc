"""The Odoo approval channel: a ``mail.activity`` on the target record, assigned to the approver.

For an action whose policy channel is ``odoo``, the pending proposal becomes an activity of type
"Signoff approval" (To-Do when that type is absent) on the record the write would change, assigned
to the first ``odoo:<uid>`` member of the approver group. The convention, spelled out in the note:

* **Mark as Done** approves (feedback starting with "reject" rejects, the rest of it is the reason);
* **Cancel** (deleting the activity) rejects.

The decision is learnt by polling (:meth:`OdooApprovalChannel.poll`; an Odoo webhook can only hint
that it is time to poll, its payload is never trusted) and goes through the same
:class:`~signoff.guardrails.approvals.Approvals` as every channel: group membership, separation of
duties and compare-and-set apply. A proposal decided elsewhere gets its activity marked done with the
outcome. Creating the activity needs a write credential: the channel uses the executor's login for
that one bookkeeping record; agents never hold it.

Exactly once: the activity's summary carries the proposal id, and the channel looks for it before it
creates one, so a crash between create and bookkeeping never yields a second activity.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signoff.domain import Decision, Proposal, utcnow
from signoff.errors import AlreadyDecided, InvalidDecision, NotAuthorised, OdooError
from signoff.guardrails.approvals import Approvals
from signoff.guardrails.audit import AuditLog
from signoff.guardrails.statedb import StateDB, as_statedb
from signoff.guardrails.store import ApprovalStore
from signoff.integrations.odoo import OdooReader, OdooWriter

log = logging.getLogger(__name__)
ACTOR = "system:odoo-channel"
APPROVAL_TYPE = "Signoff approval"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS odoo_activities (
    proposal_id TEXT PRIMARY KEY,
    activity_id INTEGER NOT NULL,
    approver_uid INTEGER NOT NULL,
    posted_at TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0
);
"""
_FEEDBACK = re.compile(r"Feedback:\s*(.*?)</p>", re.IGNORECASE | re.DOTALL)


@dataclass
class PollResult:
    posted: int = 0
    decided: int = 0
    closed: int = 0
    refused: int = 0


def _summary(p: Proposal) -> str:
    return f"[Signoff] approve {p.action} ({p.id})"


def _note(p: Proposal) -> str:
    key = next(iter(p.effective_args))
    rows = [
        f"<p><b>Proposed write</b>: {html.escape(p.target_model)}({p.target_id}).{html.escape(key)}: "
        f"{html.escape(str(p.current.get(key)))} &rarr; <b>{html.escape(str(p.effective_args[key]))}</b></p>",
        f"<p><b>Why</b>: {html.escape(p.rationale)}</p>",
        f"<p><b>Confidence</b>: {p.confidence:.2f}</p>" if p.confidence is not None else "",
        "<p>Mark this activity <b>Done</b> to approve. Mark it Done with feedback starting with "
        "<i>reject</i> (e.g. <i>reject: wrong team</i>), or <b>Cancel</b> it, to reject.</p>",
        f"<p>Proposal {html.escape(p.id)} &middot; policy {html.escape(str(p.policy_version))}</p>",
    ]
    return "".join(rows)


class OdooApprovalChannel:
    def __init__(self, state_db: StateDB | Path, store: ApprovalStore, audit: AuditLog, approvals: Approvals,
                 reader: OdooReader, writer_factory: Callable[[], OdooWriter]) -> None:
        self.db = as_statedb(state_db)
        self.db.ensure(_SCHEMA)
        self.store, self.audit, self.approvals, self.reader = store, audit, approvals, reader
        self._writer_factory = writer_factory
        self._writer: OdooWriter | None = None

    @property
    def writer(self) -> OdooWriter:
        if self._writer is None:
            self._writer = self._writer_factory()
        return self._writer

    # -- posting ------------------------------------------------------------------------------------

    def approver_uid(self, p: Proposal) -> int | None:
        for member in self.approvals.policy.members(p.approver_group):
            kind, _, value = member.partition(":")
            if kind == "odoo" and value.isdigit():
                return int(value)
        return None

    def _posted(self) -> dict[str, tuple[int, int, bool]]:
        with self.db.connect() as conn:
            rows = conn.execute("SELECT proposal_id, activity_id, approver_uid, closed FROM odoo_activities")
            return {r[0]: (int(r[1]), int(r[2]), bool(r[3])) for r in rows.fetchall()}

    def _activity_type(self) -> int | bool:
        rows = self.reader.search_read("mail.activity.type", [["name", "=", APPROVAL_TYPE]], ["id"], limit=1)
        if not rows:
            rows = self.reader.search_read("mail.activity.type", [["name", "=", "To-Do"]], ["id"], limit=1)
        return int(rows[0]["id"]) if rows else False

    def post(self, p: Proposal) -> int | None:
        """Create (or find) the approval activity of one pending proposal; its id, or None if impossible."""
        uid = self.approver_uid(p)
        if uid is None:
            self.audit.append("channel.unavailable", p.id, ACTOR,
                              {"channel": "odoo", "reason": f"group {p.approver_group!r} has no odoo:<uid> member"},
                              thread_id=p.thread_id)
            return None
        existing = self.writer.search_read("mail.activity", [["summary", "=", _summary(p)]], ["id"], limit=1)
        if existing:
            activity_id = int(existing[0]["id"])
        else:
            model = self.writer.search_read("ir.model", [["model", "=", p.target_model]], ["id"], limit=1)
            deadline = (p.expires_at or utcnow()).date().isoformat()
            activity_id = self.writer.create("mail.activity", {
                "res_model_id": model[0]["id"] if model else False, "res_model": p.target_model,
                "res_id": p.target_id, "activity_type_id": self._activity_type(), "summary": _summary(p),
                "note": _note(p), "user_id": uid, "date_deadline": deadline,
            })
        with self.db.connect(write=True) as conn:
            conn.execute("INSERT INTO odoo_activities (proposal_id, activity_id, approver_uid, posted_at)"
                         " VALUES (?, ?, ?, ?) ON CONFLICT (proposal_id) DO NOTHING",
                         (p.id, activity_id, uid, utcnow().isoformat()))
        self.audit.append("proposal.posted", p.id, ACTOR,
                          {"channel": "odoo", "activity": activity_id, "assignee": f"odoo:{uid}"},
                          thread_id=p.thread_id)
        return activity_id

    def post_pending(self) -> int:
        posted = self._posted()
        count = 0
        for p in self.store.find(states=("pending",)):
            if p.channel == "odoo" and p.id not in posted and self.post(p) is not None:
                count += 1
        return count

    # -- learning the decision ----------------------------------------------------------------------

    def _done_message(self, p: Proposal) -> dict[str, Any] | None:
        rows = self.reader.search_read(
            "mail.message",
            [["model", "=", p.target_model], ["res_id", "=", p.target_id], ["body", "ilike", p.id]],
            ["body", "author_id", "create_uid"], limit=1, order="id desc",
        )
        return rows[0] if rows else None

    def _outcome(self, p: Proposal, activity_id: int, uid: int) -> Decision | None:
        rows = self.writer.search_read("mail.activity", [["id", "=", activity_id]],
                                       ["active", "write_uid", "date_done"], context={"active_test": False})
        if rows and rows[0]["active"]:
            return None  # still open
        message = self._done_message(p)
        if rows or message:  # archived (done, kept) or deleted after a done message: Done
            who = rows[0]["write_uid"] if rows else (message or {}).get("create_uid")
            actor_uid = who[0] if isinstance(who, list) and who else uid
            feedback = ""
            if message and (m := _FEEDBACK.search(str(message["body"]))):
                feedback = html.unescape(m.group(1)).strip()
            if feedback.lower().startswith("reject"):
                reason = feedback[len("reject"):].lstrip(" :-") or "rejected in Odoo"
                return Decision(proposal_id=p.id, verdict="reject", actor=f"odoo:{actor_uid}", reason=reason,
                                channel="odoo")
            return Decision(proposal_id=p.id, verdict="approve", actor=f"odoo:{actor_uid}",
                            reason=feedback or None, channel="odoo")
        return Decision(proposal_id=p.id, verdict="reject", actor=f"odoo:{uid}",
                        reason="approval activity cancelled in Odoo", channel="odoo")

    def _close(self, p: Proposal, activity_id: int) -> None:
        """The proposal was decided elsewhere: mark its activity done with the outcome."""
        open_ = self.reader.search_read("mail.activity", [["id", "=", activity_id]], ["active"])
        if open_:
            at = p.decided_at.isoformat(timespec="seconds") if p.decided_at else "?"
            self.writer.call("mail.activity", "action_feedback", [activity_id],
                             feedback=f"{p.state} by {p.decided_by} at {at} (decided outside Odoo)")
        with self.db.connect(write=True) as conn:
            conn.execute("UPDATE odoo_activities SET closed = 1 WHERE proposal_id = ?", (p.id,))

    def poll(self) -> PollResult:
        """Post new approval activities, turn finished ones into decisions, close the decided elsewhere."""
        result = PollResult(posted=self.post_pending())
        for pid, (activity_id, uid, closed) in self._posted().items():
            if closed:
                continue
            p = self.store.get(pid)
            try:
                if p.state != "pending":
                    self._close(p, activity_id)
                    result.closed += 1
                    continue
                decision = self._outcome(p, activity_id, uid)
                if decision is None:
                    continue
                try:
                    self.approvals.decide(decision, reader=self.reader)
                    result.decided += 1
                except (NotAuthorised, InvalidDecision) as exc:
                    # Refused (and audited by Approvals): the proposal stays pending, so forget this
                    # activity and post a fresh one for a legitimate approver on the next poll.
                    result.refused += 1
                    log.warning("Odoo decision on %s refused: %s", pid, exc)
                    with self.db.connect(write=True) as conn:
                        conn.execute("DELETE FROM odoo_activities WHERE proposal_id = ?", (pid,))
                    continue
                except AlreadyDecided:
                    pass
                with self.db.connect(write=True) as conn:
                    conn.execute("UPDATE odoo_activities SET closed = 1 WHERE proposal_id = ?", (pid,))
            except OdooError as exc:
                log.warning("polling the Odoo activity of %s failed: %s", pid, exc)
        return result
