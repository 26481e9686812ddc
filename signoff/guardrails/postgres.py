"""Postgres adapters of the proposals store and the audit log (``SIGNOFF_DATABASE_URL``).

One :class:`PostgresDatabase` (a psycopg 3 :class:`~psycopg_pool.ConnectionPool`) is shared by
:class:`PostgresApprovalStore` and :class:`PostgresAuditLog`; both satisfy the same protocols as the SQLite
adapters and ``tests/test_store.py`` runs the same assertions on them.

* Compare-and-set: :meth:`PostgresApprovalStore.transition` locks the row (``SELECT ... FOR UPDATE``) in a
  transaction, so of several workers deciding one proposal exactly one sees ``pending``.
* Claims: one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE stale`` statement, timed by the database's clock
  (workers on several machines need not agree on the time).
* The audit chain: every append takes a transaction-level advisory lock first, so appends from any number
  of workers are serialised and the chain stays linear; UPDATE, DELETE and TRUNCATE are refused by triggers.
* Schema: SQL migrations run by yoyo-migrations (the files in :data:`MIGRATIONS_DIR`), applied at startup
  by :func:`migrate` under an advisory lock and recorded in yoyo's ``_yoyo_migration`` table, in the
  connection's current schema. Add a migration, never edit one that has shipped. A database migrated by the
  hand-rolled runner this replaced (``signoff_schema_migrations``) is adopted, not migrated again.
  ``signoff db status`` and ``signoff db migrate`` show and apply them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool
from yoyo import default_migration_table, read_migrations
from yoyo.backends import DatabaseBackend, PostgresqlPsycopgBackend
from yoyo.connections import DatabaseURI
from yoyo.migrations import MigrationList

from signoff.domain import AuditEvent, Proposal, canonical_json, utcnow
from signoff.errors import ConfigError, ProposalNotFound
from signoff.guardrails.audit import GENESIS, _event_hash, _row_to_event, verify_chain
from signoff.guardrails.owner import owner_gone, process_owner
from signoff.guardrails.pgcheck import check_database_url
from signoff.guardrails.store import _holds

log = logging.getLogger(__name__)

#: Advisory lock keys (one 64-bit namespace per database; arbitrary, fixed forever).
MIGRATION_LOCK = 0x5157_0001
AUDIT_LOCK = 0x5157_0002

#: The schema: yoyo-migrations SQL files, applied in ``-- depends:`` order, each once. Add a file, never
#: edit one that has shipped (yoyo records a migration by its id, the file name without ``.sql``).
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: The table of the hand-rolled runner yoyo replaced, and its versions as yoyo migration ids: a database
#: it migrated is adopted (its versions marked applied in yoyo's table, the DDL not run again).
LEGACY_TABLE = "signoff_schema_migrations"
LEGACY_VERSIONS = {1: "0001_store_audit", 2: "0002_server_tables", 3: "0003_contract_terms"}

_read_lock = threading.Lock()
_read: Any = None


def migrations() -> Any:
    """Signoff's migrations (a yoyo ``MigrationList``), read and loaded once per process.

    Once, under a lock: yoyo resolves ``-- depends:`` through one process-wide registry of migration
    objects, so two threads reading the folder at once could mix each other's objects.
    """
    global _read
    with _read_lock:
        if _read is None:
            found = read_migrations(str(MIGRATIONS_DIR))
            for m in found:
                m.load()
            _read = found
        return _read


class _YoyoBackend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend on a connection Signoff opened itself.

    yoyo's ``get_backend(uri)`` splits a URL into ``connect()`` keywords: a key=value conninfo (what
    ``SIGNOFF_DATABASE_URL`` may be) does not parse at all, and neither do several hosts or a socket
    directory. Handed our connection, yoyo sees the conninfo exactly as given (``options=-c search_path=...``
    included): its tables and the migrations land in the connection's current schema.
    """

    # Several workers may start at once: no "already exists" error (and server log line) on every start.
    create_lock_table_sql = DatabaseBackend.create_lock_table_sql.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS")

    def __init__(self, conn: Connection[Any]) -> None:
        self._given = conn
        info = conn.info
        uri = DatabaseURI("postgresql+psycopg", info.user, None, info.host, info.port, info.dbname, {})
        super().__init__(uri, default_migration_table)

    def connect(self, dburi: Any) -> Connection[Any]:
        return self._given

    def _check_transactional_ddl(self) -> bool:
        return True  # Postgres: yoyo's probe would create and drop a table at every startup

    def copy(self) -> Any:  # pragma: no cover - apply_one's separate connection; see migrate()
        raise NotImplementedError("Signoff applies migrations on its own connection (signoff.guardrails.postgres)")

    def get_log_data(self, migration: Any = None, operation: str = "apply") -> dict[str, Any]:
        """yoyo's ``_yoyo_log`` row, without its two ways to fail or stall a start: ``getpass.getuser()``
        raises for a uid with no passwd entry (containers run under an arbitrary uid), and
        ``socket.getfqdn()`` waits on reverse DNS."""
        import getpass
        import os
        import socket
        import uuid

        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return {"id": str(uuid.uuid1()), "migration_id": migration.id if migration else None,
                "migration_hash": migration.hash if migration else None, "username": user,
                "hostname": socket.gethostname(), "created_at_utc": utcnow().replace(tzinfo=None),
                "operation": operation}


def _wait_for_lock(conn: Connection[Any], try_sql: str, timeout: float = 300.0) -> None:
    """Take :data:`MIGRATION_LOCK` by polling its ``pg_try_...`` form, never by a blocking wait.

    LangGraph's ``setup()`` runs ``CREATE INDEX CONCURRENTLY``, which waits for every statement running in
    the database to end. A worker blocked in ``pg_advisory_lock`` *is* such a statement, and it waits for
    the lock that the worker running ``setup()`` holds: several workers starting at once deadlocked that
    way (Postgres does not see the cycle). Between two short tries nothing is running, so the index build
    proceeds and the lock comes free.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(try_sql, (MIGRATION_LOCK,)).fetchone()
        if row and row[0]:
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"could not take Signoff's migration lock within {timeout:.0f} s")
        time.sleep(0.05)


def _in_current_schema(conn: Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema()"
                       " AND table_name = %s", (table,)).fetchone()
    return row is not None


def _adopt_legacy(conn: Connection[Any], backend: Any, pending: Any) -> list[str]:
    """Mark as applied the pending migrations that the hand-rolled runner already applied here."""
    if not _in_current_schema(conn, LEGACY_TABLE):
        return []
    done = {LEGACY_VERSIONS.get(r[0]) for r in conn.execute(f"SELECT version FROM {LEGACY_TABLE}").fetchall()}
    adopt = [m for m in pending if m.id in done]
    if adopt:
        backend.mark_migrations(MigrationList(adopt))
        log.info("adopted the migrations %s applied before yoyo (%s)", ", ".join(m.id for m in adopt), LEGACY_TABLE)
    return [m.id for m in adopt]


def migrate(conn: Connection[Any]) -> list[str]:
    """Apply the migrations not yet applied (serialised across workers). Returns the ids applied.

    ``conn`` is in autocommit mode and in no transaction. Every worker first takes :data:`MIGRATION_LOCK`
    (polled, see :func:`_wait_for_lock`), and only then lets yoyo touch the database: no open transaction or
    snapshot waits on anything meanwhile, so LangGraph's ``CREATE INDEX CONCURRENTLY`` in another worker
    can finish. yoyo's own lock (a row in ``yoyo_lock``) is taken too, as yoyo does. A row left there by a
    worker that died while migrating would block every later start (until ``yoyo break-lock``); once we hold
    the advisory lock (a session lock, gone with its session) no other Signoff process holds yoyo's, so such
    a row is stale and is removed. Hence: apply with ``signoff db migrate``, not with the ``yoyo`` command.

    Each migration and its record in ``_yoyo_migration`` commit in one transaction (yoyo's ``apply_one``
    would use two, on two connections: a crash in between would leave the tables made but not recorded).
    """
    applied: list[str] = []
    # A session lock taken outside any transaction (see _wait_for_lock), held around yoyo's transactions.
    _wait_for_lock(conn, "SELECT pg_try_advisory_lock(%s)")
    try:
        backend = _YoyoBackend(conn)
        backend.init_database()  # yoyo_lock
        stale = conn.execute(f"DELETE FROM {backend.lock_table_quoted} RETURNING pid").fetchall()
        if stale:
            log.warning("removed a stale yoyo migration lock (pid %s)", stale[0][0])
        with backend.lock():
            pending = backend.to_apply(migrations())  # creates yoyo's tables the first time
            adopted = set(_adopt_legacy(conn, backend, pending))
            for m in pending:
                if m.id in adopted:
                    continue
                with backend.transaction():
                    m.process_steps(backend, "apply")  # savepoints inside this transaction
                    backend.mark_one(m, log=False)
                    backend.log_migration(m, "apply")
                applied.append(m.id)
                log.info("applied the migration %s", m.id)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


def migration_status(conn: Connection[Any]) -> list[tuple[str, datetime | None]]:
    """Each migration's id and when it was applied (None: pending). Reads only: creates no table."""
    applied: dict[str, datetime] = {}
    if _in_current_schema(conn, default_migration_table):
        applied = {r[0]: r[1] for r in conn.execute(
            f'SELECT migration_id, applied_at_utc FROM "{default_migration_table}"').fetchall()}
    return [(m.id, applied.get(m.id)) for m in migrations()]


class PostgresDatabase:
    """A connection pool on ``url`` with Signoff's schema migrated. Close it when done."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0) -> None:
        check_database_url(url)  # a wrong URL fails in seconds with its cause, not as a pool timeout
        self.url = url
        self.pool: ConnectionPool[Connection[Any]] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, timeout=timeout, kwargs={"autocommit": True},
            open=False, name="signoff-state",
            # After a database restart every pooled connection is dead: check each one as it is handed out
            # (and replace it) instead of failing one request per pooled connection (found by the DB-restart trials).
            check=ConnectionPool.check_connection,
        )
        try:
            self.pool.open(wait=True, timeout=timeout)
            with self.pool.connection() as conn:
                migrate(conn)
        except Exception as exc:
            self.pool.close()
            raise ConfigError(f"cannot use SIGNOFF_DATABASE_URL: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.pool.close()


class PostgresApprovalStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def add(self, proposal: Proposal) -> tuple[Proposal, bool]:
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO proposals (id, thread_id, state, created_at, data) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                (proposal.id, proposal.thread_id, proposal.state, proposal.created_at, proposal.model_dump_json()),
            ).fetchone()
            if row:
                return proposal, True
            found = conn.execute("SELECT data FROM proposals WHERE id = %s", (proposal.id,)).fetchone()
        if found is None:  # pragma: no cover - rows are never deleted
            raise ProposalNotFound(f"proposal {proposal.id!r} vanished")
        return Proposal.model_validate_json(found[0]), False

    def get(self, proposal_id: str) -> Proposal:
        with self.db.pool.connection() as conn:
            row = conn.execute("SELECT data FROM proposals WHERE id = %s", (proposal_id,)).fetchone()
        if not row:
            raise ProposalNotFound(f"no proposal {proposal_id!r}")
        return Proposal.model_validate_json(row[0])

    def find(self, *, states: Collection[str] | None = None, thread_id: str | None = None) -> list[Proposal]:
        sql, params = "SELECT data FROM proposals WHERE true", list[Any]()
        if states is not None:
            sql += " AND state = ANY(%s)"
            params.append(list(states))
        if thread_id is not None:
            sql += " AND thread_id = %s"
            params.append(thread_id)
        with self.db.pool.connection() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [Proposal.model_validate_json(r[0]) for r in rows]

    def transition(self, proposal_id: str, from_states: Collection[str], *, expect: dict[str, Any] | None = None,
                   **changes: Any) -> Proposal | None:
        with self.db.pool.connection() as conn, conn.transaction():
            row = conn.execute("SELECT data FROM proposals WHERE id = %s FOR UPDATE", (proposal_id,)).fetchone()
            if not row:
                raise ProposalNotFound(f"no proposal {proposal_id!r}")
            current = Proposal.model_validate_json(row[0])
            if not _holds(current, from_states, expect):
                return None
            updated = Proposal.model_validate(current.model_copy(update=changes).model_dump())
            conn.execute("UPDATE proposals SET state = %s, data = %s WHERE id = %s",
                         (updated.state, updated.model_dump_json(), proposal_id))
            return updated

    def claim(self, key: str, *, stale_after: float) -> bool:
        owner = process_owner()
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO claims (key, claimed_at, owner) VALUES (%s, clock_timestamp(), %s)"
                " ON CONFLICT (key) DO UPDATE SET claimed_at = clock_timestamp(), owner = EXCLUDED.owner"
                " WHERE claims.claimed_at <= clock_timestamp() - make_interval(secs => %s)"
                " RETURNING key",
                (key, owner, float(stale_after)),
            ).fetchone()
            if row is not None:
                return True
            held = conn.execute("SELECT owner FROM claims WHERE key = %s", (key,)).fetchone()
            if held is None or not owner_gone(held[0]):
                return False
            # Its holder ran on this host and has died: take it over, unless someone else just did.
            taken = conn.execute(
                "UPDATE claims SET claimed_at = clock_timestamp(), owner = %s WHERE key = %s AND owner = %s"
                " RETURNING key", (owner, key, held[0])).fetchone()
        return taken is not None

    def release(self, key: str) -> None:
        with self.db.pool.connection() as conn:
            conn.execute("DELETE FROM claims WHERE key = %s", (key,))


_AUDIT_COLS = "seq, at, kind, subject, actor, data, prev_hash, hash"


class PostgresAuditLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def append(self, kind: str, subject: str, actor: str, data: dict[str, Any] | None = None, *,
               thread_id: str | None = None) -> AuditEvent:
        data = json.loads(canonical_json(data or {}))
        with self.db.pool.connection() as conn, conn.transaction():
            # Serialise appends across every worker: the next seq and prev_hash are read under the lock.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
            at: datetime = utcnow()
            digest = _event_hash(prev, seq, at, kind, subject, actor, data)
            conn.execute(
                "INSERT INTO audit (seq, at, kind, subject, thread_id, actor, data, prev_hash, hash)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (seq, at.isoformat(), kind, subject, thread_id, actor, canonical_json(data), prev, digest),
            )
        return AuditEvent(seq=seq, at=at, kind=kind, subject=subject, actor=actor, data=data,
                          prev_hash=prev, hash=digest)

    def trail(self, subject: str | None = None) -> list[AuditEvent]:
        with self.db.pool.connection() as conn:
            if subject is None:
                rows = conn.execute(f"SELECT {_AUDIT_COLS} FROM audit ORDER BY seq").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_AUDIT_COLS} FROM audit WHERE subject = %s OR thread_id = %s ORDER BY seq",
                    (subject, subject),
                ).fetchall()
        return [_row_to_event(tuple(r)) for r in rows]

    def verify(self) -> int:
        return verify_chain(self.trail())


def postgres_checkpointer(url: str, *, max_size: int = 10) -> Any:
    """LangGraph's :class:`PostgresSaver` on its own pool, its tables set up (serialised across workers).

    The caller closes ``saver.conn`` (the pool). Triage, renewal and contract runs share its tables: their
    thread ids never collide (``ticket:``, ``account:``, ``contract:``) and each agent recovers only its own.
    """
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import connect
    from psycopg.rows import dict_row

    pool: ConnectionPool[Connection[Any]] = ConnectionPool(
        url, min_size=1, max_size=max_size, open=False, name="signoff-checkpoints",
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        check=ConnectionPool.check_connection,  # survive a database restart (see PostgresDatabase)
    )
    try:
        pool.open(wait=True, timeout=30.0)
        saver = PostgresSaver(pool)
        # setup() is not safe to run concurrently: hold a session lock on a side connection meanwhile.
        with connect(url, autocommit=True) as side:
            _wait_for_lock(side, "SELECT pg_try_advisory_lock(%s)")
            try:
                saver.setup()
            finally:
                side.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    except Exception as exc:
        pool.close()
        raise ConfigError(f"cannot set up the Postgres checkpointer: {type(exc).__name__}: {exc}") from exc
    return saver
