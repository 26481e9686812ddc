"""Create actions: an activity (plus a chatter note) per approved proposal, exactly once by a marker.

A field write is idempotent; a create is not. So every record these actions create carries the
proposal id as a marker, ``[signoff:<proposal id>]``, and the executor looks for it before creating
(DESIGN.md "Exactly once", step 3), and after a crash reads it back to reconcile (step 4).

* ``account.csm_followup`` on ``res.partner``: a To-Do ``mail.activity`` for the account owner,
  "Renewal risk follow-up: <reason> [signoff:p_...]", due ``deadline``; plus an internal note on the
  customer's chatter with the drivers.
* ``account.retention_offer`` on the subscription (``sale.order``): a To-Do ``mail.activity`` for the
  account owner, "Retention offer: <amount> <currency> [signoff:p_...]", and an internal note on the
  subscription stating the approved amount and who approved it. Nothing changes the price: the
  owner applies the offer (discount, credit note) in Odoo, where the activity tells them to.

Applied means: the activity exists (open, or archived as done), or a completed activity's "done"
message carries the marker; and the note exists. A CSM who marks the activity done the same minute
does not cause a second one.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import date
from typing import Any

from signoff.errors import ExecutionError, InvalidDecision
from signoff.integrations.odoo import OdooReader, OdooWriterPort


def marker(proposal_id: str) -> str:
    return f"[signoff:{proposal_id}]"


@dataclass(frozen=True)
class ActivityAction:
    name: str
    target_model: str
    title: str
    """Start of the activity summary, e.g. ``Retention offer``."""
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    """Unused (no single choice argument); present so every action has the same shape."""
    editable: tuple[str, ...] | None = None
    """The arguments an approver may change in an edit (None: all of them). The rest are kept as proposed."""

    # -- validation ------------------------------------------------------------------------------

    def validate(self, args: dict[str, Any], reader: OdooReader | None = None) -> dict[str, Any]:
        unknown = set(args) - set(self.required) - set(self.optional)
        missing = [k for k in self.required if k not in args]
        if unknown or missing:
            problems = ([f"unknown field(s) {', '.join(sorted(unknown))}"] if unknown else []) + (
                [f"missing field(s) {', '.join(missing)}"] if missing else [])
            editable = f"; editable: {', '.join(self.editable)}" if self.editable else ""
            raise InvalidDecision(f"{self.name}: {'; '.join(problems)} (it takes "
                                  f"{', '.join(self.required + self.optional)}{editable})")
        out: dict[str, Any] = {}
        for key, value in args.items():
            out[key] = self._check(key, value)
        if reader is not None and out.get("owner_uid"):
            if not reader.search_read("res.users", [["id", "=", out["owner_uid"]]], ["id"], limit=1):
                raise InvalidDecision(f"no res.users with id {out['owner_uid']} in Odoo")
        return out

    def _check(self, key: str, value: Any) -> Any:
        if key == "amount":
            try:
                amount = float(value)
            except (TypeError, ValueError):
                raise InvalidDecision(f"amount must be a number, got {value!r}") from None
            if not math.isfinite(amount) or amount <= 0:
                raise InvalidDecision("amount must be positive")
            return round(amount, 2)
        if key == "owner_uid":
            if value is None or value is False or value == "":
                return None
            # A whole positive number (JSON 5, or "5" from a form / the CLI); never 5.9 -> 5, True -> 1.
            if isinstance(value, bool) or not isinstance(value, int | str) or \
                    not str(value).strip().isdigit() or not 0 < int(value) < 2**31:
                raise InvalidDecision(f"owner_uid must be a user id (a positive whole number), got {value!r}")
            return int(value)
        if key == "deadline":
            try:
                return date.fromisoformat(str(value)).isoformat()
            except ValueError:
                raise InvalidDecision(f"deadline must be YYYY-MM-DD, got {value!r}") from None
        if not isinstance(value, str) or not value.strip():
            raise InvalidDecision(f"{key} must be a non-empty string")
        if len(value) > 2000:
            raise InvalidDecision(f"{key} is longer than 2000 characters")
        return value.strip()

    # -- what gets written -----------------------------------------------------------------------

    def summary(self, args: dict[str, Any], proposal_id: str) -> str:
        if "amount" in args:
            head = f"{self.title}: {args['amount']:,.2f} {args.get('currency', '')}".rstrip()
        else:
            head = f"{self.title}: {args.get('reason', '')}"[:150]
        return f"{head} {marker(proposal_id)}"

    def note(self, args: dict[str, Any], proposal_id: str) -> str:
        parts = [f"<p><b>{html.escape(self.title)}</b> (approved in Signoff)</p>"]
        if "amount" in args:
            parts.append(f"<p>Amount: <b>{args['amount']:,.2f} {html.escape(str(args.get('currency', '')))}</b>"
                         " &mdash; apply it as a discount or credit note; nothing was changed automatically.</p>")
        for key in ("reason", "drivers", "details"):
            if args.get(key):
                parts.append(f"<p>{key.capitalize()}: {html.escape(str(args[key]))}</p>")
        parts.append(f"<p>{html.escape(marker(proposal_id))}</p>")
        return "".join(parts)

    def chatter(self, args: dict[str, Any], proposal_id: str) -> str:
        """The internal note, as plain text (``message_post`` escapes it on every Odoo version)."""
        lines = [f"{self.title} (approved in Signoff)."]
        if "amount" in args:
            lines.append(f"Amount: {args['amount']:,.2f} {args.get('currency', '')}; apply it as a discount or credit "
                         "note, nothing was changed automatically.")
        lines += [f"{key.capitalize()}: {args[key]}" for key in ("reason", "drivers", "details") if args.get(key)]
        return "\n".join([*lines, marker(proposal_id)])

    # -- exactly once ----------------------------------------------------------------------------

    def _activity(self, reader: OdooReader, target_id: int, proposal_id: str) -> int | None:
        rows = reader.search_read(
            "mail.activity",
            [["res_model", "=", self.target_model], ["res_id", "=", target_id],
             ["summary", "ilike", marker(proposal_id)], ["active", "in", [True, False]]],
            ["id"], limit=1,
        )
        return int(rows[0]["id"]) if rows else None

    def _messages(self, reader: OdooReader, target_id: int, proposal_id: str) -> list[dict[str, Any]]:
        return reader.search_read(
            "mail.message",
            [["model", "=", self.target_model], ["res_id", "=", target_id], ["body", "ilike", marker(proposal_id)]],
            ["id", "message_type"],
        )

    def _state(self, reader: OdooReader, target_id: int, proposal_id: str) -> tuple[int | bool | None, int | None]:
        """(activity id, True if done and gone, or None; our note's id or None)."""
        messages = self._messages(reader, target_id, proposal_id)
        note = next((int(m["id"]) for m in messages if m.get("message_type") == "comment"), None)
        activity: int | bool | None = self._activity(reader, target_id, proposal_id)
        if activity is None and any(m.get("message_type") == "notification" for m in messages):
            activity = True  # completed and deleted (Odoo 17/18 without keep_done): its done message remains
        return activity, note

    def is_applied(self, reader: OdooReader, target_id: int, args: dict[str, Any], *, marker_id: str = "") -> bool:
        if not marker_id:
            raise ExecutionError(f"{self.name} needs the proposal id as its marker")
        activity, note = self._state(reader, target_id, marker_id)
        return activity is not None and note is not None

    def apply(self, writer: OdooWriterPort, target_id: int, args: dict[str, Any], *,
              marker_id: str = "") -> dict[str, Any]:
        if not marker_id:
            raise ExecutionError(f"{self.name} needs the proposal id as its marker")
        activity, note = self._state(writer, target_id, marker_id)
        created: list[str] = []
        if activity is None:
            model = writer.search_read("ir.model", [["model", "=", self.target_model]], ["id"], limit=1)
            todo = writer.search_read("mail.activity.type", [["name", "=", "To-Do"]], ["id"], limit=1)
            vals: dict[str, Any] = {
                "res_model_id": model[0]["id"] if model else False, "res_model": self.target_model,
                "res_id": target_id, "activity_type_id": todo[0]["id"] if todo else False,
                "summary": self.summary(args, marker_id), "note": self.note(args, marker_id),
                "date_deadline": args.get("deadline") or date.today().isoformat(),
            }
            if args.get("owner_uid"):
                vals["user_id"] = int(args["owner_uid"])
            activity = writer.create("mail.activity", vals)
            created.append("activity")
        if note is None:
            note = writer.message_post(self.target_model, target_id, self.chatter(args, marker_id),
                                       subtype_xmlid="mail.mt_note")
            created.append("note")
        return {"model": self.target_model, "id": target_id, "activity": activity, "note": note,
                "created": created, "marker": marker(marker_id)}


ACTIVITY_ACTIONS: tuple[ActivityAction, ...] = (
    ActivityAction("account.csm_followup", "res.partner", "Renewal risk follow-up",
                   required=("reason", "deadline"), optional=("owner_uid", "drivers"),
                   editable=("reason", "deadline", "owner_uid")),
    ActivityAction("account.retention_offer", "sale.order", "Retention offer",
                   required=("amount", "currency", "deadline"), optional=("owner_uid", "reason", "drivers"),
                   editable=("amount", "deadline", "owner_uid", "reason")),
    # contracts agent: on the sale order the contract is attached to
    ActivityAction("contract.renewal_reminder", "sale.order", "Contract renewal decision",
                   required=("reason", "deadline"), optional=("owner_uid", "details")),
    ActivityAction("contract.legal_review", "sale.order", "Legal review",
                   required=("reason", "deadline"), optional=("owner_uid", "details")),
)
