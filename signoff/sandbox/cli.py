"""``signoff sandbox``: run and seed the local Odoo stand-in.

Mounted by ``signoff/cli.py`` as ``app.add_typer(sandbox_app)``; also runnable on its own with
``python -m signoff.sandbox.cli odoo --port 8069``.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from signoff.config import Settings, get_settings
from signoff.sandbox.odoo import OdooStandIn, default_credentials
from signoff.sandbox.seed import is_seeded, seed

app = typer.Typer(
    name="sandbox",
    help="Local stand-ins: an Odoo JSON-RPC server on SQLite, seeded with a demo SaaS company.",
    no_args_is_help=True,
)
console = Console()


def _settings() -> Settings:
    return get_settings()


def _db_path(db: Path | None) -> Path:
    if db is not None:
        return db
    settings = _settings()
    settings.ensure_dirs()
    return settings.sandbox_db_path


def _print_seed(created: dict[str, int], path: Path, elapsed: float) -> None:
    table = Table(title=f"Seeded {path} in {elapsed:.2f}s", show_header=True)
    table.add_column("model")
    table.add_column("created", justify="right")
    for model, n in created.items():
        table.add_row(model, str(n))
    console.print(table)
    if not any(created.values()):
        console.print("[dim]Already seeded: nothing changed.[/dim]")


@app.command("odoo")
def odoo_cmd(
    port: Annotated[
        int, typer.Option("--port", "-p", help="TCP port to listen on (0 picks a free one).")
    ] = 8069,
    host: Annotated[
        str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")
    ] = "127.0.0.1",
    db: Annotated[
        Path | None, typer.Option(help="SQLite file; default: the data dir's odoo-sandbox.sqlite.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Version profile: 16.0, 17.0 or 18.0 (default: SIGNOFF_ODOO_VERSION).")
    ] = None,
    dbname: Annotated[str | None, typer.Option(help="Odoo database name (default: SIGNOFF_ODOO_DB).")] = None,
    do_seed: Annotated[
        bool, typer.Option("--seed/--no-seed", help="Seed the demo company first if the file is empty.")
    ] = True,
) -> None:
    """Run the Odoo stand-in in the foreground (Ctrl-C stops it)."""
    settings = _settings()
    path = _db_path(db)
    if do_seed and not is_seeded(path):
        started = time.perf_counter()
        _print_seed(
            seed(path, settings.public_data_dir, version=version or settings.odoo_version),
            path,
            time.perf_counter() - started,
        )
    standin = OdooStandIn(
        path,
        host=host,
        port=port,
        version=version or settings.odoo_version,
        dbname=dbname or settings.odoo_db,
    )
    try:
        standin.start()
    except OSError as exc:
        console.print(f"[red]Cannot listen on {host}:{port}: {exc}[/red]")
        raise typer.Exit(1) from exc

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    console.print(
        f"[bold green]Odoo stand-in[/bold green] {standin.version} serving database "
        f"[bold]{standin.dbname}[/bold] at [bold]{standin.url}[/bold]  (data: {path})"
    )
    logins = Table(show_header=True, title="Logins")
    logins.add_column("login")
    logins.add_column("password")
    logins.add_column("role")
    for login, password, role in default_credentials():
        logins.add_row(login, password, role)
    console.print(logins)
    console.print(f"export SIGNOFF_ODOO_URL={standin.url}   # point Signoff at it;  Ctrl-C to stop")
    sys.stdout.flush()
    try:
        standin.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
        console.print("stopped")


@app.command("seed")
def seed_cmd(
    db: Annotated[
        Path | None, typer.Option(help="SQLite file; default: the data dir's odoo-sandbox.sqlite.")
    ] = None,
    public_data: Annotated[
        Path | None,
        typer.Option(
            help="Public data dir (default: SIGNOFF_PUBLIC_DATA_DIR); without it, a packaged sample."
        ),
    ] = None,
    history: Annotated[
        int | None, typer.Option(help="Resolved tickets to load (default: all ~3,200 Bitext dev rows).")
    ] = None,
    new: Annotated[int, typer.Option(help="New, untriaged tickets to add (plus 3 hand-written ones).")] = 25,
    contracts: Annotated[int, typer.Option(help="CUAD contracts to attach to subscriptions.")] = 3,
    reset: Annotated[bool, typer.Option(help="Delete the database file first.")] = False,
) -> None:
    """Seed the stand-in's database with a demo SaaS company (idempotent; safe while it runs)."""
    settings = _settings()
    path = _db_path(db)
    if reset:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    started = time.perf_counter()
    created = seed(
        path,
        public_data or settings.public_data_dir,
        n_history=history,
        n_new=new,
        n_contracts=contracts,
        version=settings.odoo_version,
    )
    _print_seed(created, path, time.perf_counter() - started)


if __name__ == "__main__":
    app()
