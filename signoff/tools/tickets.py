"""Read tools for tickets: everything the triage agent may know, read through the read-only view.

Every read names its fields (never ``browse``); an agent holds only an :class:`OdooReader`.
"""

from __future__ import annotations

import html
import json
import re
from datetime import date
from pathlib import Path
from typing import Any

from signoff.domain import Customer, Ticket
from signoff.errors import DataError, OdooMissingError
from signoff.integrations.odoo import OdooReader

TICKET_FIELDS = ["id", "name", "description", "partner_id", "category_id", "team_id", "priority", "stage_id"]
_TAG = re.compile(r"<[^>]+>")


def html_to_text(value: Any) -> str:
    if not value:
        return ""
    return html.unescape(_TAG.sub(" ", str(value))).strip()


def _m2o_name(value: Any) -> str | None:
    return str(value[1]) if isinstance(value, list) and len(value) == 2 else None


def load_customer(reader: OdooReader, partner_id: int) -> Customer:
    partner = reader.read("res.partner", [partner_id], ["id", "name"])[0]
    subs = reader.search_read(
        "sale.order",
        [["partner_id", "=", partner_id], ["is_subscription", "=", True],
         ["subscription_state", "in", ["3_progress", "4_paused"]]],
        ["plan_id", "recurring_monthly"],
        limit=1, order="recurring_monthly desc",
    )
    overdue = reader.search_count(
        "account.move",
        [["partner_id", "=", partner_id], ["move_type", "=", "out_invoice"],
         ["payment_state", "in", ["not_paid", "partial"]], ["invoice_date_due", "<", date.today().isoformat()]],
    )
    return Customer(
        id=partner["id"],
        name=partner["name"],
        tier=_m2o_name(subs[0]["plan_id"]) if subs else None,
        recurring_monthly=float(subs[0]["recurring_monthly"]) if subs else None,
        overdue_invoices=overdue,
    )


def load_ticket(reader: OdooReader, ticket_id: int, *, db: str) -> Ticket:
    """A ticket with its customer (tier from the running subscription, overdue invoices)."""
    rows = reader.read("helpdesk.ticket", [ticket_id], TICKET_FIELDS)
    if not rows:
        raise OdooMissingError(f"helpdesk.ticket {ticket_id} does not exist", name="MissingError")
    row = rows[0]
    partner = row["partner_id"][0] if row["partner_id"] else None
    return Ticket(
        id=row["id"],
        db=db,
        subject=row["name"] or "",
        description=html_to_text(row["description"]),
        partner_id=partner,
        category=_m2o_name(row["category_id"]),
        team=_m2o_name(row["team_id"]),
        priority=row["priority"] or "1",
        customer=load_customer(reader, partner) if partner else None,
    )


def _stage_ids(reader: OdooReader, *, closed: bool) -> list[int]:
    return [int(r["id"]) for r in reader.search_read("helpdesk.ticket.stage", [["closed", "=", closed]], ["id"])]


def untriaged_ticket_ids(reader: OdooReader, *, limit: int | None = None) -> list[int]:
    """Open tickets nobody has categorised yet, oldest first."""
    rows = reader.search_read(
        "helpdesk.ticket",
        [["category_id", "=", False], ["stage_id", "in", _stage_ids(reader, closed=False)]],
        ["id"], limit=limit, order="id asc",
    )
    return [int(r["id"]) for r in rows]


def labelled_history(reader: OdooReader, *, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Resolved tickets with a category: the labelled history a triage model is fitted on."""
    rows = reader.search_read(
        "helpdesk.ticket",
        [["category_id", "!=", False], ["stage_id", "in", _stage_ids(reader, closed=True)]],
        ["name", "description", "category_id"], limit=limit, order="id asc",
    )
    texts = [html_to_text(r["description"]) or r["name"] for r in rows]
    return texts, [str(r["category_id"][1]) for r in rows]


def read_ticket_file(path: Path) -> list[Ticket]:
    """Tickets from a JSONL file: ``{"id", "text"}`` or ``{"id", "subject", "description"}`` per line."""
    tickets: list[Ticket] = []
    seen: dict[int, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8 JSONL") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not an object")
            subject = rec.get("subject") or rec.get("text")
            if not subject:
                raise ValueError("needs 'text' or 'subject'")
            for name in ("text", "subject", "description"):
                if rec.get(name) is not None and not isinstance(rec[name], str):
                    raise ValueError(f"'{name}' must be a string, not {type(rec[name]).__name__}")
            given = rec.get("id", n)
            if isinstance(given, bool) or not (isinstance(given, int) or str(given).isdigit()) or int(given) < 1:
                raise ValueError(f"'id' must be a positive whole number, not {given!r} (or leave it out: the "
                                 "line number is used)")
            if int(given) in seen:
                raise ValueError(f"ticket id {int(given)} is also on line {seen[int(given)]} (ids must be unique; "
                                 "a line without an id gets its line number)")
            seen[int(given)] = n
            tickets.append(Ticket(
                id=int(given),
                db="file", subject=str(subject)[:200],
                description=str(rec.get("description") or rec.get("text") or ""),
            ))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}:{n}: {exc}") from exc
    return tickets
