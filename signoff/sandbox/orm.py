"""A small, schema-driven emulation of Odoo's ORM, as seen over external RPC.

The engine does what an Odoo server does with an ``execute_kw`` call: checks the model, the method
and the user's rights, evaluates domains, and serialises records the way Odoo does (``false`` for
empty, ``[id, display_name]`` for many2one, ISO date strings). Storage is a :class:`Backend`: SQLite
for the HTTP stand-in (:mod:`signoff.sandbox.odoo`), a dict for
:class:`~signoff.integrations.odoo.InMemoryOdoo`,
so both answer identically.

Errors are :class:`OdooFault`, carrying Odoo's ``error.data.name`` (``odoo.exceptions.MissingError``...).
Behaviour is derived from ``shared/research/odoo_slack.md``; no Odoo code is copied.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import sqlite3
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

from signoff.sandbox.schema import MAIL_THREAD_MODELS, MODELS, FieldSpec, fields_of

SUPERUSER_ID = 1
Record = dict[str, Any]

#: Methods a read-only user may call (anything else needs write access).
READ_METHODS = frozenset(
    {
        "fields_get",
        "search",
        "search_read",
        "read",
        "search_count",
        "name_search",
        "name_get",
        "default_get",
        "context_get",
        "check_object_reference",
    }
)

VERSION_PROFILES: dict[str, dict[str, Any]] = {
    "16.0": {
        "server_version": "16.0",
        "server_version_info": [16, 0, 0, "final", 0, ""],
        "server_serie": "16.0",
    },
    "17.0": {
        "server_version": "17.0",
        "server_version_info": [17, 0, 0, "final", 0, ""],
        "server_serie": "17.0",
    },
    "18.0": {
        "server_version": "18.0",
        "server_version_info": [18, 0, 0, "final", 0, ""],
        "server_serie": "18.0",
    },
}


def version_info(version: str) -> dict[str, Any]:
    try:
        return {**VERSION_PROFILES[version], "protocol_version": 1}
    except KeyError:
        raise ValueError(
            f"unknown Odoo version profile {version!r}; use one of {sorted(VERSION_PROFILES)}"
        ) from None


def now_str() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def today_str() -> str:
    return datetime.now(UTC).date().isoformat()


# --- errors --------------------------------------------------------------------------------------


class OdooFault(Exception):
    """An error as Odoo serialises it: ``name`` is ``error.data.name``."""

    def __init__(self, name: str, message: str, arguments: list[Any] | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.arguments = arguments if arguments is not None else [message]
        self.debug = ""

    def to_error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` object Odoo 16-18 answers (with HTTP 200)."""
        debug = self.debug or (
            'Traceback (most recent call last):\n  File "<odoo stand-in>", line 1, in <module>\n'
            f"{self.name}: {self.message}\n"
        )
        return {
            "code": 200,
            "message": "Odoo Server Error",
            "data": {
                "name": self.name,
                "message": self.message,
                "arguments": self.arguments,
                "context": {},
                "debug": debug,
            },
        }


def access_denied() -> OdooFault:
    return OdooFault("odoo.exceptions.AccessDenied", "Access Denied")


def access_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.AccessError", message)


def missing_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.MissingError", message)


def user_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.UserError", message)


def validation_error(message: str) -> OdooFault:
    return OdooFault("odoo.exceptions.ValidationError", message)


def builtin_error(cls: str, message: str) -> OdooFault:
    return OdooFault(f"builtins.{cls}", message)


# --- storage -------------------------------------------------------------------------------------


class Backend(Protocol):
    """Where records live: ``model -> {id: stored values}`` (no ``id`` key inside the values)."""

    def all(self, model: str) -> dict[int, Record]: ...

    def get(self, model: str, ids: list[int]) -> dict[int, Record]: ...

    def insert(self, model: str, rec: Record) -> int: ...

    def update(self, model: str, id_: int, rec: Record) -> None: ...

    def delete(self, model: str, id_: int) -> None: ...


class DictBackend:
    """Records in a plain dict, ``model -> {id: record}``; used by the in-memory fake."""

    def __init__(self, data: dict[str, dict[int, Record]] | None = None) -> None:
        self.data: dict[str, dict[int, Record]] = data if data is not None else {}
        self._seq: dict[str, int] = {}

    def all(self, model: str) -> dict[int, Record]:
        return self.data.setdefault(model, {})

    def get(self, model: str, ids: list[int]) -> dict[int, Record]:
        table = self.all(model)
        return {i: table[i] for i in ids if i in table}

    def insert(self, model: str, rec: Record) -> int:
        table = self.all(model)
        new_id = max(self._seq.get(model, 0), max(table, default=0)) + 1
        self._seq[model] = new_id
        table[new_id] = rec
        return new_id

    def update(self, model: str, id_: int, rec: Record) -> None:
        self.all(model)[id_] = rec

    def delete(self, model: str, id_: int) -> None:
        self.all(model).pop(id_, None)


_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS records (
    model TEXT NOT NULL, id INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (model, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (model TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, uid INTEGER, login TEXT, service TEXT,
    model TEXT, method TEXT, args TEXT, kwargs TEXT, ok INTEGER NOT NULL, error TEXT, duration_ms REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS revisions (model TEXT PRIMARY KEY, rev INTEGER NOT NULL);
"""


class TableCache:
    """Decoded tables shared across sessions, valid while the model's revision is unchanged.

    Every write bumps ``revisions.rev`` for its model (in the same transaction, from any process),
    so a stale entry is never used. Records are shared: the engine never mutates a stored dict in place.
    """

    def __init__(self) -> None:
        self._tables: dict[str, tuple[int, dict[int, Record]]] = {}
        self._lock = threading.Lock()

    def get(self, model: str, rev: int) -> dict[int, Record] | None:
        with self._lock:
            hit = self._tables.get(model)
        return dict(hit[1]) if hit and hit[0] == rev else None

    def put(self, model: str, rev: int, table: dict[int, Record]) -> None:
        with self._lock:
            self._tables[model] = (rev, dict(table))


class SqliteBackend:
    """Records in SQLite (one generic ``records(model, id, data JSON)`` table), within one transaction."""

    def __init__(self, conn: sqlite3.Connection, shared: TableCache | None = None) -> None:
        self.conn = conn
        self._shared = shared
        self._cache: dict[str, dict[int, Record]] = {}
        self._misses: dict[str, int] = {}
        self._bumped: set[str] = set()

    def _rev(self, model: str) -> int:
        row = self.conn.execute("SELECT rev FROM revisions WHERE model = ?", (model,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, model: str) -> None:
        if model not in self._bumped:
            self._bumped.add(model)
            self.conn.execute(
                "INSERT INTO revisions(model, rev) VALUES (?, 1)"
                " ON CONFLICT(model) DO UPDATE SET rev = rev + 1",
                (model,),
            )

    def all(self, model: str) -> dict[int, Record]:
        if model not in self._cache:
            clean = self._shared is not None and model not in self._bumped
            rev = self._rev(model) if clean else -1
            table = self._shared.get(model, rev) if self._shared is not None and clean else None
            if table is None:
                rows = self.conn.execute("SELECT id, data FROM records WHERE model = ? ORDER BY id", (model,))
                table = {int(i): json.loads(d) for i, d in rows}
                if self._shared is not None and clean:
                    self._shared.put(model, rev, table)
            self._cache[model] = table
        return self._cache[model]

    def get(self, model: str, ids: list[int]) -> dict[int, Record]:
        self._misses[model] = self._misses.get(model, 0) + 1
        if model not in self._cache and self._misses[model] > 3:
            self.all(model)  # looked up again and again (domains over a relation): load the table once
        if model in self._cache:
            table = self._cache[model]
            return {i: table[i] for i in ids if i in table}
        out: dict[int, Record] = {}
        wanted = [i for i in ids if isinstance(i, int)]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT id, data FROM records WHERE model = ? AND id IN ({marks})", (model, *chunk)
            )
            out.update({int(i): json.loads(d) for i, d in rows})
        return out

    def insert(self, model: str, rec: Record) -> int:
        row = self.conn.execute(
            "INSERT INTO sequences(model, last_id) VALUES (?, 1) "
            "ON CONFLICT(model) DO UPDATE SET last_id = last_id + 1 RETURNING last_id",
            (model,),
        ).fetchone()
        new_id = int(row[0])
        self._bump(model)
        self.conn.execute(
            "INSERT INTO records(model, id, data) VALUES (?, ?, ?)", (model, new_id, _dumps(rec))
        )
        if model in self._cache:
            self._cache[model][new_id] = rec
        return new_id

    def update(self, model: str, id_: int, rec: Record) -> None:
        self._bump(model)
        self.conn.execute("UPDATE records SET data = ? WHERE model = ? AND id = ?", (_dumps(rec), model, id_))
        if model in self._cache:
            self._cache[model][id_] = rec

    def delete(self, model: str, id_: int) -> None:
        self._bump(model)
        self.conn.execute("DELETE FROM records WHERE model = ? AND id = ?", (model, id_))
        if model in self._cache:
            self._cache[model].pop(id_, None)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class SqliteStore:
    """The stand-in's SQLite file: records, sequences and the call log. WAL, one connection per session.

    Safe across threads and processes: writers take ``BEGIN IMMEDIATE`` and wait on ``busy_timeout``.
    Opening an empty file installs Odoo's base data (users, subtypes, activity types, ``ir.model``).
    """

    def __init__(self, path: Path, *, version: str = "17.0") -> None:
        self.path = Path(path)
        self.version = version
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tables = TableCache()
        self._log_conn: sqlite3.Connection | None = None
        self._log_lock = self._write_lock = threading.RLock()
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA_SQL)
        finally:
            conn.close()
        with self.session(write=True) as backend:
            bootstrap(Engine(backend, version=version))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def session(self, *, write: bool) -> Iterator[SqliteBackend]:
        """One transaction: committed when the block ends, rolled back if it raises.

        Writers in this process queue on a lock (no busy-wait); other processes wait on ``busy_timeout``.
        """
        lock = self._write_lock if write else None
        if lock is not None:
            lock.acquire()
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield SqliteBackend(conn, self._tables)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
            if lock is not None:
                lock.release()

    def log_call(self, entry: dict[str, Any]) -> None:
        """Append to the call log, on a connection kept open (which also spares every session close
        a WAL checkpoint)."""
        with self._log_lock:
            if self._log_conn is None:
                self._log_conn = self._connect()
            self._log_conn.execute(
                "INSERT INTO calls(at, uid, login, service, model, method, args, kwargs, ok, error,"
                " duration_ms)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    entry["at"],
                    entry.get("uid"),
                    entry.get("login"),
                    entry.get("service"),
                    entry.get("model"),
                    entry.get("method"),
                    _dumps(entry.get("args", [])),
                    _dumps(entry.get("kwargs", {})),
                    1 if entry["ok"] else 0,
                    entry.get("error"),
                    entry.get("duration_ms"),
                ),
            )

    def close(self) -> None:
        with self._log_lock:
            if self._log_conn is not None:
                self._log_conn.close()
                self._log_conn = None

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        return read_calls(self.path, since=since)


def read_calls(db_path: Path, *, since: int = 0) -> list[dict[str, Any]]:
    """The stand-in's call log, from its SQLite file (works from any process)."""
    conn = sqlite3.connect(db_path, timeout=30.0)
    try:
        rows = conn.execute(
            "SELECT seq, at, uid, login, service, model, method, args, kwargs, ok, error, duration_ms"
            " FROM calls WHERE seq > ? ORDER BY seq",
            (since,),
        ).fetchall()
    finally:
        conn.close()
    keys = (
        "seq",
        "at",
        "uid",
        "login",
        "service",
        "model",
        "method",
        "args",
        "kwargs",
        "ok",
        "error",
        "duration_ms",
    )
    out = []
    for row in rows:
        entry = dict(zip(keys, row, strict=True))
        entry["args"] = json.loads(entry["args"] or "[]")
        entry["kwargs"] = json.loads(entry["kwargs"] or "{}")
        entry["ok"] = bool(entry["ok"])
        out.append(entry)
    return out


# --- domains -------------------------------------------------------------------------------------

_OPERATORS = frozenset(
    {
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "in",
        "not in",
        "like",
        "ilike",
        "not like",
        "not ilike",
        "=like",
        "=ilike",
    }
)
_ARITY = {"!": 1, "&": 2, "|": 2}


def normalize_domain(domain: Any) -> list[Any]:
    """Odoo's normalisation: make the implicit ``&`` between consecutive terms explicit."""
    if not domain:
        return []
    if not isinstance(domain, list | tuple):
        raise builtin_error("ValueError", f"Invalid domain: {domain!r}")
    result: list[Any] = []
    expected = 1
    for token in domain:
        if expected == 0:
            result[0:0] = ["&"]
            expected = 1
        if isinstance(token, list | tuple):
            expected -= 1
        elif token in _ARITY:
            expected += _ARITY[token] - 1
        else:
            raise builtin_error("ValueError", f"Invalid domain term {token!r}")
        result.append(token)
    if expected != 0:
        raise builtin_error("ValueError", f"Invalid domain: {domain!r}")
    return result


def _like_regex(pattern: str, *, wrap: bool, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    escaped = False
    for ch in pattern:
        if escaped:
            parts.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            parts.append(".*")
        elif ch == "_":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    body = "".join(parts)
    if wrap:
        body = f".*{body}.*"
    return re.compile(body, re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _scalar_match(value: Any, op: str, right: Any, ftype: str) -> bool:
    if value is None:
        value = False
    if op == "<>":
        op = "!="
    if op in ("=", "!="):
        if right is False or right is None:
            hit = value is False or value == "" or (ftype != "boolean" and value is None)
            if ftype == "boolean":
                hit = not value
        elif ftype == "boolean":
            hit = bool(value) == bool(right)
        else:
            hit = value == right or (
                ftype in ("integer", "float", "monetary")
                and value is not False
                and isinstance(right, int | float)
                and float(value) == float(right)
            )
        return hit if op == "=" else not hit
    if op in ("in", "not in"):
        items = right if isinstance(right, list | tuple) else [right]
        if ftype == "boolean":
            hit = bool(value) in [bool(x) for x in items]
        else:
            hit = value in items if value is not False else (False in items or None in items)
        return hit if op == "in" else not hit
    if op in ("<", "<=", ">", ">="):
        if value is False or right is False or right is None or (ftype == "boolean"):
            return False
        try:
            if op == "<":
                return bool(value < right)
            if op == "<=":
                return bool(value <= right)
            if op == ">":
                return bool(value > right)
            return bool(value >= right)
        except TypeError:
            return False
    # like family
    negate = op.startswith("not ")
    base = op[4:] if negate else op
    if value is False:
        return negate
    pattern = _like_regex(str(right), wrap=not base.startswith("="), ignore_case="ilike" in base)
    hit = bool(pattern.fullmatch(str(value)))
    return not hit if negate else hit


# --- the engine ----------------------------------------------------------------------------------


class Engine:
    """Odoo's ORM as seen over RPC, on one :class:`Backend` (one transaction)."""

    def __init__(self, backend: Backend, *, version: str = "17.0") -> None:
        self.backend = backend
        self.version = version
        self.uid = SUPERUSER_ID
        self.context: dict[str, Any] = {}
        self._xmlids: dict[str, tuple[str, int]] | None = None

    # -- authentication ---------------------------------------------------------------------------

    def authenticate(self, login: str, password: str) -> int | None:
        for uid, user in self.backend.all("res.users").items():
            if user.get("login") == login and user.get("active", True):
                pw = user.get("_password")
                return uid if pw is not None and isinstance(password, str) and password == pw else None
        return None

    def check_credentials(self, uid: Any, password: Any) -> Record:
        if not isinstance(uid, int) or isinstance(uid, bool):
            raise access_denied()
        user = self.backend.get("res.users", [uid]).get(uid)
        if (
            not user
            or not user.get("active", True)
            or user.get("_password") is None
            or user.get("_password") != password
        ):
            raise access_denied()
        return user

    def login_of(self, uid: Any) -> str | None:
        if not isinstance(uid, int):
            return None
        user = self.backend.get("res.users", [uid]).get(uid)
        return user.get("login") if user else None

    # -- dispatch ---------------------------------------------------------------------------------

    def call(
        self,
        uid: int,
        model: str,
        method: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """One ``execute_kw`` call as user ``uid`` (credentials already checked)."""
        args = list(args or [])
        kwargs = dict(kwargs or {})
        context = kwargs.pop("context", None) or {}
        if not isinstance(context, dict):
            raise builtin_error("TypeError", "context must be a dictionary")
        self.uid, self.context = uid, context
        if not isinstance(model, str) or model not in MODELS:
            raise user_error(f"Object {model} doesn't exist")
        if not isinstance(method, str) or method.startswith("_"):
            raise access_error(f"Private methods (such as '{model}.{method}') cannot be called remotely.")
        fn = self._method(model, method)
        if fn is None:
            raise builtin_error("AttributeError", f"type object '{model}' has no attribute '{method}'")
        if method not in READ_METHODS and not self._can_write(uid):
            raise self._not_allowed(model)
        try:
            return fn(model, *args, **kwargs)
        except OdooFault:
            raise
        except TypeError as exc:
            fault = builtin_error("TypeError", str(exc))
            fault.debug = traceback.format_exc()
            raise fault from exc

    def _method(self, model: str, method: str) -> Callable[..., Any] | None:
        generic: dict[str, Callable[..., Any]] = {
            "fields_get": self.fields_get,
            "search": self.search,
            "search_read": self.search_read,
            "read": self.read,
            "search_count": self.search_count,
            "create": self.create,
            "write": self.write,
            "unlink": self.unlink,
            "name_search": self.name_search,
            "default_get": self.default_get,
        }
        if method in generic:
            return generic[method]
        if method == "name_get" and int(self.version.split(".")[0]) < 18:
            return self.name_get
        if method == "message_post" and model in MAIL_THREAD_MODELS:
            return self.message_post
        specific: dict[tuple[str, str], Callable[..., Any]] = {
            ("res.users", "context_get"): self.context_get,
            ("ir.model.data", "check_object_reference"): self.check_object_reference,
            ("mail.activity", "action_feedback"): self.action_feedback,
            ("mail.activity", "action_done"): self.action_done,
        }
        return specific.get((model, method))

    def _can_write(self, uid: int) -> bool:
        if uid == SUPERUSER_ID:
            return True
        user = self.backend.get("res.users", [uid]).get(uid)
        return bool(user and user.get("_can_write"))

    def _not_allowed(self, model: str) -> OdooFault:
        desc = MODELS[model]["_description"]
        return access_error(
            f"You are not allowed to modify '{desc}' ({model}) records.\n\n"
            "This operation is allowed for the following groups:\n\t- Signoff/Executor\n\n"
            "Contact your administrator to request access if necessary."
        )

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _fields(model: str) -> dict[str, FieldSpec]:
        return fields_of(model)

    def _spec(self, model: str, name: str) -> FieldSpec:
        spec = self._fields(model).get(name)
        if spec is None:
            raise builtin_error("ValueError", f"Invalid field {name!r} on model {model!r}")
        return spec

    @staticmethod
    def _ids(ids: Any) -> list[int]:
        if isinstance(ids, int) and not isinstance(ids, bool):
            return [ids]
        if isinstance(ids, list | tuple) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            return list(ids)
        raise builtin_error("ValueError", f"Invalid ids: {ids!r}")

    def _browse(self, model: str, ids: list[int]) -> dict[int, Record]:
        found = self.backend.get(model, ids)
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        if missing:
            raise missing_error(
                "Record does not exist or has been deleted.\n"
                f"(Record: {model}{tuple(missing)!r}, User: {self.uid})"
            )
        return found

    def display_name(self, model: str, id_: int, rec: Record | None = None) -> str:
        if rec is None:
            rec = self.backend.get(model, [id_]).get(id_)
            if rec is None:
                return f"{model},{id_}"
        if model == "helpdesk.ticket":
            return f"{rec.get('number') or '/'} - {rec.get('name') or ''}"
        if model == "res.partner":
            name = rec.get("name") or ""
            parent = rec.get("parent_id")
            if parent and not rec.get("is_company"):
                return (
                    f"{self.display_name('res.partner', parent)}, {name}"
                    if name
                    else self.display_name("res.partner", parent)
                )
            return name
        if model == "ir.model.data":
            return f"{rec.get('module')}.{rec.get('name')}"
        if model == "mail.activity":
            if rec.get("summary"):
                return str(rec["summary"])
            type_id = rec.get("activity_type_id")
            return self.display_name("mail.activity.type", type_id) if type_id else f"{model},{id_}"
        if model == "mail.message":
            return str(rec.get("record_name") or rec.get("subject") or f"{model},{id_}")
        value = rec.get(MODELS[model]["_rec_name"])
        return str(value) if value else f"{model},{id_}"

    def _value(self, model: str, id_: int, rec: Record, name: str) -> Any:
        """The raw value of a field (many2one as an id, x2many as ids), computing computed fields."""
        if name == "id":
            return id_
        if name == "display_name":
            return self.display_name(model, id_, rec)
        spec = self._spec(model, name)
        if spec["type"] == "one2many":
            inverse = spec["_inverse"]
            comodel = spec["relation"]
            active = "active" in self._fields(comodel) and self.context.get("active_test", True)
            return [
                cid
                for cid, crec in self.backend.all(comodel).items()
                if crec.get(inverse) == id_ and (not active or crec.get("active", True))
            ]
        if spec.get("_compute"):
            return self._compute(model, id_, rec, name, spec)
        value = rec.get(name)
        if value is None and spec["type"] == "boolean" and name == "active":
            return True
        return value

    def _compute(self, model: str, id_: int, rec: Record, name: str, spec: FieldSpec) -> Any:
        related = spec.get("related")
        if related:
            head, tail = related.split(".", 1)
            target_id = rec.get(head)
            if not target_id:
                return False
            relation = self._spec(model, head)["relation"]
            target = self.backend.get(relation, [target_id]).get(target_id)
            return self._value(relation, target_id, target, tail) if target else False
        if (model, name) == ("res.partner", "company_type"):
            return "company" if rec.get("is_company") else "person"
        if (model, name) == ("res.partner", "commercial_partner_id"):
            return id_ if rec.get("is_company") or not rec.get("parent_id") else rec["parent_id"]
        if (model, name) == ("mail.activity", "res_name"):
            res_model, res_id = rec.get("res_model"), rec.get("res_id")
            return self.display_name(res_model, res_id) if res_model in MODELS and res_id else False
        if (model, name) == ("mail.activity", "state"):
            if rec.get("date_done") and not rec.get("active", True):
                return "done"
            deadline, today = rec.get("date_deadline") or "", today_str()
            return "overdue" if deadline < today else "today" if deadline == today else "planned"
        if (model, name) == ("ir.model.data", "complete_name"):
            return f"{rec.get('module')}.{rec.get('name')}"
        return False

    def _out(self, model: str, id_: int, rec: Record, name: str, load: str | None) -> Any:
        spec = self._spec(model, name)
        value = self._value(model, id_, rec, name)
        ftype = spec["type"]
        if ftype == "many2one":
            if not value:
                return False
            if load != "_classic_read":
                return value
            target = self.backend.get(spec["relation"], [value]).get(value)
            if target is None:
                return False
            return [value, self.display_name(spec["relation"], value, target)]
        if ftype in ("one2many", "many2many"):
            return list(value or [])
        if ftype == "boolean":
            return bool(value)
        if ftype == "integer":
            return int(value or 0)
        if ftype in ("float", "monetary"):
            return float(value or 0.0)
        if ftype == "many2one_reference":
            return int(value or 0) if value else False
        return False if value is None or value == "" else value

    # -- reading ----------------------------------------------------------------------------------

    def fields_get(
        self, model: str, allfields: list[str] | None = None, attributes: list[str] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in self._fields(model).items():
            if allfields and name not in allfields:
                continue
            desc = {k: v for k, v in spec.items() if not k.startswith("_")}
            desc.setdefault("name", name)
            desc["store"] = not spec.get("_compute") and spec["type"] != "one2many"
            desc["sortable"] = desc["store"]
            desc["searchable"] = True
            if attributes:
                desc = {k: v for k, v in desc.items() if k in attributes}
            out[name] = desc
        return out

    def _leaf_match(self, model: str, id_: int, rec: Record, left: str, op: str, right: Any) -> bool:
        head, _, rest = left.partition(".")
        spec = self._spec(model, head)
        ftype = spec["type"]
        value = self._value(model, id_, rec, head)
        if rest:
            if ftype not in ("many2one", "one2many", "many2many"):
                raise builtin_error("ValueError", f"Invalid field path {left!r} on model {model!r}")
            relation = spec["relation"]
            target_ids = (
                [value] if ftype == "many2one" and value else list(value or []) if ftype != "many2one" else []
            )
            targets = self.backend.get(relation, target_ids)
            hits = [self._leaf_match(relation, tid, targets[tid], rest, op, right) for tid in targets]
            if not hits:
                return op in ("!=", "<>", "not in", "not like", "not ilike")
            return any(hits)
        if ftype in ("many2one", "one2many", "many2many"):
            ids = ([value] if value else []) if ftype == "many2one" else list(value or [])
            names_wanted = isinstance(right, str) or (
                isinstance(right, list | tuple) and any(isinstance(x, str) for x in right)
            )
            if names_wanted and op not in ("<", "<=", ">", ">="):
                relation = spec["relation"]
                names = [self.display_name(relation, i) for i in ids]
                if op in ("in", "not in"):
                    hit = any(n in right for n in names)
                    return hit if op == "in" else not hit
                negate = op in ("!=", "<>", "not like", "not ilike")
                pos = {"!=": "=", "<>": "=", "not like": "like", "not ilike": "ilike"}.get(op, op)
                hit = any(_scalar_match(n, pos, right, "char") for n in names)
                return not hit if negate else hit
            if ftype == "many2one":
                return _scalar_match(value or False, op, right, "integer")
            items = right if isinstance(right, list | tuple) else [right]
            if op in ("=", "in"):
                return (not ids) if right is False else bool(set(ids) & set(items))
            if op in ("!=", "<>", "not in"):
                return bool(ids) if right is False else not (set(ids) & set(items))
            raise builtin_error("ValueError", f"Invalid operator {op!r} for {model}.{head}")
        return _scalar_match(value, op, right, ftype)

    def _eval(self, model: str, id_: int, rec: Record, domain: list[Any], pos: int) -> tuple[bool, int]:
        token = domain[pos]
        if token == "!":
            value, nxt = self._eval(model, id_, rec, domain, pos + 1)
            return not value, nxt
        if token in ("&", "|"):
            a, nxt = self._eval(model, id_, rec, domain, pos + 1)
            b, nxt = self._eval(model, id_, rec, domain, nxt)
            return (a and b) if token == "&" else (a or b), nxt
        if len(token) != 3:
            raise builtin_error("ValueError", f"Invalid leaf {token!r}")
        left, op, right = token
        if left in (0, 1) and op == "=" and right == 1:
            return left == 1, pos + 1
        if not isinstance(left, str) or op not in _OPERATORS:
            raise builtin_error("ValueError", f"Invalid leaf {list(token)!r}")
        return self._leaf_match(model, id_, rec, left, op, right), pos + 1

    def _filter(self, model: str, domain: Any) -> list[int]:
        norm = normalize_domain(domain)
        fields = self._fields(model)
        mentions_active = any(isinstance(t, list | tuple) and t and t[0] == "active" for t in norm)
        active_test = "active" in fields and self.context.get("active_test", True) and not mentions_active
        out = []
        for id_, rec in self.backend.all(model).items():
            if active_test and not self._value(model, id_, rec, "active"):
                continue
            if norm:
                ok, end = self._eval(model, id_, rec, norm, 0)
                if end != len(norm):
                    raise builtin_error("ValueError", f"Invalid domain: {domain!r}")
                if not ok:
                    continue
            out.append(id_)
        return out

    def _order(self, model: str, ids: list[int], order: str | None) -> list[int]:
        spec = order or MODELS[model].get("_order", "id")
        keys: list[tuple[str, bool]] = []
        for part in spec.split(","):
            bits = part.strip().split()
            if not bits:
                continue
            if len(bits) > 2 or (len(bits) == 2 and bits[1].lower() not in ("asc", "desc")):
                raise builtin_error("ValueError", f'Invalid "order" specified ({order}).')
            name = bits[0]
            self._spec(model, name)
            keys.append((name, len(bits) == 2 and bits[1].lower() == "desc"))
        table = self.backend.all(model) if len(ids) > 50 else self.backend.get(model, ids)
        result = sorted(ids)
        for name, desc in reversed(keys):
            ftype = self._fields(model)[name]["type"]

            def key(i: int, name: str = name, ftype: str = ftype) -> tuple[bool, Any]:
                v = self._value(model, i, table[i], name)
                if ftype == "boolean":
                    return (False, bool(v))
                if isinstance(v, list):
                    v = len(v)
                null = v is None or v is False
                return (null, "" if null else v)

            result.sort(key=key, reverse=desc)
        return result

    def search(
        self,
        model: str,
        domain: Any = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        count: bool = False,
    ) -> Any:
        ids = self._order(model, self._filter(model, domain or []), order)
        if count:
            return len(ids)
        offset = int(offset or 0)
        ids = ids[offset:]
        if limit:
            ids = ids[: int(limit)]
        return ids

    def search_count(self, model: str, domain: Any = None, limit: int | None = None) -> int:
        n = len(self._filter(model, domain or []))
        return min(n, int(limit)) if limit else n

    def read(
        self, model: str, ids: Any, fields: list[str] | None = None, load: str | None = "_classic_read"
    ) -> list[Record]:
        id_list = list(dict.fromkeys(self._ids(ids)))
        found = self._browse(model, id_list)
        names = list(fields) if fields else [n for n in self._fields(model) if n != "id"]
        for name in names:
            self._spec(model, name)
        out = []
        for i in id_list:
            row: Record = {"id": i}
            for name in names:
                if name != "id":
                    row[name] = self._out(model, i, found[i], name, load)
            out.append(row)
        return out

    def search_read(
        self,
        model: str,
        domain: Any = None,
        fields: list[str] | None = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        load: str | None = "_classic_read",
    ) -> list[Record]:
        ids = self.search(model, domain or [], offset=offset, limit=limit, order=order)
        return self.read(model, ids, fields, load=load) if ids else []

    def name_search(
        self, model: str, name: str = "", args: Any = None, operator: str = "ilike", limit: int = 100
    ) -> list[list[Any]]:
        rec_name = MODELS[model]["_rec_name"]
        domain = list(args or [])
        if name:
            domain.append([rec_name, operator, name])
        ids = self.search(model, domain, limit=limit)
        return [[i, self.display_name(model, i)] for i in ids]

    def name_get(self, model: str, ids: Any) -> list[list[Any]]:
        found = self._browse(model, self._ids(ids))
        return [[i, self.display_name(model, i, found[i])] for i in self._ids(ids)]

    def default_get(self, model: str, fields_list: list[str]) -> dict[str, Any]:
        out = {}
        for name in fields_list:
            spec = self._spec(model, name)
            if "_default" in spec:
                default = spec["_default"]
                out[name] = default() if callable(default) else default
        return out

    def context_get(self, model: str) -> dict[str, Any]:
        user = self.backend.get("res.users", [self.uid]).get(self.uid, {})
        return {"lang": user.get("lang") or "en_US", "tz": user.get("tz") or "UTC", "uid": self.uid}

    # -- external ids -----------------------------------------------------------------------------

    def _xmlid_index(self) -> dict[str, tuple[str, int]]:
        if self._xmlids is None:
            self._xmlids = {
                f"{r['module']}.{r['name']}": (r["model"], int(r["res_id"]))
                for r in self.backend.all("ir.model.data").values()
            }
        return self._xmlids

    def ref(self, xmlid: str) -> int | None:
        hit = self._xmlid_index().get(xmlid)
        return hit[1] if hit else None

    def set_xmlid(self, xmlid: str, model: str, res_id: int) -> None:
        module, _, name = xmlid.partition(".")
        self._create_one("ir.model.data", {"module": module, "name": name, "model": model, "res_id": res_id})
        self._xmlid_index()[xmlid] = (model, res_id)

    def ensure(self, xmlid: str, model: str, vals: Record) -> int:
        """Create ``vals`` under external id ``xmlid`` unless it exists (idempotent seeding)."""
        found = self.ref(xmlid)
        if found is not None:
            return found
        new_id = self._create_one(model, vals)
        self.set_xmlid(xmlid, model, new_id)
        return new_id

    def check_object_reference(
        self, model: str, module: str, xml_id: str, raise_on_access_error: bool = False
    ) -> list[Any]:
        hit = self._xmlid_index().get(f"{module}.{xml_id}")
        if hit is None:
            raise builtin_error("ValueError", f"External ID not found in the system: {module}.{xml_id}")
        return [hit[0], hit[1]]

    # -- writing ----------------------------------------------------------------------------------

    def _convert(self, model: str, name: str, value: Any, current: Any = None) -> Any:
        spec = self._spec(model, name)
        ftype = spec["type"]
        if ftype == "many2one":
            if isinstance(value, list | tuple) and value:
                value = value[0]
            if value in (False, None, 0):
                return False
            if not isinstance(value, int) or isinstance(value, bool):
                raise builtin_error("ValueError", f"Wrong value for {model}.{name}: {value!r}")
            if not self.backend.get(spec["relation"], [value]):
                raise user_error(
                    f"The operation cannot be completed: {spec['relation']}({value},) does not exist "
                    f"(field {model}.{name})."
                )
            return value
        if ftype == "many2many":
            return self._x2many(model, name, spec, value, list(current or []))
        if ftype == "one2many":
            raise builtin_error("ValueError", f"Writing one2many field {model}.{name} is not supported here")
        if value is None or value is False:
            return False if ftype != "boolean" else False
        if ftype == "boolean":
            return bool(value)
        if ftype in ("integer", "many2one_reference"):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise builtin_error("ValueError", f"Wrong value for {model}.{name}: {value!r}") from None
        if ftype in ("float", "monetary"):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise builtin_error("ValueError", f"Wrong value for {model}.{name}: {value!r}") from None
        if ftype == "selection":
            keys = [k for k, _ in spec["selection"]]
            if value not in keys:
                raise builtin_error("ValueError", f"Wrong value for {model}.{name}: {value!r}")
            return value
        if ftype == "date":
            try:
                return date.fromisoformat(str(value)[:10]).isoformat()
            except ValueError:
                raise builtin_error(
                    "ValueError", f"time data {value!r} does not match format '%Y-%m-%d'"
                ) from None
        if ftype == "datetime":
            text = str(value).replace("T", " ")
            if len(text) == 10:
                text += " 00:00:00"
            try:
                return datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S").strftime("%Y-%m-%d %H:%M:%S")
            except ValueError:
                raise builtin_error(
                    "ValueError", f"time data {value!r} does not match format '%Y-%m-%d %H:%M:%S'"
                ) from None
        if not isinstance(value, str):
            value = str(value)
        return value

    def _x2many(self, model: str, name: str, spec: FieldSpec, value: Any, current: list[int]) -> list[int]:
        relation = spec["relation"]
        if not isinstance(value, list | tuple):
            raise builtin_error("ValueError", f"Wrong value for {model}.{name}: {value!r}")
        ids = list(current)
        for cmd in value:
            if isinstance(cmd, int) and not isinstance(cmd, bool):
                if cmd not in ids:
                    ids.append(cmd)
                continue
            if not isinstance(cmd, list | tuple) or not cmd:
                raise builtin_error("ValueError", f"Wrong x2many command {cmd!r}")
            code = cmd[0]
            if code == 0:
                ids.append(self._create_one(relation, dict(cmd[2])))
            elif code == 1:
                self.write(relation, [cmd[1]], dict(cmd[2]))
            elif code == 2:
                self.unlink(relation, [cmd[1]])
                ids = [i for i in ids if i != cmd[1]]
            elif code == 3:
                ids = [i for i in ids if i != cmd[1]]
            elif code == 4:
                self._browse(relation, [cmd[1]])
                if cmd[1] not in ids:
                    ids.append(cmd[1])
            elif code == 5:
                ids = []
            elif code == 6:
                new = list(cmd[2])
                self._browse(relation, new)
                ids = new
            else:
                raise builtin_error("ValueError", f"Wrong x2many command {cmd!r}")
        return ids

    def _check(self, model: str, rec: Record) -> None:
        for name, spec in MODELS[model]["fields"].items():
            if spec.get("required") and not spec.get("_compute") and rec.get(name) in (None, False, ""):
                raise validation_error(
                    f"The operation cannot be completed: Create/update: a mandatory field is not set.\n"
                    f"Model: {MODELS[model]['_description']} ({model})\nField: {spec['string']} ({name})"
                )
        if model == "res.partner" and rec.get("email"):
            if not re.fullmatch(r"[^@\s<>,;]+@[^@\s<>,;]+\.[A-Za-z]{2,}", str(rec["email"]).strip()):
                raise validation_error(
                    f"Invalid email address {rec['email']!r} for contact {rec.get('name')!r}."
                )

    def _create_one(self, model: str, vals: Record) -> int:
        if not isinstance(vals, dict):
            raise builtin_error("ValueError", f"Invalid values for {model}.create: {vals!r}")
        rec: Record = {}
        for name, value in vals.items():
            if name in ("id", "display_name") or (self._spec(model, name).get("_compute")):
                continue
            rec[name] = self._convert(model, name, value)
        for name, spec in MODELS[model]["fields"].items():
            if name not in rec and "_default" in spec:
                default = spec["_default"]
                rec[name] = default() if callable(default) else default
        self._before_create(model, rec)
        self._check(model, rec)
        stamp = now_str()
        rec.setdefault("create_date", stamp)
        rec["write_date"] = stamp
        rec.setdefault("create_uid", self.uid)
        rec["write_uid"] = self.uid
        new_id = self.backend.insert(model, rec)
        self._after_create(model, new_id, rec)
        return new_id

    def _before_create(self, model: str, rec: Record) -> None:
        stamp = now_str()
        if model == "helpdesk.ticket":
            if not rec.get("stage_id"):
                stages = self.search("helpdesk.ticket.stage", [], limit=1)
                rec["stage_id"] = stages[0] if stages else False
            rec.setdefault("last_stage_update", stamp)
            if rec.get("user_id"):
                rec.setdefault("assigned_date", stamp)
            if rec.get("partner_id"):
                partner = self.backend.get("res.partner", [rec["partner_id"]])[rec["partner_id"]]
                rec.setdefault("partner_name", partner.get("name") or False)
                rec.setdefault("partner_email", partner.get("email") or False)
            if rec.get("stage_id") and not rec.get("closed_date") and self._stage_closed(rec["stage_id"]):
                rec["closed_date"] = stamp
        elif model == "sale.order":
            rec.setdefault("name", "New")
            rec.setdefault("date_order", stamp)
        elif model == "mail.activity":
            if rec.get("res_model_id") and not rec.get("res_model"):
                rec["res_model"] = self.backend.get("ir.model", [rec["res_model_id"]])[rec["res_model_id"]][
                    "model"
                ]
            if rec.get("res_model") and not rec.get("res_model_id"):
                hits = self.search("ir.model", [["model", "=", rec["res_model"]]], limit=1)
                rec["res_model_id"] = hits[0] if hits else False
            if rec.get("res_model") not in MODELS:
                raise validation_error(f"Activity: unknown document model {rec.get('res_model')!r}")
            self._browse(rec["res_model"], [int(rec.get("res_id") or 0)])
            rec.setdefault("date_deadline", today_str())
            rec.setdefault("user_id", self.uid)
        elif model == "ir.attachment":
            if rec.get("datas"):
                try:
                    raw = base64.b64decode(rec["datas"], validate=True)
                except (ValueError, TypeError):
                    raise builtin_error("ValueError", "Attachment datas is not valid base64") from None
                rec["file_size"] = len(raw)
                rec["checksum"] = hashlib.sha1(raw).hexdigest()
                rec.setdefault("mimetype", "application/octet-stream")
        elif model == "mail.message":
            rec.setdefault("date", stamp)

    def _after_create(self, model: str, new_id: int, rec: Record) -> None:
        if model == "helpdesk.ticket" and not rec.get("number"):
            rec["number"] = f"HT{new_id:05d}"
            self.backend.update(model, new_id, rec)
        elif model == "sale.order" and rec.get("name") in ("New", "/"):
            rec["name"] = f"S{new_id:05d}"
            self.backend.update(model, new_id, rec)
        elif (
            model == "account.move" and rec.get("name") in ("/", None, False) and rec.get("state") == "posted"
        ):
            year = str(rec.get("invoice_date") or today_str())[:4]
            rec["name"] = f"INV/{year}/{new_id:05d}"
            self.backend.update(model, new_id, rec)

    def _stage_closed(self, stage_id: int) -> bool:
        stage = self.backend.get("helpdesk.ticket.stage", [stage_id]).get(stage_id)
        return bool(stage and stage.get("closed"))

    def create(self, model: str, vals_list: Any) -> Any:
        if isinstance(vals_list, dict):
            return self._create_one(model, vals_list)
        if isinstance(vals_list, list):
            return [self._create_one(model, v) for v in vals_list]
        raise builtin_error("ValueError", f"Invalid values for {model}.create: {vals_list!r}")

    def write(self, model: str, ids: Any, vals: Record) -> bool:
        id_list = self._ids(ids)
        if not isinstance(vals, dict):
            raise builtin_error("ValueError", f"Invalid values for {model}.write: {vals!r}")
        found = self._browse(model, id_list)
        stamp = now_str()
        for i in dict.fromkeys(id_list):
            old = found[i]
            new = dict(old)
            for name, value in vals.items():
                if name in ("id", "display_name") or self._spec(model, name).get("_compute"):
                    continue
                new[name] = self._convert(model, name, value, current=old.get(name))
            if model == "helpdesk.ticket":
                if new.get("stage_id") != old.get("stage_id"):
                    new["last_stage_update"] = stamp
                    new["closed_date"] = (
                        stamp if new.get("stage_id") and self._stage_closed(new["stage_id"]) else False
                    )
                if new.get("user_id") and new.get("user_id") != old.get("user_id"):
                    new["assigned_date"] = stamp
            self._check(model, new)
            new["write_date"] = stamp
            new["write_uid"] = self.uid
            self.backend.update(model, i, new)
        return True

    def unlink(self, model: str, ids: Any) -> bool:
        id_list = self._ids(ids)
        self._browse(model, id_list)
        for i in dict.fromkeys(id_list):
            self.backend.delete(model, i)
        return True

    # -- business methods -------------------------------------------------------------------------

    def message_post(
        self,
        model: str,
        ids: Any,
        body: str = "",
        subject: str | None = None,
        message_type: str = "notification",
        subtype_xmlid: str | None = None,
        subtype_id: int | None = None,
        partner_ids: list[int] | None = None,
        attachment_ids: list[int] | None = None,
        body_is_html: bool = False,
        author_id: int | None = None,
        parent_id: int | None = None,
        email_from: str | None = None,
        mail_activity_type_id: int | None = None,
    ) -> int:
        id_list = self._ids(ids)
        if len(id_list) != 1:
            raise builtin_error("ValueError", f"Expected singleton: {model}{tuple(id_list)!r}")
        res_id = id_list[0]
        target = self._browse(model, [res_id])[res_id]
        if subtype_xmlid:
            if "." not in subtype_xmlid:
                subtype_xmlid = f"mail.{subtype_xmlid}"
            subtype_id = self.ref(subtype_xmlid)
            if subtype_id is None:
                raise builtin_error("ValueError", f"External ID not found in the system: {subtype_xmlid}")
        if not subtype_id:
            subtype_id = self.ref("mail.mt_note")
        subtype = (
            self.backend.get("mail.message.subtype", [subtype_id]).get(subtype_id) if subtype_id else None
        )
        text = body if isinstance(body, str) else str(body or "")
        user = self.backend.get("res.users", [self.uid]).get(self.uid, {})
        vals: Record = {
            "model": model,
            "res_id": res_id,
            "record_name": self.display_name(model, res_id, target),
            "body": text if body_is_html else html.escape(text),
            "subject": subject or False,
            "message_type": message_type,
            "subtype_id": subtype_id or False,
            "is_internal": bool(subtype and subtype.get("internal")),
            "author_id": author_id or user.get("partner_id") or False,
            "email_from": email_from or False,
            "parent_id": parent_id or False,
            "partner_ids": [[6, 0, list(partner_ids or [])]],
            "attachment_ids": [[6, 0, list(attachment_ids or [])]],
            "mail_activity_type_id": mail_activity_type_id or False,
        }
        message_id = self._create_one("mail.message", vals)
        for att in attachment_ids or []:
            self.write("ir.attachment", [att], {"res_model": model, "res_id": res_id})
        return message_id

    def action_feedback(
        self, model: str, ids: Any, feedback: str | bool = False, attachment_ids: list[int] | None = None
    ) -> int | bool:
        found = self._browse(model, self._ids(ids))
        message_id: int | bool = False
        for i, act in found.items():
            type_id = act.get("activity_type_id") or False
            type_rec = self.backend.get("mail.activity.type", [type_id]).get(type_id) if type_id else None
            type_name = html.escape(str(type_rec.get("name"))) if type_rec else "Activity"
            summary = html.escape(str(act.get("summary") or ""))
            body = f"<div><p>{type_name} done</p><p>{summary}</p>"
            if feedback:
                body += f"<p>Feedback: {html.escape(str(feedback))}</p>"
            body += "</div>"
            res_model, res_id = act.get("res_model"), act.get("res_id")
            if res_model in MAIL_THREAD_MODELS and res_id:
                message_id = self.message_post(
                    res_model,
                    [int(res_id)],
                    body=body,
                    message_type="notification",
                    subtype_xmlid="mail.mt_activities",
                    body_is_html=True,
                    attachment_ids=attachment_ids,
                    mail_activity_type_id=type_id or None,
                )
            keep = bool(type_rec and type_rec.get("keep_done"))
            if keep:
                self.write(model, [i], {"active": False, "date_done": today_str()})
            else:
                self.backend.delete(model, i)
        return message_id

    def action_done(self, model: str, ids: Any) -> int | bool:
        return self.action_feedback(model, ids)


# --- base data -----------------------------------------------------------------------------------

COMPANY_NAME = "Skyline Software"
COMPANY_DOMAIN = "skyline.example"

#: (xmlid, login, password, name, write access, role)
USERS: list[tuple[str, str, str | None, str, bool, str]] = [
    ("base.user_root", "__system__", None, "OdooBot", True, "system (cannot log in)"),
    ("base.user_admin", "admin", "admin", "Mitchell Admin", True, "administrator"),
    ("signoff.user_agent", "agent", "agent", "Signoff Agent", False, "agents: read-only"),
    (
        "signoff.user_executor",
        "executor",
        "executor",
        "Signoff Executor",
        True,
        "executor: writes approved proposals",
    ),
    ("signoff.user_alice", "alice", "alice", "Alice Moreau", True, "approver: support lead"),
    ("signoff.user_bob", "bob", "bob", "Bob Okafor", True, "approver: finance manager"),
]

SUBTYPES = [
    ("mail.mt_comment", "Discussions", False),
    ("mail.mt_note", "Note", True),
    ("mail.mt_activities", "Activities", True),
]

ACTIVITY_TYPES = [
    ("mail.mail_activity_data_todo", "To-Do", "default", False),
    ("mail.mail_activity_data_call", "Call", "phonecall", False),
    ("mail.mail_activity_data_email", "Email", "default", False),
    ("mail.mail_activity_data_meeting", "Meeting", "meeting", False),
    ("signoff.mail_activity_data_approval", "Signoff approval", "default", True),
]


def bootstrap(engine: Engine) -> bool:
    """Install base data into an empty database (what Odoo has right after install). Idempotent."""
    if engine.backend.all("res.users"):
        return False
    engine.uid = SUPERUSER_ID
    for model, spec in MODELS.items():
        engine._create_one("ir.model", {"model": model, "name": spec["_description"]})
    company = engine._create_one(
        "res.partner",
        {
            "name": COMPANY_NAME,
            "is_company": True,
            "email": f"info@{COMPANY_DOMAIN}",
            "website": f"https://{COMPANY_DOMAIN}",
            "city": "Lisbon",
            "country_code": "PT",
        },
    )
    engine.set_xmlid("base.main_partner", "res.partner", company)
    for xmlid, login, password, name, can_write, _role in USERS:
        email = f"{login}@{COMPANY_DOMAIN}" if password else False
        partner = engine._create_one(
            "res.partner",
            {"name": name, "email": email, "parent_id": company, "active": password is not None},
        )
        user = engine._create_one(
            "res.users",
            {
                "name": name,
                "login": login,
                "email": email,
                "partner_id": partner,
                "active": password is not None,
            },
        )
        rec = engine.backend.get("res.users", [user])[user]
        rec = {**rec, "_password": password, "_can_write": can_write}
        engine.backend.update("res.users", user, rec)
        engine.set_xmlid(xmlid, "res.users", user)
        engine.set_xmlid(xmlid.replace("user_", "partner_"), "res.partner", partner)
    for xmlid, name, internal in SUBTYPES:
        engine.ensure(xmlid, "mail.message.subtype", {"name": name, "internal": internal})
    for xmlid, name, category, keep_done in ACTIVITY_TYPES:
        engine.ensure(
            xmlid, "mail.activity.type", {"name": name, "category": category, "keep_done": keep_done}
        )
    return True
