"""Shared fixtures.

Odoo:
* ``odoo_seed_db``: a small seeded stand-in database, built once per session (copy it, don't write to it);
* ``odoo_db_copy``: a private copy of it in ``tmp_path``;
* ``odoo_standin``: a running :class:`~signoff.sandbox.odoo.OdooStandIn` on a free 127.0.0.1 port, over
  ``odoo_db_copy``; stopped after the test;
* ``settings``: :class:`~signoff.config.Settings` with ``data_dir=tmp_path`` pointing at ``odoo_standin``;
* ``odoo_reader`` / ``odoo_writer``: the real clients (agent / executor) logged in to ``odoo_standin``;
* ``memory_odoo``: an :class:`~signoff.integrations.odoo.InMemoryOdoo` seeded with the same sample.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff.config import Settings
from signoff.integrations.odoo import InMemoryOdoo, OdooWriter, ReadOnlyOdoo
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
