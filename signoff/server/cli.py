"""``signoff serve``: run the server (webhooks, approvals API, Slack) with uvicorn."""

from __future__ import annotations

import logging
from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 to accept connections from other hosts.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str | None, typer.Option(help="uvicorn log level (default: SIGNOFF_LOG_LEVEL).")] = None,
) -> None:
    """Run the Signoff server: Odoo webhooks, the approvals REST API, Slack, health and metrics.

    Endpoints: POST /webhooks/odoo (SIGNOFF_WEBHOOK_SECRET), /api/proposals... (SIGNOFF_API_TOKEN),
    POST /slack/events (SIGNOFF_SLACK_BOT_TOKEN + SIGNOFF_SLACK_SIGNING_SECRET), /healthz, /readyz, /metrics.
    With SIGNOFF_ODOO_URL unset, the built-in Odoo stand-in runs inside the server. A background sweep
    (every SIGNOFF_SWEEP_SECONDS) expires overdue proposals, reminds approvers and resumes decided runs.
    """
    import uvicorn

    from signoff.config import get_settings
    from signoff.server.app import create_app

    settings = get_settings()
    level = (log_level or settings.log_level).lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    missing = [name for name, value in (("SIGNOFF_WEBHOOK_SECRET", settings.webhook_secret),
                                        ("SIGNOFF_API_TOKEN", settings.api_token),
                                        ("SIGNOFF_SLACK_BOT_TOKEN", settings.slack_bot_token)) if not value]
    if missing:
        typer.echo(f"note: {', '.join(missing)} unset: those endpoints answer 503", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=level)
