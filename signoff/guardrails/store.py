"""The proposals store: insert-if-absent and compare-and-set transitions.

:class:`ApprovalStore` is the port; :class:`SqliteApprovalStore` the embedded adapter (one file, safe
across processes: every transition runs under SQLite's write lock) and :class:`InMemoryApprovalStore`
the in-memory one for unit tests. ``tests/test_store.py`` runs the same assertions on both.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from signoff.domain import Proposal, utcnow
from signoff.errors import ProposalNotFound
from signoff.guardrails.owner import owner_gone, process_owner


class ApprovalStore(Protocol):
    def add(self, proposal: Proposal) -> tuple[Proposal, bool]:
        """Insert unless a proposal with this id exists. Returns the stored proposal and whether it is new."""
        ...

    def get(self, proposal_id: str) -> Proposal: ...

    def find(self, *, states: Collection[str] | None = None, thread_id: str | None = None) -> list[Proposal]:
        """Proposals, oldest first, optionally filtered by state and thread."""
        ...

    def transition(self, proposal_id: str, from_states: Collection[str], *, expect: dict[str, Any] | None = None,
                   **changes: Any) -> Proposal | None:
        """Apply ``changes`` only if the state is in ``from_states`` (and fields equal ``expect``).

        Returns the updated proposal, or None when the condition did not hold (someone else moved first).
        """
        ...

    def claim(self, key: str, *, stale_after: float) -> bool:
        """Take ``key`` (e.g. a run's thread id) unless someone took it less than ``stale_after`` s ago and
        is still running (a holder on this host that has died frees it at once: :mod:`.owner`)."""
        ...

    def release(self, key: str) -> None:
        """Give ``key`` back (the work it guarded is finished or failed)."""
        ...


def _claim_fresh(claimed_at: str | None, stale_after: float) -> bool:
    from datetime import datetime

    return claimed_at is not None and (utcnow() - datetime.fromisoformat(claimed_at)).total_seconds() < stale_after


def resolve_id(store: ApprovalStore, prefix: str) -> str:
    """Accept a unique prefix of a proposal id (as the CLI prints them short)."""
    if not prefix:
        raise ProposalNotFound("empty proposal id")
    try:
        return store.get(prefix).id
    except ProposalNotFound:
        pass
    matches = [p.id for p in store.find() if p.id.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ProposalNotFound(f"no proposal {prefix!r}")
    raise ProposalNotFound(f"{prefix!r} matches {len(matches)} proposals; give more characters")


def _holds(current: Proposal, from_states: Collection[str], expect: dict[str, Any] | None) -> bool:
    return current.state in from_states and all(getattr(current, k) == v for k, v in (expect or {}).items())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS proposals (
    id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS proposals_thread ON proposals(thread_id);
CREATE INDEX IF NOT EXISTS proposals_state ON proposals(state);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, claimed_at TEXT NOT NULL, owner TEXT);
"""


@contextmanager
def sqlite_connection(path: Path, *, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A short-lived connection to a WAL SQLite file; ``write=True`` takes the write lock up front."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=30000")
        if not write:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


class SqliteFile:
    """One SQLite file in WAL mode, one reused connection per thread (opening one per call costs ~6x)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        """The thread's connection; ``write=True`` runs the block in one BEGIN IMMEDIATE transaction."""
        conn = self._conn()
        if not write:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


class SqliteApprovalStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SqliteFile(path)
        with self.db.connect() as conn:
            conn.executescript(_SCHEMA)
            if "owner" not in {r[1] for r in conn.execute("PRAGMA table_info(claims)")}:  # a file from before owners
                conn.execute("ALTER TABLE claims ADD COLUMN owner TEXT")

    def add(self, proposal: Proposal) -> tuple[Proposal, bool]:
        with self.db.connect(write=True) as conn:
            row = conn.execute("SELECT data FROM proposals WHERE id = ?", (proposal.id,)).fetchone()
            if row:
                return Proposal.model_validate_json(row[0]), False
            conn.execute(
                "INSERT INTO proposals (id, thread_id, state, created_at, data) VALUES (?, ?, ?, ?, ?)",
                (proposal.id, proposal.thread_id, proposal.state, proposal.created_at.isoformat(),
                 proposal.model_dump_json()),
            )
            return proposal, True

    def get(self, proposal_id: str) -> Proposal:
        with self.db.connect() as conn:
            row = conn.execute("SELECT data FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
        if not row:
            raise ProposalNotFound(f"no proposal {proposal_id!r}")
        return Proposal.model_validate_json(row[0])

    def find(self, *, states: Collection[str] | None = None, thread_id: str | None = None) -> list[Proposal]:
        sql, params = "SELECT data FROM proposals WHERE 1=1", []
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            params += list(states)
        if thread_id is not None:
            sql += " AND thread_id = ?"
            params.append(thread_id)
        with self.db.connect() as conn:
            rows = conn.execute(sql + " ORDER BY created_at, id", params).fetchall()
        return [Proposal.model_validate_json(r[0]) for r in rows]

    def transition(self, proposal_id: str, from_states: Collection[str], *, expect: dict[str, Any] | None = None,
                   **changes: Any) -> Proposal | None:
        with self.db.connect(write=True) as conn:
            row = conn.execute("SELECT data FROM proposals WHERE id = ?", (proposal_id,)).fetchone()
            if not row:
                raise ProposalNotFound(f"no proposal {proposal_id!r}")
            current = Proposal.model_validate_json(row[0])
            if not _holds(current, from_states, expect):
                return None
            updated = current.model_copy(update=changes)
            updated = Proposal.model_validate(updated.model_dump())
            conn.execute(
                "UPDATE proposals SET state = ?, data = ? WHERE id = ?",
                (updated.state, updated.model_dump_json(), proposal_id),
            )
            return updated


    def claim(self, key: str, *, stale_after: float) -> bool:
        with self.db.connect(write=True) as conn:
            row = conn.execute("SELECT claimed_at, owner FROM claims WHERE key = ?", (key,)).fetchone()
            if row and _claim_fresh(row[0], stale_after) and not owner_gone(row[1]):
                return False
            conn.execute("INSERT OR REPLACE INTO claims (key, claimed_at, owner) VALUES (?, ?, ?)",
                         (key, utcnow().isoformat(), process_owner()))
            return True

    def release(self, key: str) -> None:
        with self.db.connect(write=True) as conn:
            conn.execute("DELETE FROM claims WHERE key = ?", (key,))


class InMemoryApprovalStore:
    def __init__(self) -> None:
        self._rows: dict[str, Proposal] = {}
        self._claims: dict[str, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, *, stale_after: float) -> bool:
        with self._lock:
            at, owner = self._claims.get(key, (None, None))
            if _claim_fresh(at, stale_after) and not owner_gone(owner):
                return False
            self._claims[key] = (utcnow().isoformat(), process_owner())
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._claims.pop(key, None)

    def add(self, proposal: Proposal) -> tuple[Proposal, bool]:
        with self._lock:
            if proposal.id in self._rows:
                return self._rows[proposal.id], False
            self._rows[proposal.id] = proposal.model_copy(deep=True)
            return proposal, True

    def get(self, proposal_id: str) -> Proposal:
        try:
            return self._rows[proposal_id].model_copy(deep=True)
        except KeyError:
            raise ProposalNotFound(f"no proposal {proposal_id!r}") from None

    def find(self, *, states: Collection[str] | None = None, thread_id: str | None = None) -> list[Proposal]:
        rows = sorted(self._rows.values(), key=lambda p: (p.created_at, p.id))
        return [
            p.model_copy(deep=True)
            for p in rows
            if (states is None or p.state in states) and (thread_id is None or p.thread_id == thread_id)
        ]

    def transition(self, proposal_id: str, from_states: Collection[str], *, expect: dict[str, Any] | None = None,
                   **changes: Any) -> Proposal | None:
        with self._lock:
            current = self.get(proposal_id)
            if not _holds(current, from_states, expect):
                return None
            updated = Proposal.model_validate(current.model_copy(update=changes).model_dump())
            self._rows[proposal_id] = updated
            return updated.model_copy(deep=True)
