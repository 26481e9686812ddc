"""The renewal terms the contracts agent read from a contract, kept per Odoo record for the renewal agent.

When the contracts agent analyses a contract attached to an Odoo record (a subscription's ``sale.order``),
it records what a renewal depends on: the notice deadline (expiration minus the notice period) and
whether the contract renews automatically. The renewal-risk agent reads them back as two features,
``notice_days_left`` and ``auto_renew`` (:func:`signoff.tools.accounts.load_account`). Only what the agent
*found* (at or above its threshold) is recorded; a term that needs review is recorded as unknown, never
guessed. A contract analysed from a file (no Odoo record) is not recorded.

One row per (Odoo database, record, attachment); when a record has several analysed contracts, the most
recently analysed one speaks for it. Stored in the state database (SQLite file or Postgres, migration 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from signoff.domain import ContractSummary, utcnow
from signoff.guardrails.statedb import StateDB

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS contract_terms (
    db TEXT NOT NULL,
    res_model TEXT NOT NULL,
    res_id INTEGER NOT NULL,
    attachment_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notice_deadline TEXT,
    auto_renewal INTEGER,
    model_version TEXT NOT NULL,
    analysed_at TEXT NOT NULL,
    PRIMARY KEY (db, res_model, res_id, attachment_id)
);
"""


@dataclass(frozen=True)
class RecordedTerms:
    """The renewal terms of the most recently analysed contract of one Odoo record."""

    name: str
    """The attachment's name."""
    attachment_id: int
    thread_id: str
    notice_deadline: date | None
    auto_renewal: bool | None
    """None: the renewal clause was not found (or needs review)."""
    model_version: str
    analysed_at: str


def renewal_terms(summary: ContractSummary) -> tuple[str | None, bool | None]:
    """(notice deadline, auto-renewal) as the agent found them; None where it found nothing."""
    renewal = summary.term("renewal_term")
    auto: bool | None = None
    if renewal is not None and renewal.status == "found" and isinstance(renewal.value, dict):
        auto = bool(renewal.value.get("auto_renewal"))
    return summary.notice_deadline, auto


class ContractTermsStore:
    """Read and write :class:`RecordedTerms` in the state database."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.ensure(SQLITE_SCHEMA)

    def record(self, summary: ContractSummary) -> bool:
        """Keep the renewal terms of an analysed Odoo contract; False (nothing kept) for a file."""
        if summary.attachment_id is None or not summary.res_model or not summary.res_id:
            return False
        deadline, auto = renewal_terms(summary)
        with self.db.connect(write=True) as conn:
            conn.execute(
                "INSERT INTO contract_terms (db, res_model, res_id, attachment_id, name, thread_id, notice_deadline,"
                " auto_renewal, model_version, analysed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (db, res_model, res_id, attachment_id) DO UPDATE SET name = excluded.name,"
                " thread_id = excluded.thread_id, notice_deadline = excluded.notice_deadline,"
                " auto_renewal = excluded.auto_renewal, model_version = excluded.model_version,"
                " analysed_at = excluded.analysed_at",
                (summary.db, summary.res_model, summary.res_id, summary.attachment_id, summary.name,
                 summary.thread_id, deadline, None if auto is None else int(auto), summary.model_version,
                 utcnow().isoformat()),
            )
        return True

    def latest(self, db: str, res_model: str, res_id: int) -> RecordedTerms | None:
        """The most recently analysed contract of the record, or None when none was analysed."""
        with self.db.connect() as conn:
            row: Any = conn.execute(
                "SELECT name, attachment_id, thread_id, notice_deadline, auto_renewal, model_version, analysed_at"
                " FROM contract_terms WHERE db = ? AND res_model = ? AND res_id = ?"
                " ORDER BY analysed_at DESC, attachment_id DESC LIMIT 1", (db, res_model, res_id)).fetchone()
        if row is None:
            return None
        return RecordedTerms(
            name=str(row[0]), attachment_id=int(row[1]), thread_id=str(row[2]),
            notice_deadline=date.fromisoformat(row[3]) if row[3] else None,
            auto_renewal=None if row[4] is None else bool(row[4]), model_version=str(row[5]),
            analysed_at=str(row[6]))
