"""Shared fixtures.

Odoo:
* ``odoo_seed_db``: a small seeded stand-in database, built once per session (copy it, don't write to it);
* ``odoo_db_copy``: a private copy of it in ``tmp_path``;
* ``odoo_standin``: a running :class:`~signoff.sandbox.odoo.OdooStandIn` on a free 127.0.0.1 port, over
  ``odoo_db_copy``; stopped after the test;
* ``settings``: :class:`~signoff.config.Settings` with ``data_dir=tmp_path`` pointing at ``odoo_standin``;
* ``odoo_reader`` / ``odoo_writer``: the real clients (agent / executor) logged in to ``odoo_standin``;
* ``memory_odoo``: an :class:`~signoff.integrations.odoo.InMemoryOdoo` seeded with the same sample.

Models and policy:
* ``model_dir``: a triage model trained once per session on a spread of real labelled tickets;
* :func:`write_policy`: the packaged policy with test thresholds (and, optionally, another channel).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from signoff.config import Settings
from signoff.guardrails.policy import DEFAULT_POLICY_PATH
from signoff.integrations.odoo import InMemoryOdoo, OdooWriter, ReadOnlyOdoo
from signoff.llm.training import load_labelled_jsonl, train
from signoff.sandbox.odoo import OdooStandIn
from signoff.sandbox.seed import seed

#: Seed sizes for tests: small, so a stand-in is up in milliseconds.
TEST_HISTORY = 40
TEST_NEW = 5
TEST_CONTRACTS = 1
ODOO_DB = "signoff"


def public_data_dir() -> Path:
    return Settings(_env_file=None).public_data_dir  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def odoo_seed_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("odoo-seed") / "odoo-sandbox.sqlite"
    seed(path, public_data_dir(), n_history=TEST_HISTORY, n_new=TEST_NEW, n_contracts=TEST_CONTRACTS)
    return path


def copy_sqlite(src: Path, dst: Path) -> Path:
    """Copy a (WAL) SQLite file consistently, with the backup API."""
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:
        source.backup(target)
    source.close()
    target.close()
    return dst


@pytest.fixture
def odoo_db_copy(odoo_seed_db: Path, tmp_path: Path) -> Path:
    """A private copy of the seeded database, in ``tmp_path``: free to write, serve or restart on."""
    return copy_sqlite(odoo_seed_db, tmp_path / "odoo-sandbox.sqlite")


@pytest.fixture
def odoo_standin(odoo_db_copy: Path) -> Iterator[OdooStandIn]:
    standin = OdooStandIn(odoo_db_copy, port=0, dbname=ODOO_DB)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def settings(odoo_standin: OdooStandIn, tmp_path: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp_path,
        odoo_url=odoo_standin.url,
        odoo_db=ODOO_DB,
        public_data_dir=public_data_dir(),
        odoo_timeout=5.0,
    )


@pytest.fixture
def odoo_reader(odoo_standin: OdooStandIn) -> ReadOnlyOdoo:
    return ReadOnlyOdoo.connect(odoo_standin.url, ODOO_DB, "agent", "agent", timeout=5.0)


@pytest.fixture
def odoo_writer(odoo_standin: OdooStandIn) -> OdooWriter:
    return OdooWriter.connect(odoo_standin.url, ODOO_DB, "executor", "executor", timeout=5.0)


@pytest.fixture
def memory_odoo() -> InMemoryOdoo:
    return InMemoryOdoo.seeded(
        public_data_dir(), n_history=TEST_HISTORY, n_new=TEST_NEW, n_contracts=TEST_CONTRACTS
    )


SAMPLE = Path(__file__).resolve().parent.parent / "signoff" / "sandbox" / "sample_tickets.jsonl"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A triage model trained once per session on a spread of real labelled tickets."""
    source = public_data_dir() / "tickets" / "bitext_dev.jsonl"
    texts, labels = load_labelled_jsonl(source if source.exists() else SAMPLE)
    step = max(1, len(texts) // 800)
    out = tmp_path_factory.mktemp("models")
    train(texts[::step], labels[::step], out)
    return out


def write_policy(path: Path, min_confidence: float, *, channel: str | None = None,
                 **action_overrides: object) -> Path:
    """The packaged policy with ``min_confidence`` for the model-gated actions; ``channel`` and other
    keys (``expires``, ``remind``) for every ticket action when given."""
    policy = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())
    for name in ("ticket.set_category", "ticket.set_team"):
        policy["actions"][name]["min_confidence"] = min_confidence
    for rule in policy["actions"].values():
        if channel is not None:
            rule["channel"] = channel
        rule.update(action_overrides)
    path.write_text(yaml.safe_dump(policy))
    return path


# --- a live Signoff server (uvicorn on a free port, in a thread) ------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a thread (lifespan included)."""

    def __init__(self, app: object) -> None:
        import socket

        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


WEBHOOK_SECRET = "hook-secret-for-tests"
API_TOKEN = "api-token-for-tests"
LEAD = "U024BE7LH"  # slack:U024BE7LH is in support-leads in the packaged policy
OUTSIDER = "U0MALLORY"


@dataclass
class Live:
    """A running server, its services, the Slack stand-in it talks to, and an authenticated client."""

    url: str
    settings: Settings
    app: Any
    slack: Any
    http: Any

    @property
    def svc(self) -> Any:
        return self.app.state.services

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {API_TOKEN}", **kwargs.pop("headers", {})}
        return self.http.request(method, self.url + path, headers=headers, **kwargs)

    def webhook(self, ticket_id: int, **extra: Any) -> Any:
        return self.http.post(self.url + "/webhooks/odoo", headers={"X-Signoff-Webhook-Secret": WEBHOOK_SECRET},
                              json={"_model": "helpdesk.ticket", "_id": ticket_id, "_action": "Notify(#1)", **extra})

    def wait_run(self, thread: str, timeout: float = 30.0) -> dict[str, Any]:
        def settled() -> dict[str, Any] | None:
            body = self.api("GET", f"/api/runs/{thread}").json()
            return body if body["status"] in ("paused", "done") else None

        return wait_for(settled, timeout, f"run {thread}")  # type: ignore[return-value]


@pytest.fixture
def serve_db(request: pytest.FixtureRequest) -> str:
    """Where ``start_server`` keeps its state: ``sqlite`` (default) or ``postgres`` (a fresh schema of the
    session's throwaway database). Parametrize a test with ``serve_db``, or run whole modules on Postgres
    with ``SIGNOFF_TEST_SERVE_DB=postgres``."""
    return str(getattr(request, "param", None) or os.environ.get("SIGNOFF_TEST_SERVE_DB", "sqlite"))


#: ``@both_dbs`` runs a server test once on SQLite and once on Postgres.
both_dbs = pytest.mark.parametrize("serve_db", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def start_server(settings: Settings, model_dir: Path, tmp_path: Path, serve_db: str,
                 request: pytest.FixtureRequest) -> Iterator[Callable[..., Live]]:
    """Start Signoff (uvicorn, real sockets) with a Slack stand-in; policy overrides as keyword arguments.
    On ``serve_db == "postgres"`` every server started by one test shares one fresh Postgres schema."""
    import httpx
    from pydantic import SecretStr

    if serve_db == "postgres":
        settings = settings.model_copy(update={"database_url": request.getfixturevalue("postgres_url")})
    elif serve_db != "sqlite":
        pytest.fail(f"serve_db must be sqlite or postgres, not {serve_db!r}")

    from signoff.sandbox.slack import SlackStandIn
    from signoff.server.app import create_app

    started: list[tuple[LiveServer, Any, Any]] = []

    def start(channel: str = "slack", settings_update: dict[str, Any] | None = None, **policy: Any) -> Live:
        slack = SlackStandIn().start()
        live_settings = settings.model_copy(update={
            "model_dir": model_dir,
            "policy_path": write_policy(tmp_path / f"policy-{len(started)}.yaml", 0.0, channel=channel, **policy),
            "executor_stale_seconds": 0.0,
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "api_token": SecretStr(API_TOKEN),
            "slack_bot_token": SecretStr(slack.token),
            "slack_signing_secret": SecretStr(slack.signing_secret),
            "slack_api_base_url": slack.api_url,
            "sweep_seconds": 0.0,
            **(settings_update or {}),
        })
        app = create_app(live_settings)
        server = LiveServer(app).start()
        slack.app_url = server.url + "/slack/events"
        http = httpx.Client(timeout=30.0, trust_env=False)
        started.append((server, slack, http))
        return Live(server.url, live_settings, app, slack, http)

    yield start
    for server, slack, http in started:
        http.close()
        server.stop()
        slack.stop()


def new_ticket_ids(live: Live) -> list[int]:
    from signoff.tools.tickets import untriaged_ticket_ids

    return untriaged_ticket_ids(live.svc.rt.reader)


# --- PostgreSQL (SIGNOFF_DATABASE_URL) --------------------------------------------------------------
#: The server the Postgres tests use (a throwaway database is created on it per session).
POSTGRES_ADMIN_URL = os.environ.get("SIGNOFF_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_up(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc)


def ensure_postgres(url: str = POSTGRES_ADMIN_URL) -> None:
    """Start the local cluster (as ``.ci/run`` does) when it is not answering; fail, never skip, if that fails."""
    if _postgres_up(url) is None:
        return
    import shutil
    import subprocess

    versions = sorted(Path("/etc/postgresql").iterdir()) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail(f"PostgreSQL is not reachable at {url} and there is no local cluster to start")
    started = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
                             capture_output=True, text=True, timeout=60)
    deadline = time.monotonic() + 30
    while (error := _postgres_up(url)) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"PostgreSQL did not come up at {url}: {error}; pg_ctlcluster said: "
                        f"{started.stdout}{started.stderr}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[str]:
    """URL of a fresh database ``signoff_test_<random>`` for this session, dropped at the end."""
    import uuid

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    ensure_postgres()
    name = f"signoff_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(**{**conninfo_to_dict(POSTGRES_ADMIN_URL), "dbname": name})
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_db: str) -> str:
    """A connection string whose ``search_path`` is a fresh, empty schema: one test's private state."""
    import uuid

    import psycopg
    from psycopg.conninfo import make_conninfo

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_db, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return make_conninfo(postgres_db, options=f"-c search_path={schema}")
