"""``signoff inbox``: the web inbox's local users (add, list, remove)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from signoff.server.inbox_auth import UserStore

app = typer.Typer(
    name="inbox",
    help="The web inbox (/inbox on `signoff serve`): manage its local users. Needs SIGNOFF_INBOX_SECRET on the server.",
    no_args_is_help=True,
)


@contextmanager
def _users() -> Iterator[UserStore]:
    """The users in the configured state database (SQLite file, or Postgres with SIGNOFF_DATABASE_URL)."""
    from signoff.config import get_settings
    from signoff.guardrails.statedb import statedb_for
    from signoff.server.inbox_auth import UserStore

    settings = get_settings()
    settings.ensure_dirs()
    with statedb_for(settings) as db:
        yield UserStore(db)


@app.command("add-user")
def add_user(
    name: Annotated[str, typer.Argument(help="The user name to sign in with.")],
    identity: Annotated[str | None, typer.Option(
        help="Approver identity as the policy's groups name it, e.g. cli:lead (default: inbox:NAME). "
             "What the user may decide follows from the groups this identity is in.")] = None,
    password: Annotated[str | None, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                                 envvar="SIGNOFF_INBOX_NEW_PASSWORD",
                                                 help="Prompted for when not given (at least 8 characters).")]
    = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing user's password and identity.")] = False,
) -> None:
    """Add a web inbox user (password stored as a salted scrypt hash in the state database)."""
    from signoff.config import get_settings
    from signoff.errors import SignoffError
    from signoff.guardrails.policy import load_policy
    try:
        with _users() as store:
            user = store.add(name, identity or f"inbox:{name}", password or "", replace=replace)
        policy = load_policy(get_settings().policy_path)
    except SignoffError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    groups = [g for g in policy.groups if policy.may_decide(user.identity, g)]
    typer.echo(f"added {user.name} as {user.identity}; approver groups: {', '.join(groups) or 'none'}")
    if not groups:
        typer.echo(f"note: {user.identity} is in no group of the policy, so this user sees nothing to decide; "
                   "add it to a group in your policy (SIGNOFF_POLICY_PATH).", err=True)


@app.command("list-users")
def list_users() -> None:
    """List the web inbox's users and their identities."""
    with _users() as store:
        users = store.list()
    for name, identity, created, disabled in users:
        typer.echo(f"{name}\t{identity}\t{created[:19]}" + ("\tdisabled" if disabled else ""))


@app.command("remove-user")
def remove_user(name: Annotated[str, typer.Argument(help="The user to remove.")]) -> None:
    """Remove a web inbox user; their open sessions stop working at once."""
    with _users() as store:
        removed = store.remove(name)
    if not removed:
        typer.echo(f"error: no user {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {name}")
