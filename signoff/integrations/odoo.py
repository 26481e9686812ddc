"""The Odoo client: a read-only view for agents and a writer for the executor, over ``odoorpc``.

* :class:`ReadOnlyOdoo` (built by :func:`connect_reader`) reads with ``execute_kw`` and the methods
  ``search_read``, ``read``, ``search_count`` and ``fields_get`` only, always with explicit field lists
  (never ``browse``, never ``name_get``: read ``display_name``). Anything else raises
  :class:`~signoff.errors.ReadOnlyViolation` before a request is sent. It logs in as the read-only
  Odoo user (``settings.odoo_login``), so Odoo refuses writes too: two locks, not one.
* :class:`OdooWriter` (built by :func:`connect_writer`, only the executor does) adds ``write``,
  ``create``, ``message_post`` and a generic ``call``, as ``settings.odoo_executor_login``.
* :class:`InMemoryOdoo` is the same writer over an in-process copy of the stand-in's ORM emulation
  (a dict of ``model -> {id: record}``), for unit tests of logic; it answers exactly as the HTTP stand-in.

Errors are mapped by Odoo's ``error.data.name``, never by ``code`` (see errors.py for the tree):
AccessError/AccessDenied -> :class:`OdooAccessError`, MissingError -> :class:`OdooMissingError`,
ValidationError/UserError -> :class:`OdooValidationError`, anything else -> :class:`OdooInternalError`;
no answer (refused, timeout, HTTP error, not JSON) -> :class:`OdooConnectionError`, naming the URL.

``odoorpc`` is synchronous: async callers use the ``a``-prefixed methods (run in a worker thread).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit
from urllib.request import HTTPCookieProcessor, OpenerDirector, ProxyHandler, build_opener

import odoorpc
import odoorpc.error

from signoff.errors import (
    ConfigError,
    OdooAccessError,
    OdooConnectionError,
    OdooError,
    OdooInternalError,
    OdooMissingError,
    OdooValidationError,
    ReadOnlyViolation,
    SignoffError,
)

if TYPE_CHECKING:
    from signoff.config import Settings

__all__ = [
    "READ_ONLY_METHODS",
    "InMemoryOdoo",
    "OdooReader",
    "OdooWriter",
    "OdooWriterPort",
    "ReadOnlyOdoo",
    "connect",
    "connect_reader",
    "connect_writer",
    "error_from_odoo",
    "parse_odoo_url",
]

Domain = Sequence[Any]
Row = dict[str, Any]
T = TypeVar("T")

#: The only methods the read-only view sends.
READ_ONLY_METHODS: frozenset[str] = frozenset({"search_read", "read", "search_count", "fields_get"})

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


# --- ports ---------------------------------------------------------------------------------------


@runtime_checkable
class OdooReader(Protocol):
    """What read tools need from Odoo (ReadOnlyOdoo, OdooWriter and InMemoryOdoo all fit)."""

    def search_read(
        self,
        model: str,
        domain: Domain,
        fields: Sequence[str],
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str | None = None,
    ) -> list[Row]: ...

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[Row]: ...

    def search_count(self, model: str, domain: Domain) -> int: ...

    def fields_get(self, model: str, attributes: Sequence[str] | None = None) -> dict[str, Any]: ...


@runtime_checkable
class OdooWriterPort(OdooReader, Protocol):
    """What the executor needs: the reads plus the writes it applies."""

    def write(self, model: str, ids: Sequence[int], vals: Mapping[str, Any]) -> bool: ...

    def create(self, model: str, vals: Mapping[str, Any]) -> int: ...

    def message_post(
        self, model: str, res_id: int, body: str, *, subtype_xmlid: str = "mail.mt_note"
    ) -> int: ...


# --- error mapping -------------------------------------------------------------------------------


def error_from_odoo(info: Mapping[str, Any] | None, fallback: str = "Odoo error") -> OdooError:
    """Map Odoo's JSON-RPC ``error`` object to our exception, by ``data.name`` (never by ``code``)."""
    data = (info or {}).get("data") or {}
    name = str(data.get("name") or "")
    message = str(data.get("message") or (info or {}).get("message") or fallback)
    short = name.rsplit(".", 1)[-1]
    if short in ("AccessError", "AccessDenied"):
        return OdooAccessError(message, name=name)
    if short == "MissingError":
        return OdooMissingError(message, name=name)
    if short in ("ValidationError", "UserError", "RedirectWarning"):
        return OdooValidationError(message, name=name)
    return OdooInternalError(message, name=name or None)


def _map_exception(exc: BaseException, url: str, timeout: float | None) -> OdooError | None:
    if isinstance(exc, odoorpc.error.RPCError):
        info = exc.info if isinstance(exc.info, dict) else None
        if info:
            return error_from_odoo(info, str(exc))
        message = str(exc)
        if "login" in message.lower() or "password" in message.lower():
            return OdooAccessError(f"{message} (Odoo at {url})", name="odoo.exceptions.AccessDenied")
        return OdooInternalError(message)
    if isinstance(exc, odoorpc.error.InternalError):
        return OdooInternalError(str(exc))
    if isinstance(exc, urllib.error.HTTPError):
        return OdooConnectionError(f"Odoo at {url} answered HTTP {exc.code} {exc.reason}")
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError | socket.timeout):
            return OdooConnectionError(f"Odoo at {url} did not answer within {timeout}s")
        return OdooConnectionError(f"cannot reach Odoo at {url}: {reason}")
    if isinstance(exc, TimeoutError | socket.timeout):
        return OdooConnectionError(f"Odoo at {url} did not answer within {timeout}s")
    if isinstance(exc, ConnectionError | http.client.HTTPException | OSError):
        return OdooConnectionError(f"cannot reach Odoo at {url}: {exc}")
    if isinstance(exc, ValueError):  # the answer was not JSON: a proxy page, not Odoo
        return OdooConnectionError(f"{url} did not answer Odoo JSON-RPC ({exc})")
    return None


@contextmanager
def _mapped(url: str, timeout: float | None) -> Iterator[None]:
    try:
        yield
    except SignoffError:
        raise
    except Exception as exc:
        mapped = _map_exception(exc, url, timeout)
        if mapped is None:
            raise
        raise mapped from exc


# --- transports ----------------------------------------------------------------------------------


class _Transport(Protocol):
    url: str
    db: str
    login: str

    @property
    def uid(self) -> int: ...

    @property
    def version(self) -> str: ...

    def execute_kw(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any: ...


def parse_odoo_url(url: str) -> tuple[str, str, int]:
    """``http://host:8069`` -> ``(host, 'jsonrpc', 8069)``; https gives ``jsonrpc+ssl`` (default port 443)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"SIGNOFF_ODOO_URL must be http(s)://host[:port], got {url!r}")
    if not parts.hostname:
        raise ConfigError(f"SIGNOFF_ODOO_URL has no host: {url!r}")
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"SIGNOFF_ODOO_URL {url!r} has a path; odoorpc cannot reach Odoo under a path prefix"
        )
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 80)
    return parts.hostname, "jsonrpc+ssl" if ssl else "jsonrpc", port


def _opener(host: str) -> OpenerDirector:
    handlers: list[Any] = [HTTPCookieProcessor(CookieJar())]
    if host in _LOCAL_HOSTS:
        handlers.insert(0, ProxyHandler({}))  # never send 127.0.0.1 through HTTP(S)_PROXY
    return build_opener(*handlers)


class _RpcTransport:
    """odoorpc, logged in; every call goes through :func:`_mapped`. ``lazy``: log in at the first call (and
    again at the next one while it fails), so a server can start before Odoo does."""

    def __init__(self, url: str, db: str, login: str, password: str, timeout: float, *, lazy: bool = False) -> None:
        self._where = parse_odoo_url(url)
        self.url = url.rstrip("/")
        self.db, self.login, self.timeout = db, login, timeout
        self.__password = password
        self._odoo: Any = None
        self._lock = threading.Lock()
        if not lazy:
            self._session()

    def _session(self) -> Any:
        with self._lock:
            if self._odoo is None:
                host, protocol, port = self._where
                with _mapped(self.url, self.timeout):
                    odoo = odoorpc.ODOO(host, protocol=protocol, port=port, timeout=self.timeout,
                                        opener=_opener(host))
                    odoo.login(self.db, self.login, self.__password)
                self._odoo = odoo
            return self._odoo

    @property
    def uid(self) -> int:
        return int(self._session().env.uid)

    @property
    def version(self) -> str:
        return str(self._session().version)

    def execute_kw(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        odoo = self._odoo if self._odoo is not None else self._session()
        with _mapped(self.url, self.timeout):
            return odoo.execute_kw(model, method, args, kwargs)


# --- the clients ---------------------------------------------------------------------------------


def _fields_list(fields: Sequence[str]) -> list[str]:
    if isinstance(fields, str) or not fields:
        raise ValueError("pass an explicit, non-empty list of fields")
    return list(fields)


def _domain(domain: Domain) -> list[Any]:
    return [list(t) if isinstance(t, tuple) else t for t in domain]


class _OdooBase:
    """The read methods, shared. The transport is private; ``_allowed`` bounds what it may send."""

    __slots__ = ("__transport",)
    _allowed: frozenset[str] | None = None

    def __init__(self, transport: _Transport) -> None:
        self.__transport = transport

    def _execute(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self._allowed is not None and method not in self._allowed:
            raise ReadOnlyViolation(
                f"{model}.{method} is not allowed on the read-only Odoo view "
                f"(allowed: {', '.join(sorted(self._allowed))}); propose the write instead"
            )
        return self.__transport.execute_kw(model, method, args, kwargs)

    # -- identity ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.__transport.url

    @property
    def db(self) -> str:
        return self.__transport.db

    @property
    def login(self) -> str:
        return self.__transport.login

    @property
    def uid(self) -> int:
        return self.__transport.uid

    @property
    def version(self) -> str:
        """The server version odoorpc detected, e.g. ``17.0``."""
        return self.__transport.version

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.login}@{self.url}/{self.db}>"

    # -- reads ------------------------------------------------------------------------------------

    def search_read(
        self,
        model: str,
        domain: Domain,
        fields: Sequence[str],
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[Row]:
        kwargs: dict[str, Any] = {"fields": _fields_list(fields)}
        if offset:
            kwargs["offset"] = int(offset)
        if limit is not None:
            kwargs["limit"] = int(limit)
        if order:
            kwargs["order"] = order
        if context:
            kwargs["context"] = dict(context)
        result = self._execute(model, "search_read", [_domain(domain)], kwargs)
        return list(result or [])

    def read(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[Row]:
        id_list = [int(i) for i in ids]
        if not id_list:
            return []
        return list(self._execute(model, "read", [id_list], {"fields": _fields_list(fields)}) or [])

    def search_count(self, model: str, domain: Domain, *, context: Mapping[str, Any] | None = None) -> int:
        kwargs: dict[str, Any] = {"context": dict(context)} if context else {}
        return int(self._execute(model, "search_count", [_domain(domain)], kwargs))

    def fields_get(self, model: str, attributes: Sequence[str] | None = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"attributes": list(attributes)} if attributes else {}
        return dict(self._execute(model, "fields_get", [], kwargs))

    # -- async wrappers (odoorpc blocks) ----------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    async def asearch_read(
        self,
        model: str,
        domain: Domain,
        fields: Sequence[str],
        *,
        limit: int | None = None,
        offset: int = 0,
        order: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> list[Row]:
        return await self._in_thread(
            self.search_read, model, domain, fields, limit=limit, offset=offset, order=order, context=context
        )

    async def aread(self, model: str, ids: Sequence[int], fields: Sequence[str]) -> list[Row]:
        return await self._in_thread(self.read, model, ids, fields)

    async def asearch_count(self, model: str, domain: Domain) -> int:
        return await self._in_thread(self.search_count, model, domain)

    async def afields_get(self, model: str, attributes: Sequence[str] | None = None) -> dict[str, Any]:
        return await self._in_thread(self.fields_get, model, attributes)


class ReadOnlyOdoo(_OdooBase):
    """The agents' view of Odoo: ``search_read``, ``read``, ``search_count``, ``fields_get``; nothing else.

    Build it with :func:`connect_reader` or :meth:`connect`. There is no public attribute leading to
    the underlying odoorpc object, and even the private send path refuses non-read methods.
    """

    __slots__ = ()
    _allowed = READ_ONLY_METHODS

    @classmethod
    def connect(cls, url: str, db: str, login: str, password: str, *, timeout: float = 30.0,
                lazy: bool = False) -> ReadOnlyOdoo:
        """Logged in now, or (``lazy``) at the first read: a server starts while Odoo is still down."""
        return cls(_RpcTransport(url, db, login, password, timeout, lazy=lazy))

    def call(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Any allowed read method by name; anything else raises ReadOnlyViolation (no request sent)."""
        return self._execute(model, method, list(args), dict(kwargs))

    async def acall(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._in_thread(self.call, model, method, *args, **kwargs)


class OdooWriter(_OdooBase):
    """The executor's client: reads plus ``write``, ``create``, ``message_post`` and ``call``."""

    __slots__ = ()

    @classmethod
    def connect(cls, url: str, db: str, login: str, password: str, *, timeout: float = 30.0) -> OdooWriter:
        return cls(_RpcTransport(url, db, login, password, timeout))

    def write(self, model: str, ids: Sequence[int], vals: Mapping[str, Any]) -> bool:
        return bool(self._execute(model, "write", [[int(i) for i in ids], dict(vals)], {}))

    def create(self, model: str, vals: Mapping[str, Any]) -> int:
        result = self._execute(model, "create", [dict(vals)], {})
        return int(result[0] if isinstance(result, list) else result)

    def unlink(self, model: str, ids: Sequence[int]) -> bool:
        return bool(self._execute(model, "unlink", [[int(i) for i in ids]], {}))

    def message_post(
        self,
        model: str,
        res_id: int,
        body: str,
        *,
        subtype_xmlid: str = "mail.mt_note",
        message_type: str = "comment",
        body_is_html: bool = False,
        partner_ids: Sequence[int] | None = None,
    ) -> int:
        """Post on a record's chatter; an internal note by default. Returns the ``mail.message`` id."""
        kwargs: dict[str, Any] = {"body": body, "message_type": message_type, "subtype_xmlid": subtype_xmlid}
        if body_is_html:
            kwargs["body_is_html"] = True
        if partner_ids:
            kwargs["partner_ids"] = [int(p) for p in partner_ids]
        result = self._execute(model, "message_post", [[int(res_id)]], kwargs)
        return int(result[0] if isinstance(result, list) else result)

    def call(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._execute(model, method, list(args), dict(kwargs))

    async def acall(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._in_thread(self.call, model, method, *args, **kwargs)


def connect(
    url: str, db: str, login: str, password: str, *, timeout: float = 30.0, read_only: bool = True
) -> ReadOnlyOdoo | OdooWriter:
    """Log in over JSON-RPC; the read-only view unless ``read_only=False``."""
    cls = ReadOnlyOdoo if read_only else OdooWriter
    return cls.connect(url, db, login, password, timeout=timeout)


def _require_url(settings: Settings) -> str:
    if not settings.odoo_url:
        raise ConfigError(
            "SIGNOFF_ODOO_URL is not set; signoff.sandbox.embedded.odoo_for(settings) starts the stand-in"
        )
    return settings.odoo_url


def connect_reader(settings: Settings, *, lazy: bool = False) -> ReadOnlyOdoo:
    """The agents' read-only view, as ``settings.odoo_login`` (``lazy``: logged in at the first read)."""
    return ReadOnlyOdoo.connect(
        _require_url(settings),
        settings.odoo_db,
        settings.odoo_login,
        settings.odoo_password.get_secret_value(),
        timeout=settings.odoo_timeout,
        lazy=lazy,
    )


def connect_writer(settings: Settings) -> OdooWriter:
    """The executor's writer, as ``settings.odoo_executor_login`` (nothing else should build one)."""
    return OdooWriter.connect(
        _require_url(settings),
        settings.odoo_db,
        settings.odoo_executor_login,
        settings.odoo_executor_password.get_secret_value(),
        timeout=settings.odoo_timeout,
    )


# --- in-memory fake ------------------------------------------------------------------------------


class _EngineTransport:
    """Calls the stand-in's ORM emulation in-process, as one user; logs like the HTTP stand-in."""

    def __init__(self, fake: InMemoryOdoo, login: str) -> None:
        from signoff.sandbox.orm import Engine

        self._fake = fake
        self.url = "memory://odoo"
        self.db = "memory"
        self.version = fake.version_profile
        with fake._lock:
            uid = None
            for user_id, user in fake._backend.all("res.users").items():
                if user.get("login") == login and user.get("active", True):
                    uid = user_id
        if uid is None:
            raise OdooAccessError(
                f"Wrong login ID or password (no user {login!r} in memory)",
                name="odoo.exceptions.AccessDenied",
            )
        self.uid, self.login = uid, login
        self._engine_cls = Engine

    def execute_kw(self, model: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        from signoff.sandbox.orm import READ_METHODS, OdooFault

        fake = self._fake
        started = time.perf_counter()
        with fake._lock:
            snapshot = None if method in READ_METHODS else {m: dict(t) for m, t in fake.records.items()}
            engine = self._engine_cls(fake._backend, version=fake.version_profile)
            try:
                result = engine.call(self.uid, model, method, args, kwargs)
                error = None
            except OdooFault as fault:
                if snapshot is not None:
                    fake.records.clear()
                    fake.records.update(snapshot)
                result, error = fault, fault.name
            fake.calls.append(
                {
                    "seq": len(fake.calls) + 1,
                    "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "uid": self.uid,
                    "login": self.login,
                    "service": "object",
                    "model": model,
                    "method": method,
                    "args": args,
                    "kwargs": kwargs,
                    "ok": error is None,
                    "error": error,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )
        if isinstance(result, OdooFault):
            raise error_from_odoo(result.to_error())
        return _json_roundtrip(result)


def _json_roundtrip(value: Any) -> Any:
    """What the value looks like after JSON (tuples become lists, no shared references)."""
    import json

    return json.loads(json.dumps(value))


class InMemoryOdoo(OdooWriter):
    """An in-process Odoo for unit tests: same ORM emulation as the HTTP stand-in, no socket.

    ``records`` is ``model -> {id: record}`` (stored values; many2one as an id); base data (users
    ``admin``, ``agent``, ``executor``... , subtypes, activity types) is added when absent. Calls are
    made as ``login`` (``executor`` by default: write-capable; ``agent`` is read-only as in the stand-in).
    :meth:`reader` gives the real :class:`ReadOnlyOdoo` over the same data. ``calls`` logs every call.
    """

    __slots__ = ("_backend", "_lock", "calls", "records", "version_profile")

    def __init__(
        self,
        records: dict[str, dict[int, dict[str, Any]]] | None = None,
        *,
        login: str = "executor",
        version: str = "17.0",
    ) -> None:
        from signoff.sandbox.orm import DictBackend, Engine, bootstrap

        self.records: dict[str, dict[int, dict[str, Any]]] = records if records is not None else {}
        self._backend = DictBackend(self.records)
        self._lock = threading.RLock()
        self.calls: list[dict[str, Any]] = []
        self.version_profile = version
        bootstrap(Engine(self._backend, version=version))
        super().__init__(_EngineTransport(self, login))

    @classmethod
    def seeded(
        cls,
        public_data_dir: Path | None = None,
        *,
        n_history: int = 40,
        n_new: int = 5,
        n_contracts: int = 1,
        login: str = "executor",
    ) -> InMemoryOdoo:
        """A fake holding the same demo company :func:`signoff.sandbox.seed.seed` writes."""
        from signoff.sandbox.orm import Engine
        from signoff.sandbox.seed import seed_engine

        fake = cls(login=login)
        seed_engine(
            Engine(fake._backend, version=fake.version_profile),
            public_data_dir,
            n_history=n_history,
            n_new=n_new,
            n_contracts=n_contracts,
        )
        return fake

    def as_user(self, login: str) -> OdooWriter:
        """A client over the same data, as another user (e.g. ``agent`` to see Odoo refuse writes)."""
        return OdooWriter(_EngineTransport(self, login))

    def reader(self, login: str = "agent") -> ReadOnlyOdoo:
        """The real read-only view over this fake's data."""
        return ReadOnlyOdoo(_EngineTransport(self, login))

    def writer(self, login: str = "executor") -> OdooWriter:
        return self.as_user(login)
