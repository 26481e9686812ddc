"""``signoff db``: the Postgres schema migrations (yoyo-migrations; see signoff.guardrails.postgres).

Workers apply them at startup anyway; ``migrate`` lets a deployment do it as a step of its own first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from psycopg import Connection

app = typer.Typer(
    name="db",
    help="The Postgres state database (SIGNOFF_DATABASE_URL): see and apply its schema migrations.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

UrlOpt = Annotated[str | None, typer.Option(
    "--url", help="A psycopg connection string (URL or key=value). Default: SIGNOFF_DATABASE_URL.",
    show_default=False)]


@contextmanager
def _connect(url: str | None) -> Iterator[Connection[Any] | None]:
    """A connection to the state database, or None when Signoff keeps its state in SQLite."""
    import psycopg

    from signoff.config import get_settings

    url = url or get_settings().database_url
    if not url:
        yield None
        return
    from signoff.errors import ConfigError
    from signoff.guardrails.pgcheck import check_database_url

    try:
        check_database_url(url)  # the cause in seconds, no password (as every other command)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except ConfigError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except psycopg.Error as exc:
        err.print(f"[bold red]error:[/] cannot connect to the database: {type(exc).__name__}: {exc}")
        raise typer.Exit(2) from exc
    with conn:
        yield conn


def _sqlite_note() -> None:
    console.print("SIGNOFF_DATABASE_URL is not set: the state is in the SQLite file, which needs no migrations.")


@app.command("status")
def status(url: UrlOpt = None) -> None:
    """List the migrations, applied (when) or pending. Changes nothing.

    Exit 0 when all are applied, 3 when some are pending (a deployment script can check it), 2 when the
    database cannot be used."""
    from signoff.guardrails.postgres import LEGACY_TABLE, _in_current_schema, migration_status

    with _connect(url) as conn:
        if conn is None:
            _sqlite_note()
            return
        rows = migration_status(conn)
        legacy = _in_current_schema(conn, LEGACY_TABLE)
        where = conn.execute("SELECT current_database(), current_schema()").fetchone() or ("?", "?")
    table = Table(title=f"Schema migrations in {where[0]}, schema {where[1]}")
    table.add_column("migration")
    table.add_column("applied (UTC)")
    for mid, when in rows:
        table.add_row(mid, when.isoformat(sep=" ", timespec="seconds") if when else "[yellow]pending[/]")
    console.print(table)
    pending = sum(1 for _, when in rows if when is None)
    if pending and legacy:
        console.print(f"{LEGACY_TABLE} is present: `signoff db migrate` (or the next start) adopts the migrations "
                      "it records instead of running them again.")
    if pending:
        raise typer.Exit(3)  # scripts can tell "pending" from "up to date" (0) and failures (1)


@app.command("migrate")
def migrate_command(url: UrlOpt = None) -> None:
    """Apply the pending migrations (serialised with any worker starting meanwhile). Safe to repeat."""
    from signoff.guardrails.postgres import migrate, migration_status

    with _connect(url) as conn:
        if conn is None:
            _sqlite_note()
            return
        try:
            applied = migrate(conn)
        except Exception as exc:  # the database's or the lock's error, said plainly
            err.print(f"[bold red]error:[/] the migrations failed: {type(exc).__name__}: {exc}")
            raise typer.Exit(1) from exc
        total = len(migration_status(conn))
    if applied:
        console.print(f"applied {', '.join(applied)}")
    console.print(f"up to date: {total} migration(s) applied")
