"""``signoff serve``: run the server (webhooks, approvals API, Slack) with uvicorn."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from signoff.config import Settings


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 to accept connections from other hosts.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str | None, typer.Option(help="uvicorn log level (default: SIGNOFF_LOG_LEVEL).")] = None,
    slack_standin: Annotated[bool, typer.Option(
        "--slack-standin", help="Play Slack offline: start the Slack stand-in on 127.0.0.1 with a fresh token and "
                                "signing secret, point the server at it, and print where to click.")] = False,
    standin_port: Annotated[int, typer.Option(help="Port of the Slack stand-in (0: any free port).")] = 0,
) -> None:
    """Run the Signoff server: Odoo webhooks, the approvals REST API, Slack, health and metrics.

    Endpoints: POST /webhooks/odoo (SIGNOFF_WEBHOOK_SECRET), /api/proposals... (SIGNOFF_API_TOKEN),
    POST /slack/events (SIGNOFF_SLACK_BOT_TOKEN + SIGNOFF_SLACK_SIGNING_SECRET), /healthz, /readyz, /metrics;
    /runs, /subscriptions (API keys: `signoff apikeys`), POST /webhooks/in/{source} (signed; see
    SIGNOFF_INBOUND_MAPPING_PATH); a worker delivers events to subscriptions (`signoff subscriptions`).
    With SIGNOFF_ODOO_URL unset, the built-in Odoo stand-in runs inside the server. A background sweep
    (every SIGNOFF_SWEEP_SECONDS) expires overdue proposals, reminds approvers and resumes decided runs.
    """
    import uvicorn

    from signoff.config import get_settings
    from signoff.server.app import create_app

    settings = get_settings()
    level = (log_level or settings.log_level).lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    standin = None
    if slack_standin:
        standin, settings = start_slack_standin(settings, host, port, standin_port)
    missing = [name for name, value in (("SIGNOFF_WEBHOOK_SECRET", settings.webhook_secret),
                                        ("SIGNOFF_API_TOKEN", settings.api_token),
                                        ("SIGNOFF_SLACK_BOT_TOKEN", settings.slack_bot_token)) if not value]
    if missing:
        typer.echo(f"note: {', '.join(missing)} unset: those endpoints answer 503", err=True)
    if settings.executor_stale_seconds < settings.odoo_timeout + 5:
        typer.echo(f"warning: SIGNOFF_EXECUTOR_STALE_SECONDS={settings.executor_stale_seconds:g} is not above "
                   f"SIGNOFF_ODOO_TIMEOUT={settings.odoo_timeout:g} (+5 s): a write still in flight may be taken "
                   "over by the sweep and sent to Odoo twice; keep it above (default 60)", err=True)
    if settings.database_url:  # fail now, with the cause, rather than inside uvicorn's startup
        from signoff.guardrails.pgcheck import check_database_url

        check_database_url(settings.database_url)
    odoo = settings.odoo_url or "the embedded Odoo stand-in"
    state = "Postgres (SIGNOFF_DATABASE_URL)" if settings.database_url else str(settings.data_dir)
    where = f"http://{host}:{port}" if port else f"{host}, on a port the system picks (--log-level info shows it)"
    typer.echo(f"signoff serve: {where}  (Odoo: {odoo}; state: {state}; health: /healthz, /readyz)", err=True)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=level)
    finally:
        if standin is not None:
            standin.stop()


def _slack_demo_policy(settings: Settings) -> Any:
    """When no action's channel is ``slack``: a copy of the policy in use that posts everything to Slack and
    gives every group a stand-in approver, saved in the data dir; else None (the policy is used as is)."""
    import yaml

    from signoff.guardrails.policy import DEFAULT_POLICY_PATH

    source = settings.policy_path or DEFAULT_POLICY_PATH
    data = yaml.safe_load(source.read_text())
    actions = data.get("actions") or {}
    if any(rule.get("channel") == "slack" for rule in actions.values()):
        return None
    for rule in actions.values():
        rule["channel"] = "slack"
    for members in (data.get("groups") or {}).values():
        if not any(str(m).startswith("slack:") for m in members):
            members.append("slack:U0ALICE01")
    settings.ensure_dirs()
    path = settings.data_dir / "policy-slack-demo.yaml"
    path.write_text(f"# Written by `signoff serve --slack-standin` from {source}\n" + yaml.safe_dump(data))
    return path


def start_slack_standin(settings: Settings, host: str, port: int, standin_port: int = 0) -> tuple[Any, Settings]:
    """Start :class:`~signoff.sandbox.slack.SlackStandIn` with a generated token and signing secret; return it
    and ``settings`` pointed at it. It delivers clicks and messages to this server's ``/slack/events``."""
    import secrets

    from pydantic import SecretStr

    from signoff.sandbox.slack import SlackStandIn

    app_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    standin = SlackStandIn(token="xoxb-standin-" + secrets.token_hex(12), signing_secret=secrets.token_hex(32),
                           port=standin_port, app_url=f"http://{app_host}:{port}/slack/events").start()
    settings = settings.model_copy(update={
        "slack_bot_token": SecretStr(standin.token), "slack_signing_secret": SecretStr(standin.signing_secret),
        "slack_api_base_url": standin.api_url})
    demo_policy = _slack_demo_policy(settings)
    if demo_policy is not None:
        settings = settings.model_copy(update={"policy_path": demo_policy})
        typer.echo(f"no action in the policy posts to Slack: using {demo_policy} (the same policy with "
                   "channel: slack everywhere, and stand-in user 'alice' in every group that has no Slack "
                   "approver)", err=True)
    channel = settings.slack_approvals_channel.lstrip("#")
    typer.echo(f"Slack stand-in on {standin.url} (approval messages go to #{channel}):\n"
               f"  open   {standin.url}/_fake/ui   messages, their buttons (signed clicks), modals, and a box to "
               "talk to the bot\n"
               f"  or GET {standin.url}/_fake/messages   every message as JSON\n"
               f"  approvers in the packaged policy: 'lead' (slack:U024BE7LH) may decide ticket proposals; "
               "'mallory' may not\n"
               f"  try: POST /api/triage or the Odoo webhook, or say 'triage <ticket id>' in the UI", err=True)
    return standin, settings
