"""The audit trail: append-only, hash-chained events.

Each event's hash is ``sha256(prev_hash + canonical JSON of the event)``; :meth:`verify` recomputes
the chain and names the first event that does not match.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from signoff.domain import AuditEvent, canonical_json, utcnow
from signoff.errors import AuditIntegrityError
from signoff.guardrails.store import SqliteFile

GENESIS = "0" * 64


def _event_hash(prev_hash: str, seq: int, at: datetime, kind: str, subject: str, actor: str,
                data: dict[str, Any]) -> str:
    body = canonical_json({"seq": seq, "at": at.isoformat(), "kind": kind, "subject": subject,
                           "actor": actor, "data": data})
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


class AuditLog(Protocol):
    def append(self, kind: str, subject: str, actor: str, data: dict[str, Any] | None = None, *,
               thread_id: str | None = None) -> AuditEvent: ...

    def trail(self, subject: str | None = None) -> list[AuditEvent]:
        """Events about ``subject`` (a thread id or a proposal id; a thread includes its proposals)."""
        ...

    def verify(self) -> int:
        """Check the whole chain; return the number of events. Raises AuditIntegrityError."""
        ...


def verify_chain(events: list[AuditEvent]) -> int:
    prev = GENESIS
    for event in events:
        expected = _event_hash(prev, event.seq, event.at, event.kind, event.subject, event.actor, event.data)
        if event.prev_hash != prev or event.hash != expected:
            raise AuditIntegrityError(f"audit chain broken at event #{event.seq} ({event.kind} {event.subject})")
        prev = event.hash
    return len(events)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    thread_id TEXT,
    actor TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit(subject);
CREATE INDEX IF NOT EXISTS audit_thread ON audit(thread_id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


def _row_to_event(row: tuple[Any, ...]) -> AuditEvent:
    seq, at, kind, subject, actor, data, prev_hash, hash_ = row
    return AuditEvent(seq=seq, at=datetime.fromisoformat(at), kind=kind, subject=subject, actor=actor,
                      data=json.loads(data), prev_hash=prev_hash, hash=hash_)


class SqliteAuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SqliteFile(path)
        with self.db.connect() as conn:
            conn.executescript(_SCHEMA)

    def append(self, kind: str, subject: str, actor: str, data: dict[str, Any] | None = None, *,
               thread_id: str | None = None) -> AuditEvent:
        data = json.loads(canonical_json(data or {}))
        with self.db.connect(write=True) as conn:
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            at = utcnow()
            digest = _event_hash(prev, seq, at, kind, subject, actor, data)
            conn.execute(
                "INSERT INTO audit (seq, at, kind, subject, thread_id, actor, data, prev_hash, hash)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, at.isoformat(), kind, subject, thread_id, actor, canonical_json(data), prev, digest),
            )
        return AuditEvent(seq=seq, at=at, kind=kind, subject=subject, actor=actor, data=data,
                          prev_hash=prev, hash=digest)

    def trail(self, subject: str | None = None) -> list[AuditEvent]:
        cols = "seq, at, kind, subject, actor, data, prev_hash, hash"
        with self.db.connect() as conn:
            if subject is None:
                rows = conn.execute(f"SELECT {cols} FROM audit ORDER BY seq").fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {cols} FROM audit WHERE subject = ? OR thread_id = ? ORDER BY seq",
                    (subject, subject),
                ).fetchall()
        return [_row_to_event(r) for r in rows]

    def verify(self) -> int:
        return verify_chain(self.trail())


class InMemoryAuditLog:
    def __init__(self) -> None:
        self._events: list[tuple[AuditEvent, str | None]] = []
        self._lock = threading.Lock()

    def append(self, kind: str, subject: str, actor: str, data: dict[str, Any] | None = None, *,
               thread_id: str | None = None) -> AuditEvent:
        data = json.loads(canonical_json(data or {}))
        with self._lock:
            seq = len(self._events) + 1
            prev = self._events[-1][0].hash if self._events else GENESIS
            at = utcnow()
            event = AuditEvent(seq=seq, at=at, kind=kind, subject=subject, actor=actor, data=data,
                               prev_hash=prev, hash=_event_hash(prev, seq, at, kind, subject, actor, data))
            self._events.append((event, thread_id))
        return event

    def trail(self, subject: str | None = None) -> list[AuditEvent]:
        return [e for e, t in self._events if subject is None or e.subject == subject or t == subject]

    def verify(self) -> int:
        return verify_chain([e for e, _ in self._events])
