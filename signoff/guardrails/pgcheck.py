"""Check ``SIGNOFF_DATABASE_URL`` with one quick connection before a pool is built on it.

A pool on a wrong URL only says "pool initialization incomplete after 30.0 sec"; one direct connection
with a short ``connect_timeout`` fails in seconds with the real cause (not a PostgreSQL URL, no such
host, connection refused, no such database, authentication failed). The message names the server and
database, never the password.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from signoff.errors import ConfigError


def describe_url(url: str) -> str:
    """``user@host:port/dbname`` of a connection string (no password)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "an unreadable connection string"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


def check_database_url(url: str, *, timeout: int = 5) -> None:
    """Connect once; raise :class:`ConfigError` with the cause when the URL cannot be used."""
    try:
        conninfo = make_conninfo(url, connect_timeout=str(timeout))
    except psycopg.ProgrammingError:  # its message quotes the whole string, password included: not shown
        scheme = url.split("://", 1)[0] + "://" if "://" in url else None
        hint = f" (it starts with {scheme!r})" if scheme and scheme not in ("postgresql://", "postgres://") else ""
        raise ConfigError(
            "SIGNOFF_DATABASE_URL is not a PostgreSQL connection string: use postgresql://user:password@host:5432/db "
            f"or 'host=... dbname=...'{hint}") from None
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
    except psycopg.Error as exc:
        cause = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"cannot connect to SIGNOFF_DATABASE_URL ({describe_url(url)}): {cause}") from None
    if not schema or schema[0] is None:
        raise ConfigError(f"SIGNOFF_DATABASE_URL ({describe_url(url)}): its search_path names no schema that "
                          "exists in the database; create the schema first (CREATE SCHEMA ...) or fix options=")
