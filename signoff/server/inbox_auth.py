"""Who is using the web inbox: a local user store, signed session cookies, CSRF tokens.

* Users live in the state database (table ``inbox_users``): a name, the approver identity the policy's
  groups name (``cli:lead``, ``inbox:alice``...), and a scrypt hash of the password with a per-user salt.
  ``signoff inbox add-user NAME --identity cli:lead`` adds one.
* A session is a cookie ``base64(json) "." hmac-sha256`` keyed by ``SIGNOFF_INBOX_SECRET``: user name,
  a per-session CSRF token and an expiry. The user is re-read from the store on every request, so a
  removed or disabled user loses access at once.
* Behind a reverse proxy that authenticates people, ``SIGNOFF_INBOX_TRUSTED_HEADER`` names the header
  carrying the user name; the identity is the store's for that name, else ``inbox:<name>``.

Roles are the policy's approver groups: what a user may decide is ``policy.may_decide(identity, group)``,
checked again by :class:`~signoff.guardrails.approvals.Approvals` on every decision.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from signoff.domain import utcnow
from signoff.errors import ConfigError
from signoff.guardrails.statedb import StateDB, as_statedb

#: scrypt cost (RFC 7914): N=2^14, r=8, p=1 uses 16 MiB and ~50 ms on one core.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
IDENTITY_RE = re.compile(r"^[a-z]+:[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox_users (
    name TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    salt TEXT NOT NULL,
    hash TEXT NOT NULL,
    params TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
"""


def hash_password(password: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


#: Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_SALT = secrets.token_bytes(16)
_DUMMY_HASH = hash_password(secrets.token_hex(8), _DUMMY_SALT)


@dataclass(frozen=True)
class InboxUser:
    name: str
    identity: str
    """The approver identity the policy's groups name."""
    via: str = "password"
    """``password`` (local store) or ``header`` (trusted reverse proxy)."""


class UserStore:
    """The inbox's users, in the state database."""

    def __init__(self, db: StateDB | Path) -> None:
        self.db = as_statedb(db)
        self.db.ensure(_SCHEMA)

    def add(self, name: str, identity: str, password: str, *, replace: bool = False) -> InboxUser:
        if not NAME_RE.match(name):
            raise ConfigError(f"bad user name {name!r}: letters, digits, _ . @ - (at most 64)")
        if not IDENTITY_RE.match(identity):
            raise ConfigError(f"bad identity {identity!r}: channel:id as the policy's groups name it, e.g. cli:lead")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"the password needs at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        digest = hash_password(password, salt)
        params = json.dumps({"alg": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P})
        upsert = (" ON CONFLICT (name) DO UPDATE SET identity = excluded.identity, salt = excluded.salt,"
                  " hash = excluded.hash, params = excluded.params, created_at = excluded.created_at, disabled = 0"
                  if replace else " ON CONFLICT (name) DO NOTHING")
        with self.db.connect(write=True) as conn:
            cur = conn.execute(
                "INSERT INTO inbox_users (name, identity, salt, hash, params, created_at, disabled)"
                " VALUES (?, ?, ?, ?, ?, ?, 0)" + upsert,
                (name, identity, salt.hex(), digest.hex(), params, utcnow().isoformat()))
            if cur.rowcount == 0:
                raise ConfigError(f"user {name!r} exists (use --replace to set a new password or identity)")
        return InboxUser(name, identity)

    def remove(self, name: str) -> bool:
        with self.db.connect(write=True) as conn:
            return conn.execute("DELETE FROM inbox_users WHERE name = ?", (name,)).rowcount > 0

    def get(self, name: str) -> InboxUser | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT identity FROM inbox_users WHERE name = ? AND disabled = 0",
                               (name,)).fetchone()
        return InboxUser(name, str(row[0])) if row else None

    def list(self) -> list[tuple[str, str, str, bool]]:
        """(name, identity, created_at, disabled) for every user."""
        with self.db.connect() as conn:
            rows = conn.execute("SELECT name, identity, created_at, disabled FROM inbox_users ORDER BY name")
            return [(str(n), str(i), str(c), bool(d)) for n, i, c, d in rows.fetchall()]

    def verify(self, name: str, password: str) -> InboxUser | None:
        """The user when the password is right; None otherwise (in about the same time either way)."""
        with self.db.connect() as conn:
            row = conn.execute("SELECT identity, salt, hash, params FROM inbox_users WHERE name = ? AND disabled = 0",
                               (name,)).fetchone()
        if row is None:
            hmac.compare_digest(hash_password(password, _DUMMY_SALT), _DUMMY_HASH)
            return None
        identity, salt, stored, params = row
        p = json.loads(params)
        given = hash_password(password, bytes.fromhex(salt), int(p["n"]), int(p["r"]), int(p["p"]))
        return InboxUser(name, str(identity)) if hmac.compare_digest(given, bytes.fromhex(stored)) else None


# --- signed sessions -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    user: str
    csrf: str
    expires: float


class Signer:
    """HMAC-SHA256 signed, expiring session cookies and CSRF tokens."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ConfigError("SIGNOFF_INBOX_SECRET needs at least 16 characters")
        self._key = hashlib.sha256(b"signoff-inbox\x00" + secret.encode()).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: str, ttl_seconds: float) -> tuple[str, Session]:
        session = Session(user=user, csrf=secrets.token_urlsafe(24), expires=time.time() + ttl_seconds)
        payload = _b64(json.dumps({"u": session.user, "c": session.csrf, "e": int(session.expires)}).encode())
        return f"{payload}.{self._mac(payload)}", session

    def read(self, cookie: str | None) -> Session | None:
        if not cookie or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(user=str(data["u"]), csrf=str(data["c"]), expires=float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires > time.time() else None

    def token(self, *parts: str) -> str:
        """A deterministic token bound to ``parts`` (the CSRF token of a header-authenticated user, the
        login form's token bound to its nonce)."""
        return self._mac("\x1f".join(parts))
