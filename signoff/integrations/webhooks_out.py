"""Events out: subscriptions, an outbox fed from the audit log, and signed, retried, ordered deliveries.

Every decision, expiry and execution already lands in the audit log, whatever the channel (Slack, Odoo,
web inbox, REST, CLI). So events are *derived* from it: :meth:`Outbox.ingest` tails the ``audit`` table
by sequence number (a cursor row in the same database, moved in the same transaction that writes the
events and their deliveries) and maps audit kinds to event types:

==========================  ========================
audit kind                  event type
==========================  ========================
``proposal.created``        ``proposal.created``
``proposal.approved``       ``proposal.decided``  (``decision.verdict: approved``; ``edited`` when edited)
``proposal.rejected``       ``proposal.decided``  (``decision.verdict: rejected``)
``proposal.expired``        ``proposal.expired``
``execution.succeeded``     ``execution.succeeded``
``execution.failed``        ``execution.failed``
``run.needs_human``         ``run.needs_human``
==========================  ========================

Nothing is lost when a consumer (or Signoff) is down: an event becomes one delivery row per matching
subscription (the outbox) before anything is sent; a restart resumes from the cursor and the rows.

Each delivery is a ``POST`` of the JSON event, signed with the subscription's secret:
``X-Signoff-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``, with
``X-Signoff-Timestamp`` (Unix seconds), ``X-Signoff-Event-Id`` (stable across retries: deduplicate on
it) and ``X-Signoff-Event`` (the type). Any 2xx is delivered; anything else (or no answer) is retried
with exponential backoff until ``outbound_give_up_seconds`` after the first attempt, then ``failed``
(``signoff subscriptions replay EVENT_ID`` sends it again). Status, attempts and the last error are
recorded per delivery.

Order: deliveries to one subscription for one *subject* (the run: the thread id, so a proposal's
``created`` -> ``decided`` -> ``execution.*`` and its run's other events) are sent one at a time, in
audit order: event n+1 is not sent before n is delivered or given up.

Payloads carry ids and facts, never ticket text. ``scope: facts`` (default) adds the proposal's
arguments and the decision's reason with PII redacted and free text cut; ``scope: ids`` sends ids,
states and actors only.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx

from signoff.errors import DataError
from signoff.guardrails.screens import redact
from signoff.guardrails.statedb import StateConn, StateDB, as_statedb

log = logging.getLogger(__name__)

EventType = Literal["proposal.created", "proposal.decided", "proposal.expired", "execution.succeeded",
                    "execution.failed", "run.needs_human"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
AUDIT_TO_EVENT: dict[str, str] = {
    "proposal.created": "proposal.created",
    "proposal.approved": "proposal.decided",
    "proposal.rejected": "proposal.decided",
    "proposal.expired": "proposal.expired",
    "execution.succeeded": "execution.succeeded",
    "execution.failed": "execution.failed",
    "run.needs_human": "run.needs_human",
}
PayloadScope = Literal["facts", "ids"]
PAYLOAD_SCOPES: tuple[str, ...] = get_args(PayloadScope)
DeliveryStatus = Literal["pending", "sending", "delivered", "failed", "cancelled"]
SIGNATURE_HEADER = "X-Signoff-Signature"
TIMESTAMP_HEADER = "X-Signoff-Timestamp"
EVENT_ID_HEADER = "X-Signoff-Event-Id"
#: The longest free-text value a ``facts`` payload carries (longer ones become ``[TEXT n chars]``).
MAX_TEXT = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    scope TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    created_seq INTEGER NOT NULL,
    removed_at TEXT
);
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,
    type TEXT NOT NULL,
    subject TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    order_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    first_attempt_at REAL,
    last_attempt_at REAL,
    claimed_at REAL,
    last_status INTEGER,
    last_error TEXT,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_order ON webhook_deliveries(subscription_id, order_key, seq);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_event ON webhook_deliveries(event_id);
CREATE TABLE IF NOT EXISTS webhook_cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""


# --- signatures -------------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def verify(secret: str, timestamp: str | None, body: bytes, signature: str | None, *,
           tolerance: float = 300.0, now: float | None = None) -> str | None:
    """None when the signature is good and fresh; otherwise what is wrong (for the log, not the caller)."""
    if not timestamp or not signature:
        return "signature or timestamp header missing"
    try:
        ts = float(timestamp)
    except ValueError:
        return "timestamp is not a number"
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return "timestamp outside the tolerance (replayed or clock skew)"
    if not hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.strip().encode()):
        return "signature does not match"
    return None


# --- records ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    events: tuple[str, ...]
    scope: str
    description: str | None
    created_at: str
    removed_at: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events), "scope": self.scope,
                "description": self.description, "created_at": self.created_at, "removed_at": self.removed_at}


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    url: str
    order_key: str
    status: str
    attempts: int
    next_at: float
    last_status: int | None
    last_error: str | None
    delivered_at: float | None
    seq: int

    def public(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if t else None

        return {"id": self.id, "event_id": self.event_id, "event_type": self.event_type,
                "subscription_id": self.subscription_id, "url": self.url, "subject": self.order_key,
                "status": self.status, "attempts": self.attempts, "last_status": self.last_status,
                "last_error": self.last_error,
                "next_attempt_at": iso(self.next_at) if self.status == "pending" else None,
                "delivered_at": iso(self.delivered_at)}


_DELIVERY_COLS = ("d.id, d.event_id, e.type, d.subscription_id, s.url, d.order_key, d.status, d.attempts, d.next_at, "
                  "d.last_status, d.last_error, d.delivered_at, d.seq")
_DELIVERY_FROM = ("FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id "
                  "JOIN webhook_subscriptions s ON s.id = d.subscription_id")


def _delivery(row: tuple[Any, ...]) -> Delivery:
    return Delivery(*row)


def check_url(url: str) -> str:
    """An http(s) URL whose host, when it is an address, is one a webhook may go to (:func:`refused_address`)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"a subscription URL must be http(s)://host/...: {url!r}")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url  # a name: checked again on each delivery, where it resolves
    if (why := refused_address(literal)) is not None:
        raise DataError(f"a subscription URL may not point at {literal} ({why})")
    return url


def refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why events are never sent to ``ip``, or None. Link-local covers cloud metadata (169.254.169.254);
    loopback and private networks stay allowed (n8n beside Signoff is the common case)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if ip.is_link_local:
        return "link-local: cloud metadata lives there"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "not a host address"
    return None


def check_destination(url: str) -> None:
    """Resolve the URL's host now and refuse it when any address is refused (DataError)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return  # unresolvable: the POST fails with its own error
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if (why := refused_address(ip)) is not None:
            raise DataError(f"{host} resolves to {ip} ({why}): not sent")


# --- payloads ---------------------------------------------------------------------------------------


def _text(value: str) -> str:
    clean, _ = redact(value)
    return clean if len(clean) <= MAX_TEXT else f"[TEXT {len(clean)} chars]"


def _safe(value: Any) -> Any:
    """Scalars pass, strings are redacted (and long ones dropped), containers recurse."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def _reason_head(reason: str) -> str:
    """The system-written head of a reason (before any quoted detail, which may be ticket text)."""
    return _text(reason.split(": ", 1)[0])


def build_event(conn: Any, row: tuple[Any, ...], event_type: str) -> dict[str, Any]:
    """The full (``facts``) event for one audit row; :func:`scoped` trims it for ``ids`` subscriptions."""
    seq, at, kind, subject, thread_id, actor, data_json, digest = row
    data = json.loads(data_json)
    event_id = "evt_" + digest[:32]
    body: dict[str, Any] = {}
    proposal: dict[str, Any] | None = None
    if kind.startswith(("proposal.", "execution.")):
        found = conn.execute("SELECT data FROM proposals WHERE id = ?", (subject,)).fetchone() \
            if _has_table(conn, "proposals") else None
        if found:
            p = json.loads(found[0])
            proposal = {
                "id": p["id"], "action": p["action"],
                "target": {"model": p["target_model"], "id": p["target_id"]},
                "approver_group": p.get("approver_group"), "channel": p.get("channel"),
                "confidence": p.get("confidence"), "requested_by": p.get("requested_by"),
                "created_at": p.get("created_at"), "expires_at": p.get("expires_at"),
                "policy_version": p.get("policy_version"), "model_version": p.get("model_version"),
                "args": _safe(_args_at(kind, data, p)),
            }
            thread_id = thread_id or p.get("thread_id")
        body["proposal"] = proposal or {"id": subject}
    if event_type == "proposal.decided":
        verdict = kind.split(".", 1)[1]
        body["decision"] = {"verdict": verdict, "by": actor, "at": at, "channel": data.get("channel"),
                            "edited": bool(proposal and verdict == "approved" and
                                           _was_edited(conn, subject)),
                            "reason": _text(data["reason"]) if data.get("reason") else None}
    elif event_type == "proposal.expired":
        body["decision"] = {"verdict": "expired", "by": actor, "at": at}
    elif event_type == "execution.succeeded":
        result = data.get("result") or {}
        body["execution"] = {"attempt": data.get("attempt"), "reconciled": bool(result.get("reconciled")),
                             "result": {k: v for k, v in result.items()
                                        if isinstance(v, int | float | bool) and k != "reconciled"}}
    elif event_type == "execution.failed":
        body["execution"] = {"attempt": data.get("attempt"),
                             "error": _text(str(data.get("error") or ""))}
    elif event_type == "run.needs_human":
        body["run"] = {"agent": actor, "reasons": [_reason_head(str(r)) for r in data.get("reasons", [])]}
    return {"id": event_id, "type": event_type, "occurred_at": at, "sequence": seq, "subject": subject,
            "thread_id": thread_id, "data": body}


def _args_at(kind: str, data: dict[str, Any], p: dict[str, Any]) -> Any:
    """The arguments as of this event: the approved (maybe edited) ones from a decision on."""
    if kind == "proposal.approved" and "args" in data:
        return data["args"]
    if kind.startswith("execution.") and p.get("edited_args") is not None:
        return p["edited_args"]
    return p.get("args") or {}


def _was_edited(conn: Any, proposal_id: str) -> bool:
    return conn.execute("SELECT 1 FROM audit WHERE subject = ? AND kind = 'proposal.edited' LIMIT 1",
                        (proposal_id,)).fetchone() is not None


def scoped(event: dict[str, Any], scope: str) -> dict[str, Any]:
    """The event as a subscription of ``scope`` may see it (``ids``: no args, reasons or errors)."""
    if scope != "ids":
        return event
    out = json.loads(json.dumps(event))
    data = out["data"]
    if isinstance(data.get("proposal"), dict):
        data["proposal"].pop("args", None)
    if isinstance(data.get("decision"), dict):
        data["decision"].pop("reason", None)
    if isinstance(data.get("execution"), dict):
        data["execution"].pop("error", None)
    if isinstance(data.get("run"), dict):
        data["run"]["reasons"] = len(data["run"].get("reasons", []))
    return out


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# --- the outbox -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    backoff: float = 5.0
    """Seconds before the second attempt; doubles each time."""
    backoff_max: float = 900.0
    give_up: float = 86400.0
    """Seconds after the first attempt after which a delivery is ``failed`` (replay sends it again)."""
    timeout: float = 10.0
    """Seconds per HTTP request."""

    def delay(self, attempts: int) -> float:
        return float(min(self.backoff_max, self.backoff * 2 ** max(0, attempts - 1)))


class Outbox:
    """Subscriptions, events and deliveries in the state database (beside the audit log it tails).

    Several workers on one Postgres: one ingests at a time (``pg_try_advisory_xact_lock``; the others skip
    the pass), and a delivery is claimed by one compare-and-set update that skips rows another worker has
    locked (``FOR UPDATE SKIP LOCKED``), so no delivery is sent by two workers at once.
    """

    def __init__(self, db: StateDB | Path) -> None:
        self.db = as_statedb(db)
        self.db.ensure(_SCHEMA)

    # -- subscriptions ------------------------------------------------------------------------------

    def subscribe(self, url: str, events: Iterable[str], *, secret: str | None = None, scope: str = "facts",
                  description: str | None = None) -> tuple[Subscription, str]:
        """A new subscription and its signing secret (generated when not given)."""
        check_url(url)
        wanted = tuple(dict.fromkeys(events))
        if not wanted:
            raise DataError(f"name at least one event type: {', '.join(EVENT_TYPES)}")
        unknown = [e for e in wanted if e not in EVENT_TYPES]
        if unknown:
            raise DataError(f"unknown event type {', '.join(unknown)}: use {', '.join(EVENT_TYPES)}")
        if scope not in PAYLOAD_SCOPES:
            raise DataError(f"scope must be {' or '.join(PAYLOAD_SCOPES)}, not {scope!r}")
        if secret is not None and len(secret) < 16:
            raise DataError("a subscription secret needs at least 16 characters (or omit it to get one)")
        secret = secret or "whsec_" + secrets.token_urlsafe(32)
        sub_id = "sub_" + secrets.token_hex(6)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.db.connect(write=True) as conn:
            conn.execute(
                "INSERT INTO webhook_subscriptions (id, url, events, secret, scope, description, created_at,"
                " created_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sub_id, url, json.dumps(list(wanted)), secret, scope, description, now, _audit_head(conn)))
        return Subscription(sub_id, url, wanted, scope, description, now), secret

    def subscriptions(self, *, include_removed: bool = False) -> list[Subscription]:
        sql = "SELECT id, url, events, scope, description, created_at, removed_at FROM webhook_subscriptions"
        if not include_removed:
            sql += " WHERE removed_at IS NULL"
        with self.db.connect() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id").fetchall()
        return [Subscription(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5], r[6]) for r in rows]

    def unsubscribe(self, sub_id: str) -> Subscription:
        """Remove a subscription: no new deliveries; its pending ones are cancelled (records stay)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self.db.connect(write=True) as conn:
            changed = conn.execute("UPDATE webhook_subscriptions SET removed_at = ? "
                                   "WHERE id = ? AND removed_at IS NULL", (now, sub_id)).rowcount
            if not changed:
                raise DataError(f"no active subscription {sub_id!r}")
            conn.execute("UPDATE webhook_deliveries SET status = 'cancelled' WHERE subscription_id = ? "
                         "AND status = 'pending'", (sub_id,))
        return next(s for s in self.subscriptions(include_removed=True) if s.id == sub_id)

    # -- events in ----------------------------------------------------------------------------------

    def ingest(self, batch: int = 500) -> int:
        """Turn new audit events into events and deliveries; returns the number of events made."""
        made = 0
        while True:
            with self.db.connect(write=True) as conn:
                if not conn.try_lock("outbox.ingest"):
                    return made  # another worker is ingesting these very rows
                if not _has_table(conn, "audit"):
                    return made
                row = conn.execute("SELECT seq FROM webhook_cursor WHERE name = 'audit'").fetchone()
                cursor = row[0] if row else 0
                rows = conn.execute(
                    "SELECT seq, at, kind, subject, thread_id, actor, data, hash FROM audit WHERE seq > ? "
                    "ORDER BY seq LIMIT ?", (cursor, batch)).fetchall()
                if not rows:
                    return made
                subs = [(r[0], set(json.loads(r[1])), r[2]) for r in conn.execute(
                    "SELECT id, events, created_seq FROM webhook_subscriptions WHERE removed_at IS NULL")]
                now = time.time()
                for audit_row in rows:
                    seq, kind = audit_row[0], audit_row[2]
                    event_type = AUDIT_TO_EVENT.get(kind)
                    targets = [sid for sid, types, since in subs if event_type in types and seq > since]
                    if event_type is None or not targets:
                        continue
                    event = build_event(conn, audit_row, event_type)
                    order_key = event["thread_id"] or event["subject"]
                    conn.execute("INSERT INTO webhook_events (id, seq, type, subject, order_key, payload)"
                                 " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                                 (event["id"], seq, event_type, event["subject"], order_key, json.dumps(event)))
                    for sid in targets:
                        conn.execute(
                            "INSERT INTO webhook_deliveries (id, event_id, subscription_id, seq, order_key,"
                            " status, next_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (id) DO NOTHING",
                            (f"dlv_{event['id'][4:20]}_{sid[4:]}", event["id"], sid, seq, order_key, now))
                    made += 1
                conn.execute("INSERT INTO webhook_cursor (name, seq) VALUES ('audit', ?)"
                             " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq", (rows[-1][0],))
            if len(rows) < batch:
                return made

    # -- deliveries ---------------------------------------------------------------------------------

    def due(self, *, now: float | None = None, limit: int = 50, stale_after: float = 120.0) -> list[Delivery]:
        """The next delivery of each (subscription, subject) that may be sent now, oldest first."""
        now = time.time() if now is None else now
        with self.db.connect(write=True) as conn:  # a send that died mid-way goes back to pending
            conn.execute("UPDATE webhook_deliveries SET status = 'pending' WHERE status = 'sending' AND claimed_at < ?",
                         (now - stale_after,))
        with self.db.connect() as conn:
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLS} {_DELIVERY_FROM} WHERE d.status = 'pending' AND d.next_at <= ? "
                "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o WHERE o.subscription_id = d.subscription_id "
                "AND o.order_key = d.order_key AND o.seq < d.seq AND o.status IN ('pending', 'sending')) "
                "ORDER BY d.seq LIMIT ?", (now, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def claim(self, delivery_id: str) -> bool:
        """Take a pending delivery for one attempt (compare-and-set: two senders never both send it)."""
        with self.db.connect(write=True) as conn:
            if conn.postgres:  # a row another worker is claiming right now is skipped, not waited for
                return conn.execute(
                    "UPDATE webhook_deliveries SET status = 'sending', claimed_at = ? WHERE id = "
                    "(SELECT id FROM webhook_deliveries WHERE id = ? AND status = 'pending' FOR UPDATE SKIP LOCKED)"
                    " AND status = 'pending'", (time.time(), delivery_id)).rowcount == 1
            return conn.execute("UPDATE webhook_deliveries SET status = 'sending', claimed_at = ? "
                                "WHERE id = ? AND status = 'pending'", (time.time(), delivery_id)).rowcount == 1

    def material(self, delivery_id: str) -> tuple[dict[str, Any], str, str, str]:
        """(event as the subscription may see it, url, secret, attempts so far) of one delivery."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT e.payload, s.scope, s.url, s.secret, d.attempts FROM webhook_deliveries d "
                "JOIN webhook_events e ON e.id = d.event_id JOIN webhook_subscriptions s ON s.id = d.subscription_id "
                "WHERE d.id = ?", (delivery_id,)).fetchone()
        if row is None:
            raise DataError(f"no delivery {delivery_id!r}")
        return scoped(json.loads(row[0]), row[1]), row[2], row[3], str(row[4])

    def record(self, delivery_id: str, *, ok: bool, status: int | None, error: str | None,
               retry: RetryPolicy, now: float | None = None) -> str:
        """Record one attempt; returns the new status (``delivered``, ``pending`` to retry, or ``failed``)."""
        now = time.time() if now is None else now
        with self.db.connect(write=True) as conn:
            attempts, first = conn.execute("SELECT attempts, first_attempt_at FROM webhook_deliveries WHERE id = ?"
                                           + conn.for_update, (delivery_id,)).fetchone()
            attempts, first = attempts + 1, first or now
            if ok:
                new, next_at = "delivered", now
            elif now - first >= retry.give_up:
                new, next_at = "failed", now
            else:
                new, next_at = "pending", now + retry.delay(attempts)
            conn.execute(
                "UPDATE webhook_deliveries SET status = ?, attempts = ?, first_attempt_at = ?, last_attempt_at = ?,"
                " next_at = ?, claimed_at = NULL, last_status = ?, last_error = ?, delivered_at = ? WHERE id = ?",
                (new, attempts, first, now, next_at, status, None if ok else (error or "")[:500],
                 now if ok else None, delivery_id))
        return new

    def deliveries(self, *, event_id: str | None = None, subscription_id: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[Delivery]:
        sql, params = f"SELECT {_DELIVERY_COLS} {_DELIVERY_FROM} WHERE 1=1", []
        for column, value in (("d.event_id", event_id), ("d.subscription_id", subscription_id), ("d.status", status)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        with self.db.connect() as conn:
            rows = conn.execute(sql + " ORDER BY d.seq DESC, d.id LIMIT ?", (*params, limit)).fetchall()
        return [_delivery(r) for r in rows]

    def replay(self, event_id: str, *, subscription_id: str | None = None) -> list[Delivery]:
        """Send an event again (delivered, failed or cancelled alike) to its active subscriptions."""
        with self.db.connect(write=True) as conn:
            if conn.execute("SELECT 1 FROM webhook_events WHERE id = ?", (event_id,)).fetchone() is None:
                raise DataError(f"no event {event_id!r} (events are kept only when a subscription wanted them)")
            sql = ("UPDATE webhook_deliveries SET status = 'pending', next_at = ?, first_attempt_at = NULL, "
                   "claimed_at = NULL WHERE event_id = ? AND status != 'sending' AND subscription_id IN "
                   "(SELECT id FROM webhook_subscriptions WHERE removed_at IS NULL)")
            params: list[Any] = [time.time(), event_id]
            if subscription_id:
                sql += " AND subscription_id = ?"
                params.append(subscription_id)
            conn.execute(sql, params)
        return [d for d in self.deliveries(event_id=event_id)
                if subscription_id is None or d.subscription_id == subscription_id]

    def event(self, event_id: str) -> dict[str, Any] | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT payload FROM webhook_events WHERE id = ?", (event_id,)).fetchone()
        return json.loads(row[0]) if row else None


def _has_table(conn: StateConn, name: str) -> bool:
    return conn.has_table(name)


def _audit_head(conn: StateConn) -> int:
    if not _has_table(conn, "audit"):
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit").fetchone()[0])


# --- the sender -------------------------------------------------------------------------------------


class Deliverer:
    """Sends due deliveries: one attempt each, in parallel across subjects, in order within one."""

    def __init__(self, outbox: Outbox, retry: RetryPolicy, *, poll: float = 1.0, workers: int = 4,
                 client: httpx.Client | None = None) -> None:
        self.outbox, self.retry, self.poll = outbox, retry, poll
        self.client = client or httpx.Client(timeout=retry.timeout, follow_redirects=False,
                                             headers={"User-Agent": "Signoff-Webhooks/1"})
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="signoff-webhooks")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def attempt(self, delivery_id: str) -> str | None:
        """One signed POST of one delivery, if it can be claimed; returns the new status."""
        if not self.outbox.claim(delivery_id):
            return None
        try:
            event, url, secret, attempts = self.outbox.material(delivery_id)
            body = encode(event)
            ts = str(int(time.time()))
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, ts, body),
                       TIMESTAMP_HEADER: ts, EVENT_ID_HEADER: event["id"], "X-Signoff-Event": event["type"],
                       "X-Signoff-Delivery": delivery_id, "X-Signoff-Attempt": str(int(attempts) + 1)}
            check_destination(url)
            answer = self.client.post(url, content=body, headers=headers)
            ok = 200 <= answer.status_code < 300
            error = None if ok else f"HTTP {answer.status_code}: {answer.text[:200]}"
            return self.outbox.record(delivery_id, ok=ok, status=answer.status_code, error=error, retry=self.retry)
        except (httpx.HTTPError, DataError) as exc:
            return self.outbox.record(delivery_id, ok=False, status=None, error=f"{type(exc).__name__}: {exc}",
                                      retry=self.retry)
        except Exception as exc:  # never leave a row in 'sending' for a bug: record it and move on
            log.exception("delivery %s failed unexpectedly", delivery_id)
            return self.outbox.record(delivery_id, ok=False, status=None, error=f"{type(exc).__name__}: {exc}",
                                      retry=self.retry)

    def run_once(self) -> int:
        """Ingest new audit events, then attempt every delivery that is due; returns attempts made."""
        self.outbox.ingest()
        due = self.outbox.due(stale_after=self.retry.timeout * 2 + 30)
        if not due:
            return 0
        return sum(1 for status in self.pool.map(self.attempt, [d.id for d in due]) if status is not None)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                log.exception("webhook delivery pass failed")
                busy = 0
            if not busy:
                self._wake.wait(self.poll)
                self._wake.clear()

    def start(self) -> Deliverer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="signoff-webhooks-out", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry.timeout + 5)
        self.pool.shutdown(wait=True)
        self.client.close()
