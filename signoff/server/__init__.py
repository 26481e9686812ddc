"""The Signoff server: Odoo webhooks, the approvals REST API, health and metrics, Slack (Bolt)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from signoff.config import Settings


def create_app(settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    """See :func:`signoff.server.app.create_app`."""
    from signoff.server.app import create_app as _create_app

    return _create_app(settings, **kwargs)


__all__ = ["create_app"]
