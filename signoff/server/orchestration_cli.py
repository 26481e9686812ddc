"""``signoff apikeys`` and ``signoff subscriptions``: API keys for the REST API, event subscriptions.

Both work on the state database directly (the SQLite file in ``SIGNOFF_DATA_DIR``, or Postgres when
``SIGNOFF_DATABASE_URL`` is set), with or without a running server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from signoff.config import Settings, get_settings
from signoff.errors import SignoffError

if TYPE_CHECKING:
    from signoff.guardrails.statedb import StateDB
    from signoff.integrations.webhooks_out import Outbox

console = Console()
err = Console(stderr=True)

apikeys_app = typer.Typer(
    name="apikeys",
    help="API keys for /runs, /subscriptions and the approvals API: create (printed once), list, revoke.",
    no_args_is_help=True,
)
subscriptions_app = typer.Typer(
    name="subscriptions",
    help="Event subscriptions (webhooks out to n8n or any URL): add, list, remove, deliveries, replay.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings.ensure_dirs()
    return settings


@contextmanager
def _db(settings: Settings | None = None) -> Iterator[StateDB]:
    from signoff.guardrails.statedb import statedb_for

    with statedb_for(settings or _settings()) as db:
        yield db


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code)


# --- API keys ---------------------------------------------------------------------------------------


@apikeys_app.command("create")
def apikeys_create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. n8n-prod.")],
    scope: Annotated[list[str], typer.Option("--scope", help="start (runs), read, decide (decisions and "
                                                             "subscriptions) or admin; repeat for several.")],
    actor: Annotated[str | None, typer.Option(help="Approver identity this key decides as, e.g. cli:lead "
                                                   "(a decision naming anyone else is refused).")] = None,
) -> None:
    """Create an API key. It is printed once: only its SHA-256 hash is stored."""
    from signoff.server.apikeys import ApiKeyStore

    settings = _settings()
    try:
        with _db(settings) as db:
            info, key = ApiKeyStore(db).create(name, scope, actor=actor)
    except SignoffError as exc:
        raise _fail(exc, 2) from exc
    err.print(f"created key [bold]{info.id}[/] ({info.name}) with scopes {', '.join(info.scopes)}"
              + (f", deciding as {info.actor}" if info.actor else "") + ". Store it now: it is not shown again.")
    typer.echo(key)


@apikeys_app.command("list")
def apikeys_list() -> None:
    """API keys (never the keys themselves): id, name, scopes, created, revoked."""
    from signoff.server.apikeys import ApiKeyStore

    with _db() as db:
        keys = ApiKeyStore(db).list()
    table = Table("id", "name", "scopes", "actor", "created", "revoked")
    for k in keys:
        table.add_row(k.id, k.name, ", ".join(k.scopes), k.actor or "", k.created_at, k.revoked_at or "")
    console.print(table if keys else "no API keys (create one: signoff apikeys create NAME --scope read)")


@apikeys_app.command("revoke")
def apikeys_revoke(key: Annotated[str, typer.Argument(help="The key's id (or its unique name).")]) -> None:
    """Revoke an API key: refused from the next request on."""
    from signoff.server.apikeys import ApiKeyStore

    try:
        with _db() as db:
            info = ApiKeyStore(db).revoke(key)
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"revoked {info.id} ({info.name}) at {info.revoked_at}")


# --- subscriptions ----------------------------------------------------------------------------------


@subscriptions_app.command("add")
def subscriptions_add(
    url: Annotated[str, typer.Argument(help="Where events are POSTed, e.g. https://n8n.example.com/webhook/signoff.")],
    event: Annotated[list[str], typer.Option("--event", help="proposal.created, proposal.decided, proposal.expired, "
                                                             "execution.succeeded, execution.failed or "
                                                             "run.needs_human; repeat for several.")],
    secret: Annotated[str | None, typer.Option(help="Signing secret (16+ characters); omitted: one is generated "
                                                    "and printed once.")] = None,
    scope: Annotated[str, typer.Option(help="facts: ids plus redacted arguments and reasons; ids: ids and "
                                            "states only.")] = "facts",
    description: Annotated[str | None, typer.Option(help="A note for `list`.")] = None,
) -> None:
    """Subscribe a URL to events. Deliveries are signed (X-Signoff-Signature), retried, in order per run."""
    from signoff.integrations.webhooks_out import Outbox

    try:
        with _db() as db:
            sub, key = Outbox(db).subscribe(url, event, secret=secret, scope=scope, description=description)
    except SignoffError as exc:
        raise _fail(exc, 2) from exc
    err.print(f"subscribed [bold]{sub.id}[/] to {', '.join(sub.events)} at {sub.url} (scope {sub.scope})")
    if secret is None:
        err.print("signing secret (shown once):")
        typer.echo(key)
    else:
        typer.echo(sub.id)


@subscriptions_app.command("list")
def subscriptions_list(
    all_: Annotated[bool, typer.Option("--all", help="Include removed subscriptions.")] = False,
) -> None:
    """Subscriptions (never their secrets)."""
    from signoff.integrations.webhooks_out import Outbox

    with _db() as db:
        subs = Outbox(db).subscriptions(include_removed=all_)
    table = Table("id", "url", "events", "scope", "created", "removed", "description")
    for s in subs:
        table.add_row(s.id, s.url, ", ".join(s.events), s.scope, s.created_at, s.removed_at or "", s.description or "")
    console.print(table if subs else "no subscriptions (add one: signoff subscriptions add URL --event ...)")


@subscriptions_app.command("remove")
def subscriptions_remove(sub_id: Annotated[str, typer.Argument(help="The subscription's id (sub_...).")]) -> None:
    """Remove a subscription: nothing more is sent; its pending deliveries are cancelled (records stay)."""
    from signoff.integrations.webhooks_out import Outbox

    try:
        with _db() as db:
            sub = Outbox(db).unsubscribe(sub_id)
    except SignoffError as exc:
        raise _fail(exc) from exc
    console.print(f"removed {sub.id} ({sub.url})")


@subscriptions_app.command("deliveries")
def subscriptions_deliveries(
    subscription: Annotated[str | None, typer.Option(help="Only this subscription.")] = None,
    status: Annotated[str | None, typer.Option(help="pending, sending, delivered, failed or cancelled.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this event id.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """Deliveries: status, attempts, last HTTP status and error."""
    from signoff.integrations.webhooks_out import Outbox

    with _db() as db:
        rows = Outbox(db).deliveries(event_id=event, subscription_id=subscription, status=status, limit=limit)
    table = Table("type", "subscription", "subject", "status", "attempts", "last", "error")
    table.add_column("event (id for replay)", no_wrap=True)
    for d in rows:
        table.add_row(d.event_type, d.subscription_id, d.order_key, d.status, str(d.attempts),
                      str(d.last_status or ""), (d.last_error or "")[:60], d.event_id)
    console.print(table if rows else "no deliveries")


@subscriptions_app.command("replay")
def subscriptions_replay(
    event_id: Annotated[str, typer.Argument(help="The event's id (evt_..., header X-Signoff-Event-Id).")],
    subscription: Annotated[str | None, typer.Option(help="Only to this subscription.")] = None,
    queue: Annotated[bool, typer.Option("--queue", help="Only queue it for the server's worker; do not send "
                                                        "from here.")] = False,
) -> None:
    """Send an event again (delivered or failed alike). Consumers deduplicate on the event id."""
    from signoff.integrations.webhooks_out import Outbox

    settings = _settings()
    with _db(settings) as db:
        _replay(settings, Outbox(db), event_id, subscription, queue)


def _replay(settings: Settings, outbox: Outbox, event_id: str, subscription: str | None, queue: bool) -> None:
    from signoff.integrations.webhooks_out import Deliverer, RetryPolicy

    try:
        rows = outbox.replay(event_id, subscription_id=subscription)
    except SignoffError as exc:
        raise _fail(exc) from exc
    if not rows:
        raise _fail(ValueError(f"event {event_id} has no delivery to an active subscription"))
    if not queue:
        retry = RetryPolicy(backoff=settings.outbound_backoff_seconds,
                            backoff_max=settings.outbound_backoff_max_seconds,
                            give_up=settings.outbound_give_up_seconds, timeout=settings.outbound_timeout)
        sender = Deliverer(outbox, retry, workers=1)
        try:
            for d in outbox.due():  # in order: only if nothing earlier for that run is still pending
                if d.event_id == event_id and (subscription is None or d.subscription_id == subscription):
                    sender.attempt(d.id)
        finally:
            sender.stop()
        rows = outbox.deliveries(event_id=event_id)
    for d in rows:
        when = datetime.fromtimestamp(d.delivered_at, UTC).isoformat(timespec="seconds") if d.delivered_at else ""
        console.print(f"{d.subscription_id} {d.url}: {d.status} after {d.attempts} attempt(s) {when}"
                      + (f" last error: {d.last_error}" if d.status != "delivered" and d.last_error else ""))
