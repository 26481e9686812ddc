"""The state database seam: one connection API over the SQLite state file or the Postgres pool.

The server's own tables (web inbox users, API keys, idempotency keys, event subscriptions and the outbox,
Slack message bookkeeping, Odoo approval activities) and its read-only views over ``proposals`` and
``audit`` go through :class:`StateDB`, so ``signoff serve`` runs on whichever database holds the
proposals store and the audit log (:func:`signoff.guardrails.state.open_state`). No ORM; SQL is written
once, for both, with these rules:

* placeholders are ``?``; on Postgres they become ``%s`` (and a literal ``%`` becomes ``%%``);
* upserts are ``INSERT ... ON CONFLICT (...) DO NOTHING`` / ``DO UPDATE SET col = excluded.col``
  (SQLite >= 3.24 and Postgres both take that; never ``INSERT OR IGNORE``/``OR REPLACE``);
* timestamps of the server's tables are ISO-8601 text (UTC) or Unix seconds, computed in Python, never
  ``datetime('now')``/``now()``; no table needs an autoincrement key (ids are hashes or random);
* where the dialects really differ (JSON fields of a stored proposal, ``FOR UPDATE``, a prefix of the
  thread id), :class:`StateConn` has a small helper that returns the right SQL fragment.

On SQLite each module creates its tables with ``CREATE TABLE IF NOT EXISTS`` (:meth:`StateDB.ensure`);
on Postgres the tables come from the versioned migrations in :mod:`signoff.guardrails.postgres`.

Across workers: :meth:`StateConn.lock` serialises a critical section (``pg_advisory_xact_lock``; SQLite's
``BEGIN IMMEDIATE`` already serialises every write transaction), and :meth:`StateDB.try_lock` lets one
worker of many run a periodic job (``pg_try_advisory_lock``, session level; always granted on SQLite).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from signoff.guardrails.store import SqliteFile

if TYPE_CHECKING:
    from signoff.guardrails.postgres import PostgresDatabase

log = logging.getLogger(__name__)

Dialect = Literal["sqlite", "postgres"]
_PLACEHOLDER = re.compile(r"%|\?")


def to_postgres(sql: str) -> str:
    """``?`` placeholders to ``%s``, literal ``%`` to ``%%`` (none of our SQL has ``?`` in a string)."""
    return _PLACEHOLDER.sub(lambda m: "%s" if m.group() == "?" else "%%", sql)


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name`` (``sweep``, ``outbox.ingest``...)."""
    return int.from_bytes(hashlib.sha256(b"signoff-lock:" + name.encode()).digest()[:8], "big", signed=True)


class StateConn:
    """One connection (inside a transaction when opened with ``write=True``)."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw, self.dialect = raw, dialect

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgres"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement with ``?`` placeholders; returns a cursor (``fetchone``, ``fetchall``, ``rowcount``)."""
        if self.postgres:
            return self.raw.execute(to_postgres(sql), tuple(params))
        return self.raw.execute(sql, tuple(params))

    # -- dialect fragments --------------------------------------------------------------------------

    def json_field(self, name: str, column: str = "data") -> str:
        """SQL for field ``name`` (text) of the JSON object stored as text in ``column``."""
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"bad JSON field name {name!r}")
        if self.postgres:
            return f"(({column})::jsonb ->> '{name}')"
        return f"json_extract({column}, '$.{name}')"

    def thread_prefix(self, column: str = "thread_id") -> str:
        """SQL for the part of ``column`` before its first ``:`` (the agent of a thread id)."""
        if self.postgres:
            return f"split_part({column}, ':', 1)"
        return f"substr({column}, 1, instr({column}, ':') - 1)"

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` on Postgres (SQLite's write transaction already holds the lock)."""
        return " FOR UPDATE" if self.postgres else ""

    def timestamp(self, value: Any) -> Any:
        """A parameter compared with ``proposals.created_at`` (TIMESTAMPTZ on Postgres, ISO text on SQLite)."""
        return value if self.postgres else value.isoformat()

    def has_table(self, name: str) -> bool:
        if self.postgres:
            return self.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0] is True
        return self.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (name,)).fetchone() is not None

    # -- locks --------------------------------------------------------------------------------------

    def lock(self, name: str) -> None:
        """Serialise the rest of this write transaction with every other holder of ``name``."""
        if self.postgres:
            self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def try_lock(self, name: str) -> bool:
        """Like :meth:`lock`, but False at once when another transaction holds it (always True on SQLite)."""
        if not self.postgres:
            return True
        return bool(self.execute("SELECT pg_try_advisory_xact_lock(?)", (lock_key(name),)).fetchone()[0])


class StateDB:
    """The state database: the SQLite state file, or the Postgres pool of :class:`PostgresDatabase`."""

    def __init__(self, *, path: Path | None = None, postgres: PostgresDatabase | None = None) -> None:
        if (path is None) == (postgres is None):
            raise ValueError("a StateDB is either a SQLite path or a Postgres database")
        self.path, self.pg = path, postgres
        self.dialect: Dialect = "postgres" if postgres is not None else "sqlite"
        self._sqlite = SqliteFile(path) if path is not None else None

    @classmethod
    def sqlite(cls, path: Path) -> StateDB:
        return cls(path=path)

    @property
    def postgres(self) -> bool:
        return self.dialect == "postgres"

    def describe(self) -> str:
        return "postgres" if self.pg is not None else f"sqlite:{self.path}"

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[StateConn]:
        """A connection; ``write=True`` runs the block in one transaction (SQLite: ``BEGIN IMMEDIATE``)."""
        if self.pg is None:
            assert self._sqlite is not None
            with self._sqlite.connect(write=write) as conn:
                yield StateConn(conn, "sqlite")
            return
        with self.pg.pool.connection() as raw:
            if write:
                with raw.transaction():
                    yield StateConn(raw, "postgres")
            else:
                yield StateConn(raw, "postgres")

    def ensure(self, sqlite_schema: str) -> None:
        """Create a module's tables on SQLite (idempotent); on Postgres the migrations made them."""
        if self.pg is None:
            with self.connect() as conn:
                conn.raw.executescript(sqlite_schema)

    @contextmanager
    def try_lock(self, name: str) -> Iterator[bool]:
        """Hold the session-level lock ``name`` for the block if no other worker holds it (yields whether it
        does). On SQLite it is always granted: one process per state file keeps its current behaviour."""
        if self.pg is None:
            yield True
            return
        with self.pg.pool.connection() as raw:
            key = lock_key(name)
            row = raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            got = bool(row and row[0])
            try:
                yield got
            finally:
                if got:
                    try:
                        raw.execute("SELECT pg_advisory_unlock(%s)", (key,))
                    except Exception:  # the connection is gone, and its session lock with it
                        log.warning("could not release the %s lock; dropping the connection", name)
                        raw.close()


def as_statedb(db: StateDB | Path) -> StateDB:
    """Accept a StateDB or (as before the seam) the path of a SQLite state file."""
    return db if isinstance(db, StateDB) else StateDB.sqlite(Path(db))


@contextmanager
def statedb_for(settings: Any) -> Iterator[StateDB]:
    """The configured state database for a CLI command (a small pool on Postgres, closed after)."""
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        yield StateDB.sqlite(settings.state_db_path)
        return
    from signoff.guardrails.postgres import PostgresDatabase

    pg = PostgresDatabase(settings.database_url, max_size=2)
    try:
        yield StateDB(postgres=pg)
    finally:
        pg.close()
