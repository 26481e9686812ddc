"""The state database seam (signoff.guardrails.statedb): the same SQL and the same assertions on the SQLite
state file and on Postgres; the cross-worker locks and the outbox claim on Postgres with several pools."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.errors import DataError
from signoff.guardrails.postgres import PostgresDatabase, migrations
from signoff.guardrails.statedb import StateDB, to_postgres
from signoff.integrations.slack import SlackMessages
from signoff.integrations.webhooks_out import Outbox
from signoff.server.apikeys import ApiKeyStore
from signoff.server.inbox_auth import UserStore


@pytest.fixture(params=["sqlite", "postgres"])
def statedb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateDB]:
    if request.param == "sqlite":
        yield StateDB.sqlite(tmp_path / "signoff.sqlite")
        return
    pg = PostgresDatabase(request.getfixturevalue("postgres_url"))
    try:
        yield StateDB(postgres=pg)
    finally:
        pg.close()


def test_placeholders_and_percent_signs_translate() -> None:
    assert to_postgres("SELECT 1 WHERE a = ? AND b LIKE '5%' AND c IN (?, ?)") == \
        "SELECT 1 WHERE a = %s AND b LIKE '5%%' AND c IN (%s, %s)"


def test_the_server_tables_behave_alike(statedb: StateDB) -> None:
    users = UserStore(statedb)
    users.add("lead", "cli:lead", "password-1")
    with pytest.raises(Exception, match="exists"):
        users.add("lead", "cli:other", "password-2")
    users.add("lead", "cli:other", "password-2", replace=True)
    assert users.verify("lead", "password-2") is not None and users.verify("lead", "password-1") is None
    assert users.get("lead") is not None and users.get("lead").identity == "cli:other"  # type: ignore[union-attr]
    assert users.remove("lead") and not users.remove("lead")

    keys = ApiKeyStore(statedb)
    info, key = keys.create("n8n", ["read"])
    assert keys.authenticate(key) is not None and keys.any_active()
    with pytest.raises(DataError, match="named 'n8n' exists"):
        keys.create("n8n", ["start"])  # names stay unique, so revoking by name is unambiguous
    keys.revoke(info.id)
    assert keys.authenticate(key) == "revoked"
    assert keys.create("n8n", ["read"])[0].id != info.id, "a revoked key's name is free again"

    slack = SlackMessages(statedb)
    assert slack.reserve("p1") and not slack.reserve("p1"), "one poster per proposal"
    slack.posted("p1", "C1", "1.0", "pending")
    assert slack.by_message("C1", "1.0") == "p1"
    assert slack.first_time("evt-1") and not slack.first_time("evt-1"), "a retried event is seen once"

    with statedb.connect() as conn:
        assert conn.has_table("slack_seen") and not conn.has_table("no_such_table")
        assert conn.execute("SELECT COUNT(*) FROM api_keys WHERE name = ?", ("n8n",)).fetchone()[0] == 2


def test_only_one_of_several_callers_claims_a_delivery(statedb: StateDB) -> None:
    outbox = Outbox(statedb)
    with statedb.connect(write=True) as conn:
        conn.execute("INSERT INTO webhook_deliveries (id, event_id, subscription_id, seq, order_key, status, next_at)"
                     " VALUES ('d1', 'e1', 's1', 1, 'k', 'pending', 0)")
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        wins.append(outbox.claim("d1"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 5 + [True]


def test_postgres_try_lock_admits_one_worker_at_a_time(postgres_url: str) -> None:
    a, b = PostgresDatabase(postgres_url, max_size=2), PostgresDatabase(postgres_url, max_size=2)
    try:
        one, two = StateDB(postgres=a), StateDB(postgres=b)
        with one.try_lock("sweep") as first:
            assert first
            with two.try_lock("sweep") as second:
                assert not second, "another worker holds the sweep"
            with two.try_lock("something-else") as other:
                assert other
        with two.try_lock("sweep") as after:
            assert after, "released when the first worker's sweep ended"
        with one.connect(write=True) as conn, two.connect(write=True) as conn2:
            assert conn.try_lock("outbox.ingest") and not conn2.try_lock("outbox.ingest")
    finally:
        a.close()
        b.close()


def test_server_tables_are_a_versioned_migration(postgres_url: str) -> None:
    assert [m.id for m in migrations()][:2] == ["0001_store_audit", "0002_server_tables"]
    pg = PostgresDatabase(postgres_url)
    try:
        with pg.pool.connection() as conn:
            rows = conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc").fetchall()
        assert [r[0] for r in rows][:2] == ["0001_store_audit", "0002_server_tables"]
        with StateDB(postgres=pg).connect() as c:
            for table in ("inbox_users", "api_keys", "idempotency", "webhook_deliveries", "slack_messages",
                          "odoo_activities"):
                assert c.has_table(table), table
    finally:
        pg.close()


def test_several_workers_starting_at_once_migrate_without_deadlock(postgres_url: str) -> None:
    """Migrations and LangGraph's setup (CREATE INDEX CONCURRENTLY) from four workers at once: each waits for
    the migration lock by polling, so the index build never waits on a worker that waits on its lock."""
    from signoff.guardrails.postgres import postgres_checkpointer

    done: list[int] = []
    errors: list[Exception] = []

    def start() -> None:
        try:
            db = PostgresDatabase(postgres_url, max_size=2)
            saver = postgres_checkpointer(postgres_url, max_size=2)
            saver.conn.close()
            db.close()
            done.append(1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(done) == 4, (errors, len(done))


@pytest.mark.parametrize(("url", "says"), [
    ("notaurl", "not a PostgreSQL connection string"),
    ("mysql://root@127.0.0.1:3306/test", "not a PostgreSQL connection string"),
    ("postgresql://postgres:s3cret@127.0.0.1:1/signoff", "Connection refused"),
    ("postgresql://postgres:s3cret@127.0.0.1:5432/signoff_no_such_db_here", "does not exist"),
    ("postgressql://postgres:s3cret@127.0.0.1:5432/signoff", "it starts with 'postgressql://'"),
    ("postgresql://postgres:s3cret@127.0.0.1:5432/postgres?options=-c%20search_path%3Dno_such_schema",
     "names no schema that exists"),
])
def test_a_bad_database_url_fails_fast_with_its_cause(url: str, says: str, postgres_db: str, tmp_path: Path) -> None:
    """The CLI and `signoff serve` name the cause within seconds (no 30 s pool timeout, no traceback, no
    password), and exit 2 (a configuration error)."""
    import os
    import subprocess
    import sys
    import time

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIGNOFF_")},
           "SIGNOFF_DATABASE_URL": url, "SIGNOFF_DATA_DIR": str(tmp_path), "NO_PROXY": "127.0.0.1,localhost",
           "COLUMNS": "250"}
    for args in (["approvals", "list"], ["serve", "--port", "0"], ["db", "status"]):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "signoff.cli", *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert time.monotonic() - started < 25, "no pool timeout"
        assert done.returncode == 2, (args, done.returncode, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr and "s3cret" not in done.stderr, done.stderr
