"""What the web inbox reads from the state database: paged pending lists, exceptions, quality figures.

Plain SQL over the approvals store's ``proposals`` table (``json_extract`` on the stored proposal on
SQLite, ``data::jsonb ->> ...`` on Postgres; :mod:`signoff.guardrails.statedb`), so the Pending page reads
one page of rows, not all of them: it stays fast with 10,000 pending proposals (``bench/inbox_ttfb.py``).
Writes never happen here: decisions go through ``ServerServices.decide``.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from signoff.domain import Proposal, utcnow
from signoff.guardrails.statedb import StateConn, StateDB, as_statedb

PAGE_SIZE = 50

#: Thread prefix -> the agent that runs such threads.
AGENTS = {"ticket": "triage", "account": "renewal", "contract": "contracts"}

_J = "json_extract(data, '$.{}')".format


def _sorts(conn: StateConn) -> dict[str, str]:
    j = conn.json_field
    return {
        # Most urgent first (soonest expiry; none last), then newest.
        "urgent": f"({j('expires_at')} IS NULL), {j('expires_at')}, created_at DESC, id",
        "newest": "created_at DESC, id",
        "oldest": "created_at, id",
    }


SORTS = ("urgent", "newest", "oldest")


@dataclass
class PendingQuery:
    groups: Collection[str]
    """Only proposals these approver groups decide (the user's groups)."""
    exclude_requester: str | None = None
    """Separation of duties: leave out what this identity raised."""
    agent: str | None = None
    action: str | None = None
    group: str | None = None
    older_than: timedelta | None = None
    sort: str = "urgent"
    page: int = 1
    states: tuple[str, ...] = ("pending",)


@dataclass
class Page:
    rows: list[Proposal]
    total: int
    page: int
    pages: int
    agents: list[str] = field(default_factory=list)


#: A covering expression index on the store's table: the Pending page filters, counts and sorts on it
#: without parsing any proposal's JSON, then reads only the page's rows (``bench/inbox_ttfb.py``).
_INDEXES = f"""
CREATE INDEX IF NOT EXISTS inbox_pending ON proposals(state, {_J('approver_group')}, {_J('expires_at')},
    created_at, {_J('requested_by')}, {_J('action')}, thread_id, id);
"""


class InboxData:
    def __init__(self, db: StateDB | Path) -> None:
        self.db = as_statedb(db)
        self.db.ensure(_INDEXES)  # on Postgres: migration 2's inbox_pending index

    def _where(self, conn: StateConn, q: PendingQuery) -> tuple[str, list[Any]]:
        groups = list(q.groups)
        if not groups:
            return "1 = 0", []
        _j = conn.json_field
        sql = [f"state IN ({','.join('?' * len(q.states))})",
               f"{_j('approver_group')} IN ({','.join('?' * len(groups))})"]
        params: list[Any] = [*q.states, *groups]
        if q.exclude_requester:
            sql.append(f"{_j('requested_by')} {'IS DISTINCT FROM' if conn.postgres else 'IS NOT'} ?")
            params.append(q.exclude_requester)
        if q.agent:
            sql.append("thread_id >= ? AND thread_id < ?")  # a prefix range: the thread index serves it
            params += [q.agent + ":", q.agent + ";"]
        if q.action:
            sql.append(f"{_j('action')} = ?")
            params.append(q.action)
        if q.group:
            sql.append(f"{_j('approver_group')} = ?")
            params.append(q.group)
        if q.older_than:
            sql.append("created_at <= ?")
            params.append(conn.timestamp(utcnow() - q.older_than))
        return " AND ".join(sql), params

    def pending(self, q: PendingQuery) -> Page:
        with self.db.connect() as conn:
            where, params = self._where(conn, q)
            sorts = _sorts(conn)
            order = sorts.get(q.sort, sorts["urgent"])
            total = int(conn.execute(f"SELECT COUNT(*) FROM proposals WHERE {where}", params).fetchone()[0])
            pages = max(1, -(-total // PAGE_SIZE))
            page = min(max(1, q.page), pages)
            # Sort ids only (not whole rows), then read the page's rows.
            ids = [r[0] for r in conn.execute(
                f"SELECT id FROM proposals WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE]).fetchall()]
            found = dict(conn.execute(
                f"SELECT id, data FROM proposals WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()) \
                if ids else {}
            rows = [(found[i],) for i in ids if i in found]
            agents = [str(a) for (a,) in conn.execute(
                f"SELECT DISTINCT {conn.thread_prefix()} FROM proposals"
                " WHERE state = 'pending' ORDER BY 1").fetchall() if a]
        return Page([Proposal.model_validate_json(r[0]) for r in rows], total, page, pages, agents)

    def quality(self) -> list[dict[str, Any]]:
        """Per action: human decisions, approval rate (approved unchanged / decided), edit rate, reject
        rate, median time to decision; expired and pending counts beside them."""
        with self.db.connect() as conn:
            _j = conn.json_field
            cols = (f"{_j('action')}, state, created_at, {_j('decided_at')}, {_j('decided_by')}, "
                    f"{_j('edited_args')} IS NOT NULL")
            rows = conn.execute(f"SELECT {cols} FROM proposals").fetchall()
        by: dict[str, dict[str, Any]] = {}
        for action, state, created, decided_at, decided_by, edited in rows:
            s = by.setdefault(str(action), {"action": action, "decided": 0, "approved": 0, "edited": 0,
                                            "rejected": 0, "expired": 0, "pending": 0, "waits": []})
            if state == "pending":
                s["pending"] += 1
            elif state == "expired":
                s["expired"] += 1
            elif decided_by and not str(decided_by).startswith("system:") and decided_at:
                s["decided"] += 1
                if state == "rejected":
                    s["rejected"] += 1
                elif edited:
                    s["edited"] += 1
                else:
                    s["approved"] += 1
                started = created if isinstance(created, datetime) else datetime.fromisoformat(created)
                wait = datetime.fromisoformat(decided_at) - started
                s["waits"].append(wait.total_seconds())
        out = []
        for s in sorted(by.values(), key=lambda s: s["action"]):
            n = s["decided"]
            out.append({**{k: v for k, v in s.items() if k != "waits"},
                        "approval_rate": s["approved"] / n if n else None,
                        "edit_rate": s["edited"] / n if n else None,
                        "reject_rate": s["rejected"] / n if n else None,
                        "median_seconds": statistics.median(s["waits"]) if s["waits"] else None})
        return out


def latest_reports(directory: Path, limit: int = 20) -> list[tuple[str, datetime, int]]:
    """The eval HTML reports in ``directory`` (``signoff eval --html``), newest first: (name, mtime, bytes)."""
    if not directory.is_dir():
        return []
    from datetime import UTC

    found = []
    for path in directory.glob("*.html"):
        st = path.stat()
        found.append((path.name, datetime.fromtimestamp(st.st_mtime, UTC), st.st_size))
    return sorted(found, key=lambda r: r[1], reverse=True)[:limit]


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    neg, s = seconds < 0, abs(int(seconds))
    if s < 60:
        text = f"{s}s"
    elif s < 3600:
        text = f"{s // 60}m"
    elif s < 86400:
        text = f"{s // 3600}h {s % 3600 // 60}m"
    else:
        text = f"{s // 86400}d {s % 86400 // 3600}h"
    return ("-" if neg else "") + text
