"""Embedded by default: give every command an Odoo to talk to over real HTTP.

>>> with odoo_for(settings) as s:            # doctest: +SKIP
...     reader = connect_reader(s)          # s.odoo_url is set
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from signoff.config import Settings
from signoff.sandbox.odoo import OdooStandIn
from signoff.sandbox.seed import is_seeded, seed


@contextmanager
def odoo_for(settings: Settings, *, n_history: int | None = None) -> Iterator[Settings]:
    """Yield settings pointing at an Odoo.

    A configured ``settings.odoo_url`` is used as is. Otherwise the stand-in is started on a free
    127.0.0.1 port over ``settings.sandbox_db_path`` (seeded first when empty) and stopped on exit.
    """
    if settings.odoo_url:
        yield settings
        return
    settings.ensure_dirs()
    path = settings.sandbox_db_path
    if not is_seeded(path):
        seed(path, settings.public_data_dir, n_history=n_history, version=settings.odoo_version)
    standin = OdooStandIn(path, port=0, version=settings.odoo_version, dbname=settings.odoo_db)
    standin.start()
    try:
        yield settings.model_copy(update={"odoo_url": standin.url})
    finally:
        standin.stop()
