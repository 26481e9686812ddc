"""An Odoo JSON-RPC stand-in: a real HTTP server that speaks what ``odoorpc`` sends.

Endpoints (all answer HTTP 200 with a JSON-RPC envelope; errors are Odoo's error object):

* ``POST /web/webclient/version_info``: the version profile (16.0, 17.0 or 18.0);
* ``POST /jsonrpc``: services ``common`` (``login``, ``authenticate``, ``version``), ``object``
  (``execute``, ``execute_kw``; credentials checked on every call) and ``db`` (``list``, ``server_version``);
* ``GET /web/health`` and ``GET /_fake/calls[?since=N]`` (the call log, as JSON);
* ``POST /_fake/fault`` ``{"delay": seconds, "down": bool, "only": "write" | null}``: fault injection for the
  fault trials (also :meth:`OdooStandIn.set_fault`): every other request (or only ``object`` calls of the
  ORM method ``only``) first waits ``delay`` seconds (then is handled, even if the client gave up), and
  while ``down`` its connection is closed unanswered, like a crashed Odoo.

Records live in SQLite (WAL) through :class:`~signoff.sandbox.orm.SqliteStore`, so they survive a restart
and other processes can read the call log (:meth:`OdooStandIn.calls` or
:func:`signoff.sandbox.orm.read_calls`). The ORM emulation is :class:`~signoff.sandbox.orm.Engine`.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from signoff.sandbox.orm import (
    READ_METHODS,
    USERS,
    Engine,
    OdooFault,
    SqliteStore,
    builtin_error,
    version_info,
)

__all__ = ["USERS", "OdooStandIn"]

log = logging.getLogger(__name__)


class OdooStandIn:
    """A local Odoo JSON-RPC server on ``db_path`` (SQLite). ``port=0`` picks a free port.

    >>> with OdooStandIn(tmp / "odoo.sqlite") as odoo:   # doctest: +SKIP
    ...     odoorpc.ODOO("127.0.0.1", port=odoo.port).login("signoff", "agent", "agent")
    """

    def __init__(
        self,
        db_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "17.0",
        dbname: str = "signoff",
    ) -> None:
        version_info(version)  # validates the profile
        self.db_path = Path(db_path)
        self.host = host
        self.version = version
        self.dbname = dbname
        self.store = SqliteStore(self.db_path, version=version)
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.fault_delay = 0.0
        self.fault_down = False
        self.fault_only: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> OdooStandIn:
        """Bind and serve in a background (daemon) thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.daemon_threads = True
        server.standin = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"odoo-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.store.close()

    def __enter__(self) -> OdooStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Odoo stand-in is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_fault(self, *, delay: float | None = None, down: bool | None = None,
                  only: str | None = "") -> dict[str, Any]:
        """Fault injection (trials and tests only): a delay before each request, or a "down" switch;
        ``only``: limit both to ``object`` calls of one ORM method (None: every request; "": unchanged)."""
        if delay is not None:
            self.fault_delay = max(0.0, float(delay))
        if down is not None:
            self.fault_down = bool(down)
        if only != "":
            self.fault_only = only
        return {"delay": self.fault_delay, "down": self.fault_down, "only": self.fault_only}

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        """The call log (every ``/jsonrpc`` call to ``common.login`` and ``object``), oldest first."""
        return self.store.calls(since=since)

    # -- request handling -------------------------------------------------------------------------

    def handle_jsonrpc(self, params: dict[str, Any]) -> Any:
        service = params.get("service")
        method = params.get("method")
        args = params.get("args") or []
        if not isinstance(args, list):
            raise builtin_error("TypeError", "args must be a list")
        if service == "common":
            return self._common(str(method), args)
        if service == "object":
            return self._object(str(method), args)
        if service == "db":
            if method == "list":
                return [self.dbname]
            if method == "server_version":
                return version_info(self.version)["server_version"]
            if method == "db_exist":
                return bool(args) and args[0] == self.dbname
            raise builtin_error("KeyError", f"'{method}'")
        raise builtin_error("Exception", f"No such RPC service: {service!r}")

    def _common(self, method: str, args: list[Any]) -> Any:
        if method == "version":
            return version_info(self.version)
        if method in ("login", "authenticate"):
            if len(args) < 3:
                raise builtin_error("TypeError", f"{method}() missing required arguments")
            db, login, password = args[0], args[1], args[2]
            uid: int | None = None
            started = time.perf_counter()
            if db == self.dbname:
                with self.store.session(write=False) as backend:
                    uid = Engine(backend, version=self.version).authenticate(str(login), password)
            self._log(
                uid, str(login), "common", None, method, [db, login], {}, uid is not None, None, started
            )
            return uid if uid is not None else False
        if method == "about":
            return "See http://openerp.com"
        raise builtin_error("AttributeError", f"module 'common' has no attribute 'exp_{method}'")

    def _object(self, method: str, args: list[Any]) -> Any:
        if method == "execute_kw":
            if len(args) < 5:
                raise builtin_error("TypeError", "execute_kw() missing required arguments")
            db, uid, password, model, meth = args[:5]
            call_args = args[5] if len(args) > 5 else []
            call_kwargs = args[6] if len(args) > 6 else {}
        elif method == "execute":
            if len(args) < 5:
                raise builtin_error("TypeError", "execute() missing required arguments")
            db, uid, password, model, meth = args[:5]
            call_args, call_kwargs = list(args[5:]), {}
        else:
            raise builtin_error("AttributeError", f"module 'object' has no attribute 'exp_{method}'")
        if not isinstance(call_args, list) or not isinstance(call_kwargs, dict):
            raise builtin_error("TypeError", "execute_kw expects a list of args and a dict of kwargs")
        started = time.perf_counter()
        login: str | None = None
        try:
            if db != self.dbname:
                raise OdooFault(
                    "psycopg2.OperationalError",
                    f'connection to server failed: FATAL:  database "{db}" does not exist',
                )
            write = str(meth) not in READ_METHODS
            with self.store.session(write=write) as backend:
                engine = Engine(backend, version=self.version)
                login = engine.login_of(uid)
                engine.check_credentials(uid, password)
                result = engine.call(uid, str(model), str(meth), call_args, call_kwargs)
        except OdooFault as fault:
            self._log(uid, login, "object", model, meth, call_args, call_kwargs, False, fault.name, started)
            raise
        except Exception as exc:  # an emulation bug: answer like Odoo does for an internal error
            internal = builtin_error(type(exc).__name__, str(exc))
            internal.debug = traceback.format_exc()
            self._log(
                uid, login, "object", model, meth, call_args, call_kwargs, False, internal.name, started
            )
            raise internal from exc
        self._log(uid, login, "object", model, meth, call_args, call_kwargs, True, None, started)
        return result

    def _log(
        self,
        uid: Any,
        login: str | None,
        service: str,
        model: Any,
        method: Any,
        args: Any,
        kwargs: Any,
        ok: bool,
        error: str | None,
        started: float,
    ) -> None:
        self.store.log_call(
            {
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "uid": uid if isinstance(uid, int) else None,
                "login": login,
                "service": service,
                "model": model if isinstance(model, str) else None,
                "method": str(method),
                "args": args,
                "kwargs": kwargs,
                "ok": ok,
                "error": error,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops bursts of connections (1 s SYN retries)
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, killed process) is normal here, as for a real Odoo: no traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s went away", client_address)
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "Werkzeug/3.0.1"
    sys_version = "Python/3"

    def log_message(self, format: str, *args: Any) -> None:
        return

    @property
    def standin(self) -> OdooStandIn:
        return self.server.standin  # type: ignore[attr-defined]

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _faulted(self, method: object = None) -> bool:
        """Apply the injected fault; True when the request is dropped unanswered (Odoo "down")."""
        standin = self.standin
        if standin.fault_only is not None and method != standin.fault_only:
            return False
        if standin.fault_delay:
            time.sleep(standin.fault_delay)
        if standin.fault_down:
            self.close_connection = True
            return True
        return False

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/_fake/") and self._faulted():
            return
        if parts.path == "/web/health":
            self._send(200, {"status": "pass"})
        elif parts.path == "/_fake/calls":
            since = int(parse_qs(parts.query).get("since", ["0"])[0] or 0)
            self._send(200, self.standin.calls(since=since))
        else:
            self._send(404, b"<h1>Not Found</h1>", "text/html")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            payload = json.loads(raw or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:
            self._send(400, b"<h1>Bad Request</h1><p>Invalid JSON data</p>", "text/html")
            return
        if path == "/_fake/fault":
            delay, down, only = payload.get("delay"), payload.get("down"), payload.get("only", "")
            if (not (delay is None or isinstance(delay, int | float)) or not (down is None or isinstance(down, bool))
                    or not (only is None or isinstance(only, str))):
                self._send(400, {"error": "delay: a number of seconds, down: true or false, only: a method or null"})
                return
            self._send(200, self.standin.set_fault(delay=delay, down=down, only=only))
            return
        req_id = payload.get("id")
        params = payload.get("params") or {}
        rpc_args = params.get("args") if isinstance(params, dict) else None
        method = rpc_args[4] if isinstance(rpc_args, list) and len(rpc_args) > 4 else None
        if self._faulted(method):
            return
        try:
            if path == "/web/webclient/version_info":
                result = version_info(self.standin.version)
            elif path == "/jsonrpc":
                if not isinstance(params, dict):
                    raise builtin_error("TypeError", "params must be an object")
                result = self.standin.handle_jsonrpc(params)
            else:
                self._send(404, b"<h1>Not Found</h1>", "text/html")
                return
        except OdooFault as fault:
            self._send(200, {"jsonrpc": "2.0", "id": req_id, "error": fault.to_error()})
            return
        self._send(200, {"jsonrpc": "2.0", "id": req_id, "result": result})


def default_credentials() -> list[tuple[str, str, str]]:
    """(login, password, role) of the users every stand-in database has."""
    return [(login, pw, role) for _x, login, pw, _n, _w, role in USERS if pw]
