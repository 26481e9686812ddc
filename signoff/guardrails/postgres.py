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
* Schema: versioned SQL migrations (:data:`MIGRATIONS`), applied at startup under an advisory lock and
  recorded in ``signoff_schema_migrations``. Append a migration, never edit one that has shipped.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg_pool import ConnectionPool

from signoff.domain import AuditEvent, Proposal, canonical_json, utcnow
from signoff.errors import ConfigError, ProposalNotFound
from signoff.guardrails.audit import GENESIS, _event_hash, _row_to_event, verify_chain
from signoff.guardrails.pgcheck import check_database_url
from signoff.guardrails.store import _holds

#: Advisory lock keys (one 64-bit namespace per database; arbitrary, fixed forever).
MIGRATION_LOCK = 0x5157_0001
AUDIT_LOCK = 0x5157_0002

#: (version, name, SQL). Applied in order, each once, in one transaction with its bookkeeping row.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "proposals, claims and the audit log", """
CREATE TABLE proposals (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX proposals_thread ON proposals(thread_id);
CREATE INDEX proposals_state ON proposals(state);
CREATE TABLE claims (key TEXT PRIMARY KEY, claimed_at TIMESTAMPTZ NOT NULL);
-- ``at`` and ``data`` are the exact text the hash was computed over (no time zone or key-order drift).
CREATE TABLE audit (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    thread_id TEXT,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_subject ON audit(subject);
CREATE INDEX audit_thread ON audit(thread_id);
CREATE FUNCTION signoff_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END
$$;
CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION signoff_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_audit_append_only();
"""),
    (2, "the server's tables: inbox users, API keys, idempotency, outbox, Slack and Odoo bookkeeping", """
-- Timestamps here are ISO-8601 text (UTC) or Unix seconds written by Signoff, as in the SQLite state file.
CREATE TABLE inbox_users (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    actor TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE TABLE idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE TABLE webhook_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    scope TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    created_seq BIGINT NOT NULL,
    removed_at TEXT
);
CREATE TABLE webhook_events (
    id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL,
    first_attempt_at DOUBLE PRECISION,
    last_attempt_at DOUBLE PRECISION,
    claimed_at DOUBLE PRECISION,
    last_status INTEGER,
    last_error TEXT,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries(subscription_id, order_key, seq);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_at);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
CREATE TABLE webhook_cursor (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);
CREATE TABLE slack_messages (
    proposal_id TEXT PRIMARY KEY,
    channel TEXT,
    ts TEXT,
    posted_at TEXT NOT NULL,
    reminded_at TEXT,
    shown_state TEXT
);
CREATE INDEX slack_messages_ts ON slack_messages(channel, ts);
CREATE TABLE slack_seen (key TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE INDEX slack_seen_at ON slack_seen(at);
CREATE TABLE odoo_activities (
    proposal_id TEXT PRIMARY KEY,
    activity_id BIGINT NOT NULL,
    approver_uid BIGINT NOT NULL,
    posted_at TEXT NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0
);
-- The web inbox's Pending page filters, counts and sorts on these fields of the stored proposal.
CREATE INDEX inbox_pending ON proposals(state, ((data::jsonb ->> 'approver_group')),
    ((data::jsonb ->> 'expires_at')), created_at);
"""),
    (3, "the renewal terms the contracts agent read, per Odoo record (signoff.tools.contract_terms)", """
CREATE TABLE contract_terms (
    db TEXT NOT NULL,
    res_model TEXT NOT NULL,
    res_id BIGINT NOT NULL,
    attachment_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notice_deadline TEXT,
    auto_renewal INTEGER,
    model_version TEXT NOT NULL,
    analysed_at TEXT NOT NULL,
    PRIMARY KEY (db, res_model, res_id, attachment_id)
);
"""),
]


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


def migrate(conn: Connection[Any]) -> list[int]:
    """Apply the migrations not yet applied (serialised across workers). Returns the versions applied."""
    applied: list[int] = []
    # A session lock taken outside any transaction (see _wait_for_lock), held around the migration's one.
    _wait_for_lock(conn, "SELECT pg_try_advisory_lock(%s)")
    try:
        with conn.transaction():
            conn.execute("CREATE TABLE IF NOT EXISTS signoff_schema_migrations ("
                         " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                         " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {r[0] for r in conn.execute("SELECT version FROM signoff_schema_migrations").fetchall()}
            for version, name, sql in MIGRATIONS:
                if version in done:
                    continue
                conn.execute(sql.encode())  # bytes: several statements in one simple query, no parameters
                conn.execute("INSERT INTO signoff_schema_migrations (version, name) VALUES (%s, %s)",
                             (version, name))
                applied.append(version)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return applied


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
        with self.db.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO claims (key, claimed_at) VALUES (%s, clock_timestamp())"
                " ON CONFLICT (key) DO UPDATE SET claimed_at = clock_timestamp()"
                " WHERE claims.claimed_at <= clock_timestamp() - make_interval(secs => %s)"
                " RETURNING key",
                (key, float(stale_after)),
            ).fetchone()
        return row is not None

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
