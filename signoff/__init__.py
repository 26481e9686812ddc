"""Signoff: AI agents for SaaS operations that never write anything without a human's sign-off."""

__version__ = "0.1.0"
