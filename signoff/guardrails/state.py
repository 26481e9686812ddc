"""Where the proposals store and the audit log live: SQLite files (default) or Postgres (``SIGNOFF_DATABASE_URL``).

Everything that needs the store or the audit log outside a :class:`signoff.agents.services.Runtime` (CLI
commands, the contracts agent on a file, eval exports) opens them here, so no command reads SQLite while
the configured state is in Postgres.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from signoff.config import Settings
from signoff.guardrails.audit import AuditLog, SqliteAuditLog
from signoff.guardrails.statedb import StateDB
from signoff.guardrails.store import ApprovalStore, SqliteApprovalStore

if TYPE_CHECKING:
    from signoff.guardrails.postgres import PostgresDatabase


@dataclass
class State:
    store: ApprovalStore
    audit: AuditLog
    statedb: StateDB
    """The same database for the server's own tables and views (:mod:`signoff.guardrails.statedb`)."""
    db: PostgresDatabase | None = None
    """The Postgres pool when ``database_url`` is set (close it with :meth:`close`)."""

    def close(self) -> None:
        if self.db is not None:
            self.db.close()


def open_state(settings: Settings) -> State:
    """The configured store and audit log; the caller closes the result (a no-op on SQLite)."""
    if settings.database_url:
        from signoff.guardrails.postgres import PostgresApprovalStore, PostgresAuditLog, PostgresDatabase

        db = PostgresDatabase(settings.database_url)
        return State(PostgresApprovalStore(db), PostgresAuditLog(db), StateDB(postgres=db), db)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return State(SqliteApprovalStore(settings.state_db_path), SqliteAuditLog(settings.state_db_path),
                 StateDB.sqlite(settings.state_db_path))


@contextmanager
def state(settings: Settings) -> Iterator[State]:
    opened = open_state(settings)
    try:
        yield opened
    finally:
        opened.close()
