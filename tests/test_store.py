"""The proposals store and the audit log: one set of assertions, run on the SQLite, in-memory and Postgres adapters.

Postgres: a throwaway database per session, a fresh schema per test (``postgres_url`` in conftest); it is started
if it is not running, and the tests fail (never skip) when it cannot be.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from signoff.domain import Proposal, proposal_id
from signoff.errors import AuditIntegrityError, ProposalNotFound
from signoff.guardrails.audit import AuditLog, InMemoryAuditLog, SqliteAuditLog
from signoff.guardrails.postgres import (
    LEGACY_VERSIONS,
    MIGRATIONS_DIR,
    PostgresApprovalStore,
    PostgresAuditLog,
    PostgresDatabase,
    migrate,
    migration_status,
    migrations,
)
from signoff.guardrails.store import ApprovalStore, InMemoryApprovalStore, SqliteApprovalStore, resolve_id


def make_proposal(thread: str = "ticket:signoff:1", value: str = "billing") -> Proposal:
    args = {"category": value}
    return Proposal(
        id=proposal_id(thread, "ticket.set_category", "helpdesk.ticket", 1, args),
        thread_id=thread, action="ticket.set_category", target_model="helpdesk.ticket", target_id=1,
        args=args, approver_group="support-leads",
    )


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> Iterator[PostgresDatabase]:
    """Signoff's schema, migrated into a fresh Postgres schema (``postgres_url``), for one test."""
    db = PostgresDatabase(request.getfixturevalue("postgres_url"))
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ApprovalStore:
    if request.param == "sqlite":
        return SqliteApprovalStore(tmp_path / "state.sqlite")
    if request.param == "postgres":
        return PostgresApprovalStore(request.getfixturevalue("pg"))
    return InMemoryApprovalStore()


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def audit(request: pytest.FixtureRequest, tmp_path: Path) -> AuditLog:
    if request.param == "sqlite":
        return SqliteAuditLog(tmp_path / "state.sqlite")
    if request.param == "postgres":
        return PostgresAuditLog(request.getfixturevalue("pg"))
    return InMemoryAuditLog()


def test_proposal_id_is_deterministic_and_sensitive_to_args() -> None:
    assert make_proposal().id == make_proposal().id
    assert make_proposal(value="billing").id != make_proposal(value="orders").id
    assert make_proposal(thread="ticket:signoff:2").id != make_proposal().id


def test_add_is_insert_if_absent(store: ApprovalStore) -> None:
    first, new = store.add(make_proposal())
    assert new
    store.transition(first.id, ("pending",), state="approved", decided_by="cli:lead")
    again, new_again = store.add(make_proposal())
    assert not new_again
    assert again.state == "approved", "a re-proposal must not reset a decided proposal"
    assert len(store.find()) == 1


def test_transition_is_compare_and_set(store: ApprovalStore) -> None:
    p, _ = store.add(make_proposal())
    won = store.transition(p.id, ("pending",), state="approved", decided_by="cli:a")
    lost = store.transition(p.id, ("pending",), state="rejected", decided_by="cli:b")
    assert won is not None and won.state == "approved"
    assert lost is None
    assert store.get(p.id).decided_by == "cli:a"


def test_transition_expect_guards_other_fields(store: ApprovalStore) -> None:
    p, _ = store.add(make_proposal())
    assert store.transition(p.id, ("pending",), expect={"attempts": 5}, attempts=6) is None
    assert store.transition(p.id, ("pending",), expect={"attempts": 0}, attempts=1) is not None


def test_concurrent_transitions_have_one_winner(store: ApprovalStore) -> None:
    p, _ = store.add(make_proposal())
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def decide(actor: str) -> None:
        barrier.wait()
        if store.transition(p.id, ("pending",), state="approved", decided_by=actor):
            winners.append(actor)

    threads = [threading.Thread(target=decide, args=(f"cli:{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    assert store.get(p.id).decided_by == winners[0]


def test_find_filters_and_unknown_id(store: ApprovalStore) -> None:
    a, _ = store.add(make_proposal("ticket:x:1"))
    store.add(make_proposal("ticket:x:2"))
    store.transition(a.id, ("pending",), state="rejected")
    assert [p.thread_id for p in store.find(states=("pending",))] == ["ticket:x:2"]
    assert [p.id for p in store.find(thread_id="ticket:x:1")] == [a.id]
    assert resolve_id(store, a.id[:10]) == a.id
    with pytest.raises(ProposalNotFound):
        store.get("p_nope")
    with pytest.raises(ProposalNotFound):
        store.transition("p_nope", ("pending",), state="approved")


def test_audit_chain_appends_and_verifies(audit: AuditLog) -> None:
    audit.append("ticket.loaded", "ticket:x:1", "agent:triage", {"n": 1}, thread_id="ticket:x:1")
    audit.append("proposal.created", "p_1", "agent:triage", {"args": {"a": 1}}, thread_id="ticket:x:1")
    audit.append("ticket.loaded", "ticket:x:2", "agent:triage", {}, thread_id="ticket:x:2")
    assert audit.verify() == 3
    trail = audit.trail("ticket:x:1")
    assert [e.kind for e in trail] == ["ticket.loaded", "proposal.created"]
    assert trail[1].prev_hash == trail[0].hash


def test_sqlite_audit_is_append_only_and_tamper_evident(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    log = SqliteAuditLog(path)
    log.append("a", "s", "x", {"v": 1})
    log.append("b", "s", "x", {"v": 2})
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET data = '{\"v\": 9}' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit WHERE seq = 1")
    # Someone with file access drops the trigger and edits history: verify() catches it.
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET data = '{\"v\":9}' WHERE seq = 1")
    conn.commit()
    conn.close()
    with pytest.raises(AuditIntegrityError, match="#1"):
        log.verify()


def test_sqlite_store_is_shared_between_processes_by_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first: Callable[[], ApprovalStore] = lambda: SqliteApprovalStore(path)  # noqa: E731
    p, _ = first().add(make_proposal())
    assert first().get(p.id) == p


def test_claims_exclude_a_second_taker_until_released_or_stale(store: ApprovalStore) -> None:
    assert store.claim("ticket:x:1", stale_after=300)
    assert not store.claim("ticket:x:1", stale_after=300), "held by a run in progress"
    assert store.claim("ticket:x:1", stale_after=0), "a claim older than the bound is presumed dead"
    store.release("ticket:x:1")
    assert store.claim("ticket:x:1", stale_after=300)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_claim_whose_holder_was_killed_on_this_host_is_free_at_once(kind: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    """A worker killed with kill -9 leaves its claims behind; another process takes them over without waiting
    for the time bound, while a live holder in another process still excludes it."""
    import os
    import signal
    import subprocess
    import sys

    if kind == "sqlite":
        target = str(tmp_path / "state.sqlite")
        make = "from signoff.guardrails.store import SqliteApprovalStore as S; from pathlib import Path; s = S(Path(t))"
        store: ApprovalStore = SqliteApprovalStore(Path(target))
    else:
        pg = request.getfixturevalue("pg")
        target = pg.url
        make = ("from signoff.guardrails.postgres import PostgresApprovalStore as S, PostgresDatabase as D; "
                "s = S(D(t))")
        store = PostgresApprovalStore(pg)
    code = f"import sys, time; t = sys.argv[1]; {make}; assert s.claim('run:1', stale_after=300); print('held', " \
           "flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code, target], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not store.claim("run:1", stale_after=300), "a live holder in another process excludes"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        assert store.claim("run:1", stale_after=300), "its holder is gone: free at once"
        assert not store.claim("run:1", stale_after=300), "and now held by this process (alive)"
    finally:
        holder.kill()
        holder.wait(10)


def test_claim_owners_on_other_hosts_or_reused_pids() -> None:
    import os

    from signoff.guardrails.owner import owner_gone, process_owner

    me = process_owner()
    host, pid, start = me.split("|")
    assert not owner_gone(me) and not owner_gone(None) and not owner_gone("")
    assert not owner_gone(f"another-host|{pid}|{start}"), "can't check another host: not presumed dead"
    assert owner_gone(f"{host}|{pid}|{int(start or 0) + 1}"), "the pid runs a newer process now"
    assert owner_gone(f"{host}|4194303|1"), "no such process"
    assert str(os.getpid()) == pid


# --- Postgres only ------------------------------------------------------------------------------------


def test_postgres_concurrent_decisions_from_many_workers_have_one_winner(postgres_url: str) -> None:
    """Eight "workers", each with its own pool (as separate processes would have), decide one proposal at once."""
    dbs = [PostgresDatabase(postgres_url, max_size=2) for _ in range(8)]
    try:
        p, _ = PostgresApprovalStore(dbs[0]).add(make_proposal())
        winners: list[str] = []
        barrier = threading.Barrier(len(dbs))

        def decide(i: int) -> None:
            store = PostgresApprovalStore(dbs[i])
            barrier.wait()
            if store.transition(p.id, ("pending",), state="approved", decided_by=f"cli:{i}"):
                winners.append(f"cli:{i}")
            PostgresAuditLog(dbs[i]).append("decision.tried", p.id, f"cli:{i}")

        threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(dbs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert PostgresApprovalStore(dbs[1]).get(p.id).decided_by == winners[0]
        log = PostgresAuditLog(dbs[2])
        assert log.verify() == len(dbs), "concurrent appends from every worker keep one linear chain"
        assert [e.seq for e in log.trail()] == list(range(1, len(dbs) + 1))
    finally:
        for db in dbs:
            db.close()


def test_postgres_audit_is_append_only_and_tamper_evident(pg: PostgresDatabase) -> None:
    log = PostgresAuditLog(pg)
    log.append("a", "s", "x", {"v": 1})
    log.append("b", "s", "x", {"v": 2})
    with pg.pool.connection() as conn:
        for sql in ("UPDATE audit SET data = '{\"v\": 9}' WHERE seq = 1", "DELETE FROM audit WHERE seq = 1",
                    "TRUNCATE audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(sql)
        # Someone with the owner's rights drops the trigger and edits history: verify() catches it.
        conn.execute("ALTER TABLE audit DISABLE TRIGGER audit_no_update_or_delete")
        conn.execute("UPDATE audit SET data = '{\"v\":9}' WHERE seq = 1")
    with pytest.raises(AuditIntegrityError, match="#1"):
        log.verify()


def test_postgres_migrations_are_versioned_and_applied_once(pg: PostgresDatabase) -> None:
    ids = [m.id for m in migrations()]
    assert ids == ["0001_store_audit", "0002_server_tables", "0003_contract_terms", "0004_claim_owner"]
    with pg.pool.connection() as conn:
        assert migrate(conn) == [], "already applied at startup"
        rows = conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc").fetchall()
        assert [r[0] for r in rows] == ids, "yoyo's record, in the connection's schema (search_path)"
        logged = conn.execute("SELECT migration_id, operation FROM _yoyo_log ORDER BY created_at_utc").fetchall()
        assert [tuple(r) for r in logged] == [(i, "apply") for i in ids]
        assert all(when is not None for _, when in migration_status(conn))
    # A second worker starting on the same database applies nothing and sees the same state.
    other = PostgresDatabase(pg.url)
    try:
        p, _ = PostgresApprovalStore(pg).add(make_proposal())
        assert PostgresApprovalStore(other).get(p.id) == p
    finally:
        other.close()


def test_postgres_database_migrated_by_the_hand_rolled_runner_is_adopted(postgres_url: str) -> None:
    """A deployment migrated before yoyo (``signoff_schema_migrations``, versions 1..3, the tables there): the
    migrations are marked applied in yoyo's table, never run again (their CREATE TABLE would fail)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn, conn.transaction():
        # What the hand-rolled runner did: the same DDL and one bookkeeping row per version.
        conn.execute("CREATE TABLE signoff_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        for version, mid in sorted(LEGACY_VERSIONS.items()):
            conn.execute((MIGRATIONS_DIR / f"{mid}.sql").read_text().encode())
            conn.execute("INSERT INTO signoff_schema_migrations (version, name) VALUES (%s, %s)", (version, mid))
        conn.execute("INSERT INTO proposals (id, thread_id, state, created_at, data) VALUES"
                     " ('p-old', 't', 'pending', now(), '{}')")
    db = PostgresDatabase(postgres_url)
    try:
        with db.pool.connection() as conn:
            assert migrate(conn) == [], "done at startup: the legacy runner's three adopted, the rest applied"
            marked = conn.execute("SELECT migration_id, operation FROM _yoyo_log ORDER BY created_at_utc").fetchall()
            assert [tuple(r) for r in marked] == [(m, "mark") for m in sorted(LEGACY_VERSIONS.values())] + [
                ("0004_claim_owner", "apply")]
            assert conn.execute("SELECT id FROM proposals").fetchall() == [("p-old",)], "data untouched"
        p, _ = PostgresApprovalStore(db).add(make_proposal())
        assert PostgresAuditLog(db).append("a", p.id, "x").seq == 1
    finally:
        db.close()


def test_postgres_database_migrated_partly_by_the_old_runner_gets_the_rest(postgres_url: str) -> None:
    """An older deployment (versions 1 and 2 only): those are adopted, 0003 and 0004 are applied."""
    with psycopg.connect(postgres_url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE signoff_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        for version in (1, 2):
            conn.execute((MIGRATIONS_DIR / f"{LEGACY_VERSIONS[version]}.sql").read_text().encode())
            conn.execute("INSERT INTO signoff_schema_migrations VALUES (%s, 'x')", (version,))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert migrate(conn) == ["0003_contract_terms", "0004_claim_owner"]
        assert conn.execute("SELECT count(*) FROM contract_terms").fetchone() == (0,)


def test_postgres_stale_yoyo_lock_of_a_dead_worker_does_not_block_startup(postgres_url: str) -> None:
    """yoyo's lock is a row: a worker killed while migrating leaves it. Under our advisory lock it is stale."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        migrate(conn)
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    db = PostgresDatabase(postgres_url, timeout=15)
    try:
        with db.pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)
    finally:
        db.close()


def test_postgres_failed_migration_records_nothing(postgres_url: str) -> None:
    """A migration and its record commit together: if its DDL fails, neither is left behind."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE contract_terms (x INT)")  # in the way of 0003
        with pytest.raises(psycopg.errors.DuplicateTable):
            migrate(conn)
        rows = conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc").fetchall()
        assert [r[0] for r in rows] == ["0001_store_audit", "0002_server_tables"]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,), "yoyo's lock released"
        conn.execute("DROP TABLE contract_terms")
        assert migrate(conn) == ["0003_contract_terms", "0004_claim_owner"]


def test_cli_db_status_and_migrate(postgres_url: str) -> None:
    from typer.testing import CliRunner

    from signoff.cli import app

    runner = CliRunner()
    before = runner.invoke(app, ["db", "status", "--url", postgres_url])
    assert before.exit_code == 3, before.output
    assert before.output.count("pending") == 4
    done = runner.invoke(app, ["db", "migrate", "--url", postgres_url])
    assert done.exit_code == 0, done.output
    assert "applied 0001_store_audit, 0002_server_tables, 0003_contract_terms, 0004_claim_owner" in " ".join(
        done.output.split()), done.output  # rich wraps the line
    again = runner.invoke(app, ["db", "migrate", "--url", postgres_url])
    assert again.exit_code == 0 and "applied 0" not in again.output and "up to date" in again.output
    after = runner.invoke(app, ["db", "status", "--url", postgres_url])
    assert after.exit_code == 0 and "pending" not in after.output, after.output
