"""schemathesis against the server's own ``/openapi.json``, over real sockets (issue 10).

Two passes over every operation in the schema:

1. no credentials: every ``/api``, ``/runs``, ``/subscriptions`` and ``/events`` operation answers 401 or
   403 (never 2xx, never 5xx), whatever the generated path, query, headers and body; the rest (health,
   metrics, webhooks, Slack) never answers 5xx;
2. with the admin bearer token (``SIGNOFF_API_TOKEN``): no operation answers 5xx, and every answer
   conforms to the schema's response model;
3. with the admin token, schemathesis' negative cases (invalid per the schema): no 5xx.

Bounded: a fixed number of examples per operation, derandomized (the same cases every run), a deadline
per example. Nothing is excluded; ``POST /subscriptions`` bodies get a loopback URL (a closed port)
instead of the generated one, so the deliverer never POSTs to a fuzzed host.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from conftest import API_TOKEN, Live

schemathesis = pytest.importorskip("schemathesis")
requests = pytest.importorskip("requests")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402

from signoff.integrations.webhooks_out import check_url  # noqa: E402

#: Examples per operation and pass; the whole module stays well under a minute on two cores.
MAX_EXAMPLES = 25
#: Per example (one request); far above what any answer takes on loopback.
DEADLINE = timedelta(seconds=10)
PROTECTED = ("/api/", "/runs", "/subscriptions", "/events/")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SINK = f"http://127.0.0.1:{_closed_port()}/fuzz-sink"


def _loopback_subscription(case: Any) -> Any:
    """Keep the deliverer on loopback: a well-formed generated URL is swapped for a closed local port."""
    if case.method == "POST" and case.path == "/subscriptions" and isinstance(case.body, dict):
        url = case.body.get("url")
        try:
            if isinstance(url, str) and check_url(url):
                case.body["url"] = SINK
        except Exception:  # a malformed URL stays: the server must answer 422, not 500
            pass
    return case


def _fuzz(live: Live, headers: dict[str, str], checks: list[Any],
          mode: Any = None) -> tuple[list[str], int]:
    """Run every operation (positive cases, or ``mode``); return (one line per failing operation, requests sent)."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json", timeout=30)
    session = requests.Session()
    session.trust_env = False
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"

        @settings(max_examples=MAX_EXAMPLES, deadline=DEADLINE, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(*([mode] if mode else [])).map(_loopback_subscription))
        def run(case: Any) -> None:
            nonlocal sent
            response = case.call(base_url=live.url, session=session, headers=headers, timeout=15)
            sent += 1
            case.validate_response(response, checks=checks, headers=headers)

        try:
            run()
        except Unsatisfiable:  # negative mode: an operation with nothing to make invalid (no parameters)
            if mode is None:
                raise
        except (Exception, BaseExceptionGroup) as exc:  # collect every failure, then fail once with all
            failures.append(f"{label}: {type(exc).__name__}: {str(exc).strip()[:1500]}")
    session.close()
    return failures, sent


def _unauthenticated(ctx: Any, response: Any, case: Any) -> bool | None:
    """The protected families answer 401/403 to a request without valid credentials."""
    if case.path.startswith(PROTECTED) and response.status_code not in (401, 403):
        raise AssertionError(f"{case.method} {case.formatted_path} answered {response.status_code} "
                             f"without credentials: {response.text[:300]}")
    return None


def test_no_unauthenticated_access_and_no_server_errors(start_server: Callable[..., Live]) -> None:
    live = start_server()
    started = time.monotonic()

    anonymous, n_anon = _fuzz(live, {}, [not_a_server_error, _unauthenticated])
    assert not anonymous, "without credentials:\n" + "\n".join(anonymous)

    admin, n_admin = _fuzz(live, {"Authorization": f"Bearer {API_TOKEN}"},
                           [not_a_server_error, response_schema_conformance])
    assert not admin, "with the admin token:\n" + "\n".join(admin)

    assert n_anon > 50 and n_admin > 50, (n_anon, n_admin)
    print(f"fuzzed {n_anon} anonymous and {n_admin} admin requests in {time.monotonic() - started:.1f}s")



def test_invalid_requests_are_not_server_errors(start_server: Callable[..., Live]) -> None:
    """Negative cases (wrong types, missing fields, out-of-range values) with the admin token: 4xx, never 5xx."""
    live = start_server()
    admin, n = _fuzz(live, {"Authorization": f"Bearer {API_TOKEN}"}, [not_a_server_error],
                     schemathesis.GenerationMode.NEGATIVE)
    assert not admin, "negative, with the admin token:\n" + "\n".join(admin)
    print(f"fuzzed {n} negative admin requests")
