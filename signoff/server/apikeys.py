"""API keys for the REST API: created and revoked by an operator (``signoff apikeys``), stored hashed.

A key is ``so_<key id>_<secret>`` with 256 bits of randomness; only ``sha256(key)`` is stored (in the
state database, table ``api_keys``), so the key is printed once, at creation, and never again. A key
carries scopes:

* ``start``: start runs (``POST /runs``, ``POST /api/triage``);
* ``read``: read runs, proposals and their audit trails;
* ``decide``: approve, edit or reject proposals, and manage event subscriptions;
* ``admin``: everything (``SIGNOFF_API_TOKEN`` is an admin key that lives in the settings).

A key may be bound to an approver identity (``--actor cli:lead``): decisions made with it are made
as that identity and no other, so a key cannot borrow someone else's place in an approver group.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from signoff.domain import utcnow
from signoff.errors import DataError
from signoff.guardrails.statedb import StateDB, as_statedb

Scope = Literal["start", "read", "decide", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    actor TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
"""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key (``key:<id>``) or the settings' admin token (``admin``)."""

    id: str
    name: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    actor: str | None = None
    """The approver identity this key decides as (None: the request names it)."""

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


ADMIN = Principal("admin", "SIGNOFF_API_TOKEN", frozenset({"admin"}))


@dataclass(frozen=True)
class ApiKeyInfo:
    id: str
    name: str
    scopes: tuple[str, ...]
    actor: str | None
    created_at: str
    revoked_at: str | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, db: StateDB | Path) -> None:
        self.db = as_statedb(db)
        self.db.ensure(_SCHEMA)

    def create(self, name: str, scopes: list[str], *, actor: str | None = None) -> tuple[ApiKeyInfo, str]:
        """A new key: its record and the key itself (shown once; only its hash is kept)."""
        name = name.strip()
        if not name:
            raise DataError("an API key needs a name")
        wanted = sorted(set(scopes))
        if not wanted:
            raise DataError(f"give at least one --scope ({', '.join(SCOPES)})")
        unknown = [s for s in wanted if s not in SCOPES]
        if unknown:
            raise DataError(f"unknown scope {', '.join(unknown)}: use {', '.join(SCOPES)}")
        key_id = secrets.token_hex(4)
        key = f"so_{key_id}_{secrets.token_urlsafe(32)}"
        now = utcnow().isoformat(timespec="seconds")
        with self.db.connect(write=True) as conn:
            taken = conn.execute("SELECT id FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone()
            if taken:
                raise DataError(f"an API key named {name!r} exists ({taken[0]}): choose another name, or revoke "
                                f"that one first (signoff apikeys revoke {name})")
            conn.execute("INSERT INTO api_keys (id, name, hash, scopes, actor, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (key_id, name, hash_key(key), json.dumps(wanted), actor, now))
        return ApiKeyInfo(key_id, name, tuple(wanted), actor, now, None), key

    def list(self) -> list[ApiKeyInfo]:
        with self.db.connect() as conn:
            rows = conn.execute("SELECT id, name, scopes, actor, created_at, revoked_at FROM api_keys "
                                "ORDER BY created_at, id").fetchall()
        return [ApiKeyInfo(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5]) for r in rows]

    def revoke(self, key_id_or_name: str) -> ApiKeyInfo:
        """Revoke by id or by (unique) name; refused from the next request on."""
        matches = [k for k in self.list() if key_id_or_name in (k.id, k.name)]
        if not matches:
            raise DataError(f"no API key {key_id_or_name!r}")
        if len(matches) > 1:
            raise DataError(f"{key_id_or_name!r} names {len(matches)} keys: revoke by id")
        key = matches[0]
        if key.revoked_at:
            return key
        now = utcnow().isoformat(timespec="seconds")
        with self.db.connect(write=True) as conn:
            conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key.id))
        return ApiKeyInfo(key.id, key.name, key.scopes, key.actor, key.created_at, now)

    def any_active(self) -> bool:
        with self.db.connect() as conn:
            return conn.execute("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None

    def authenticate(self, key: str) -> Principal | None | Literal["revoked"]:
        """The key's principal; None for an unknown key; ``revoked`` for a revoked one."""
        if not key.startswith("so_"):
            return None
        with self.db.connect() as conn:
            row = conn.execute("SELECT id, name, scopes, actor, revoked_at FROM api_keys WHERE hash = ?",
                               (hash_key(key),)).fetchone()
        if row is None:
            return None
        if row[4]:
            return "revoked"
        return Principal(f"key:{row[0]}", row[1], frozenset(json.loads(row[2])), row[3])
