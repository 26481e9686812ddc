"""Orchestration: start runs from outside, read them, subscribe to events, and signed inbound webhooks.

Routes (all in the OpenAPI schema at ``/docs`` and ``/openapi.json``):

* ``POST /runs`` (scope ``start``): start a run of ``triage`` (``{ticket_id}``) or ``renewal``
  (``{partner_id}``) in the background; 202 with the run's thread id (200 ``duplicate`` when the record
  already has a run, 200 ``skipped`` with a reason when there is nothing to run). An ``idempotency_key``
  (or header ``Idempotency-Key``) replays the first answer.
* ``GET /runs/{thread_id}``, ``GET /runs/{thread_id}/proposals`` (scope ``read``).
* ``POST/GET/DELETE /subscriptions``, ``GET /subscriptions/{id}/deliveries``,
  ``POST /events/{event_id}/replay`` (scope ``decide``).
* ``POST /webhooks/in/{source}``: HMAC-signed, mapped to a run by ``SIGNOFF_INBOUND_MAPPING_PATH``.

Authentication: ``Authorization: Bearer <key>`` with an API key from ``signoff apikeys create`` (scoped)
or ``SIGNOFF_API_TOKEN`` (all scopes). The approvals API under ``/api`` takes the same keys:
``/api/triage`` needs ``start``, decisions need ``decide``, reads need ``read``, ``/api/sweep`` ``admin``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from starlette.concurrency import run_in_threadpool

from signoff.config import Settings
from signoff.domain import canonical_json, check_odoo_id, utcnow
from signoff.errors import ConfigError, DataError, OdooMissingError
from signoff.integrations.webhooks_in import AGENT_INPUTS, load_mapping
from signoff.integrations.webhooks_out import (
    EVENT_TYPES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Deliverer,
    Outbox,
    RetryPolicy,
    verify,
)
from signoff.server.apikeys import ADMIN, ApiKeyStore, Principal
from signoff.server.limits import parse_json
from signoff.server.services import RUN_FAILED_KINDS, ServerServices

log = logging.getLogger(__name__)

#: Signed inbound requests older (or newer) than this are refused as replays.
INBOUND_TOLERANCE = 300.0
#: Scope of each approvals-API route (``/api``); any other non-GET route needs ``admin`` (fail closed).
API_SCOPES = {"/api/proposals/{proposal_id}/decision": "decide", "/api/triage": "start", "/api/sweep": "admin"}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# --- authentication ---------------------------------------------------------------------------------


def _orchestration(request: Request) -> Orchestration:
    orch: Orchestration | None = getattr(request.app.state, "orchestration", None)
    if orch is None:
        raise RuntimeError("the server is not started (lifespan did not run)")
    return orch


def authenticate(request: Request, authorization: str | None, scope: str) -> Principal:
    """The caller, if its bearer key is valid and has ``scope``; raises ApiError (401/403/503) otherwise."""
    settings: Settings = request.app.state.settings
    admin = settings.api_token.get_secret_value() if settings.api_token else None
    keys = getattr(getattr(request.app.state, "orchestration", None), "keys", None)
    token = authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ") else None
    if not admin and (keys is None or not keys.any_active()):
        raise ApiError(503, "disabled", "the API is disabled: set SIGNOFF_API_TOKEN or create a key with "
                                        "`signoff apikeys create`")
    if not token:
        raise ApiError(401, "unauthorised", "the API: credentials missing (Authorization: Bearer <key>)")
    principal: Principal | None = None
    if admin and hmac.compare_digest(token.encode(), admin.encode()):
        principal = ADMIN
    elif keys is not None:
        found = keys.authenticate(token)
        if found == "revoked":
            raise ApiError(403, "unauthorised", "the API: this key was revoked")
        principal = found
    if principal is None:
        raise ApiError(403, "unauthorised", "the API: wrong credentials")
    if not principal.allows(scope):
        raise ApiError(403, "unauthorised", f"the API: key {principal.name!r} lacks scope {scope!r}")
    request.state.principal = principal
    return principal


def scope_for(request: Request) -> str:
    """The scope an ``/api`` route needs (by its path template)."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    if path in API_SCOPES:
        return API_SCOPES[path]
    return "read" if request.method in ("GET", "HEAD") else "admin"


bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="An API key from `signoff apikeys create` (scoped) or SIGNOFF_API_TOKEN (all scopes).")


def _auth(scope: str) -> Any:
    def dependency(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None) -> Principal:
        header = f"Bearer {credentials.credentials}" if credentials else None
        return authenticate(request, header, scope)

    dependency.__name__ = f"require_{scope}"
    return dependency


async def authorise_api(request: Request, authorization: str | None) -> Principal:
    """The approvals API (``/api``): the route's scope; a key bound to an approver decides only as them."""
    scope = scope_for(request)
    principal = authenticate(request, authorization, scope)
    if scope == "decide" and principal.actor:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        named = (body.get("actor") if isinstance(body, dict) else None) or request.headers.get("x-signoff-actor")
        if named != principal.actor:
            raise ApiError(403, "unauthorised", f"key {principal.name!r} decides as {principal.actor} only: "
                                                f"name that actor (body 'actor' or header X-Signoff-Actor)")
    return principal


# --- models -----------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    """An error answer: Signoff's own ``{"error", "detail"}``, or FastAPI's request validation ``{"detail": [...]}``."""

    error: str | None = Field(default=None, description="A short code: invalid_input, idempotency_conflict, ...")
    detail: str | list[dict[str, Any]]


#: The documented 422: both Signoff's errors and FastAPI's validation errors answer it.
INVALID: dict[int | str, dict[str, Any]] = {422: {"model": ErrorBody, "description": "invalid request"}}


class RunIn(BaseModel):
    """Start one run of an agent on one record."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"agent": "triage", "input": {"ticket_id": 42}, "idempotency_key": "n8n-exec-9f1c"}]})

    agent: Literal["triage", "renewal"] = Field(description="triage: a helpdesk ticket; renewal: an account's risk.")
    input: dict[str, StrictInt] = Field(description="triage: {ticket_id}; renewal: {partner_id} (Odoo ids).")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200,
                                        description="The same key (per API key) replays the first answer.")

    @field_validator("input")
    @classmethod
    def _odoo_ids(cls, value: dict[str, int]) -> dict[str, int]:
        """Every id is an Odoo id (positive, below 2**31): the same check as the CLI's."""
        for name, record in value.items():
            check_odoo_id(record, name.removesuffix("_id"))
        return value


class RunAccepted(BaseModel):
    status: Literal["accepted", "duplicate", "skipped"] = Field(
        description="accepted: the run starts in the background; duplicate: the record already has a run; "
                    "skipped: there is nothing to run (see reason), no run and no links.")
    thread_id: str | None = Field(description="The run's id, e.g. ticket:signoff:42 or "
                                              "account:signoff:7:2027-01 (an account's run for one renewal "
                                              "cycle); null when skipped.")
    agent: str
    links: dict[str, str]
    reason: str | None = Field(default=None, description="Why nothing runs (skipped), e.g. "
                                                         "\"no subscription: nothing to score\".")


class ProposalView(BaseModel):
    id: str
    action: str
    state: str
    target_model: str
    target_id: int
    approver_group: str
    channel: str
    confidence: float | None
    args: dict[str, Any] = Field(description="What would be written (the approver's edit, once edited).")
    created_at: str
    expires_at: str | None
    decided_by: str | None
    decided_at: str | None


class RunView(BaseModel):
    thread_id: str
    agent: str
    state: Literal["running", "paused", "done", "stopped", "failed"] = Field(
        description="running (queued or working), paused (waiting for approvals), done, stopped (interrupted; "
                    "the sweep finishes it), failed (see error).")
    outcome: dict[str, Any] | None = Field(description="The agent's conclusion: triage labels or the risk band.")
    error: str | None = None
    proposals: list[ProposalView]


class ProposalsView(BaseModel):
    thread_id: str
    proposals: list[ProposalView]


class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Where events are POSTed (http or https).")
    events: list[Literal["proposal.created", "proposal.decided", "proposal.expired", "execution.succeeded",
                         "execution.failed", "run.needs_human"]] = Field(min_length=1)
    secret: str | None = Field(default=None, min_length=16, max_length=200,
                               description="Signing secret; omitted: one is generated and returned once.")
    scope: Literal["facts", "ids"] = Field(
        default="facts", description="facts: ids plus redacted arguments and reasons; ids: ids and states only.")
    description: str | None = Field(default=None, max_length=200)


class SubscriptionView(BaseModel):
    id: str
    url: str
    events: list[str]
    scope: str
    description: str | None
    created_at: str
    removed_at: str | None = None


class SubscriptionCreated(SubscriptionView):
    secret: str = Field(description="The signing secret: shown once, keep it in the consumer.")


class DeliveryView(BaseModel):
    id: str
    event_id: str
    event_type: str
    subscription_id: str
    url: str
    subject: str
    status: Literal["pending", "sending", "delivered", "failed", "cancelled"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None


class InboundAccepted(BaseModel):
    status: Literal["accepted", "duplicate", "ignored", "skipped"]
    thread_id: str | None = None
    agent: str | None = None
    reason: str | None = None


# --- the service ------------------------------------------------------------------------------------

_IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (principal, key)
);
"""


class Orchestration:
    """API keys, idempotent run starts, run views, the outbox and its delivery worker."""

    def __init__(self, svc: ServerServices, settings: Settings) -> None:
        self.svc, self.settings = svc, settings
        self.db = svc.rt.statedb
        self.keys = ApiKeyStore(self.db)
        self.outbox = Outbox(self.db)
        self.db.ensure(_IDEMPOTENCY_SCHEMA)
        retry = RetryPolicy(backoff=settings.outbound_backoff_seconds,
                            backoff_max=settings.outbound_backoff_max_seconds,
                            give_up=settings.outbound_give_up_seconds, timeout=settings.outbound_timeout)
        self.deliverer = Deliverer(self.outbox, retry, poll=settings.outbound_poll_seconds)
        self._guard = threading.Lock()
        self._inflight: set[str] = set()

    def start(self) -> None:
        if self.settings.outbound_poll_seconds > 0:
            self.deliverer.start()

    def close(self) -> None:
        self.deliverer.stop()

    # -- runs ---------------------------------------------------------------------------------------

    def start_run(self, agent: str, inputs: dict[str, int], *, source: str) -> tuple[str, str | None, str | None]:
        """(``accepted`` | ``duplicate`` | ``skipped``, thread id (None when skipped), why skipped).
        Raises DataError for a bad input."""
        wanted = AGENT_INPUTS.get(agent)
        if wanted is None:
            raise DataError(f"unknown agent {agent!r}: use {', '.join(AGENT_INPUTS)}")
        if set(inputs) != {wanted}:
            raise DataError(f"agent {agent} takes input {{{wanted}: <positive Odoo id>}}")
        try:
            record = check_odoo_id(inputs[wanted], wanted.removesuffix("_id"))
        except ValueError as exc:
            raise DataError(str(exc)) from exc
        if agent == "triage":
            return (*self.svc.accept_ticket(record, source=source), None)
        return self._accept_account(record, source=source)

    def _accept_account(self, partner_id: int, *, source: str) -> tuple[str, str | None, str | None]:
        from signoff.agents.renewal import NO_SUBSCRIPTION, renewal_runner

        with renewal_runner(self.svc.rt) as runner:
            try:
                if not runner.has_subscription(partner_id):  # the company itself, a bot, a contact
                    return "skipped", None, NO_SUBSCRIPTION
            except OdooMissingError:  # answered at once: no run started, nothing audited
                raise DataError(f"no partner {partner_id} in Odoo") from None
            thread = runner.current_thread(partner_id)  # one run per account and renewal cycle
        with self._guard:
            if thread in self._inflight:
                return "duplicate", thread, None
            self._inflight.add(thread)
        try:
            with renewal_runner(self.svc.rt) as runner:
                values, _paused, stopped = runner.status(thread)
        except Exception:
            with self._guard:
                self._inflight.discard(thread)
            raise
        if values and not stopped:
            with self._guard:
                self._inflight.discard(thread)
            return "duplicate", thread, None
        self.svc.submit(self._renewal_job, partner_id, thread, source)
        return "accepted", thread, None

    def _renewal_job(self, partner_id: int, thread: str, source: str) -> None:
        from signoff.agents.renewal import renewal_runner

        rt = self.svc.rt
        try:
            rt.audit.append("run.requested", thread, f"system:{source}", {"agent": "renewal", "partner": partner_id},
                            thread_id=thread)
            with self.svc.lock(thread), renewal_runner(rt) as runner:
                result = runner.run(partner_id, cycle=thread.rsplit(":", 1)[1])
            self.svc.metrics.runs.inc(result.status)
        except Exception as exc:  # the pool would swallow it
            log.exception("renewal run %s failed", thread)
            rt.audit.append("run.crashed", thread, "system:server", {"error": f"{type(exc).__name__}: {exc}"},
                            thread_id=thread)
            self.svc.metrics.runs.inc("crashed")
        finally:
            with self._guard:
                self._inflight.discard(thread)

    def run_view(self, thread: str) -> RunView | None:
        rt = self.svc.rt
        if thread.startswith("account:"):
            from signoff.agents.renewal import renewal_runner

            agent = "renewal"
            with renewal_runner(rt) as runner:
                values, paused, stopped = runner.status(thread)
        elif thread.startswith("ticket:"):
            agent = "triage"
            values, paused, stopped = rt.runner.status(thread)
        else:
            return None
        with self._guard:
            running = thread in self._inflight
        running = running or self.svc.in_flight(thread)
        failures = [] if running else [e for e in rt.audit.trail(thread) if e.kind in RUN_FAILED_KINDS]
        state = ("running" if running else "paused" if paused else "stopped" if stopped
                 else "done" if values else "failed" if failures else None)
        if state is None:
            return None
        # A failure is the run's error while it is what stopped it, not after a later attempt got further.
        error = (str(failures[-1].data.get("error") or failures[-1].kind)
                 if failures and state in ("failed", "stopped") else None)
        return RunView(thread_id=thread, agent=agent, state=state, outcome=_outcome(values), error=error,  # type: ignore[arg-type]
                       proposals=self.proposals(thread))

    def proposals(self, thread: str) -> list[ProposalView]:
        out = []
        for p in self.svc.rt.store.find(thread_id=thread):
            out.append(ProposalView(
                id=p.id, action=p.action, state=p.state, target_model=p.target_model, target_id=p.target_id,
                approver_group=p.approver_group, channel=p.channel, confidence=p.confidence, args=p.effective_args,
                created_at=p.created_at.isoformat(), expires_at=p.expires_at.isoformat() if p.expires_at else None,
                decided_by=p.decided_by, decided_at=p.decided_at.isoformat() if p.decided_at else None))
        return out

    # -- idempotency --------------------------------------------------------------------------------

    def remembered(self, principal: str, key: str, request_hash: str) -> tuple[int, dict[str, Any]] | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT request_hash, status, response FROM idempotency WHERE principal = ? AND key = ?",
                               (principal, key)).fetchone()
        if row is None:
            return None
        if row[0] != request_hash:
            raise ApiError(422, "idempotency_conflict",
                           f"idempotency key {key!r} was used with a different request")
        return int(row[1]), json.loads(row[2])

    def remember(self, principal: str, key: str, request_hash: str, status: int,
                 response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Store the answer unless another request with this key stored one first; return the stored one."""
        with self.db.connect(write=True) as conn:
            conn.execute("INSERT INTO idempotency (principal, key, request_hash, status, response,"
                         " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (principal, key) DO NOTHING",
                         (principal, key, request_hash, status, json.dumps(response), utcnow().isoformat()))
        stored = self.remembered(principal, key, request_hash)
        assert stored is not None
        return stored

    def start_idempotent(self, principal: str, key: str | None, agent: str, inputs: dict[str, int], *,
                         source: str) -> tuple[int, dict[str, Any], bool]:
        """(HTTP status, body, replayed) of a run start, remembered under ``key`` when one is given."""
        request_hash = hashlib.sha256(canonical_json({"agent": agent, "input": inputs}).encode()).hexdigest()
        if key:
            seen = self.remembered(principal, key, request_hash)
            if seen is not None:
                return seen[0], seen[1], True
        status, thread, reason = self.start_run(agent, inputs, source=source)
        links = {"run": f"/runs/{thread}", "proposals": f"/runs/{thread}/proposals"} if thread else {}
        body = RunAccepted(status=status, thread_id=thread, agent=agent, links=links,  # type: ignore[arg-type]
                           reason=reason).model_dump()
        code = 202 if status == "accepted" else 200
        if key:
            code, body = self.remember(principal, key, request_hash, code, body)
        return code, body, False


def _outcome(values: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's conclusion without ticket text: labels, confidences, band, the reasons' heads."""
    triage, score = values.get("triage"), values.get("score")
    if isinstance(triage, dict):
        category = triage.get("category") or {}
        return {"outcome": triage.get("outcome"), "category": category.get("label"),
                "category_confidence": category.get("confidence"), "team": triage.get("team"),
                "priority": triage.get("priority"),
                "reasons": [str(r).split(": ", 1)[0] for r in triage.get("reasons", [])]}
    if isinstance(score, dict):
        return {"outcome": score.get("outcome"), "band": score.get("band"), "probability": score.get("probability"),
                "confidence": score.get("confidence"),
                "reasons": [str(r).split(": ", 1)[0] for r in score.get("reasons", [])]}
    return None


# --- routes -----------------------------------------------------------------------------------------

router = APIRouter()
_start, _read, _decide = _auth("start"), _auth("read"), _auth("decide")
_ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "credentials missing"},
                                            403: {"description": "wrong, revoked or under-scoped key"}}


@router.post("/runs", status_code=202, tags=["runs"], response_model=RunAccepted,
             responses={**_ERRORS, **INVALID, 200: {"description": "duplicate: the record already has a run",
                                         "model": RunAccepted}})
async def start_run(body: RunIn, request: Request, principal: Annotated[Principal, Depends(_start)],
                    idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
    """Start a run of an agent on one Odoo record, in the background (scope ``start``).

    ``triage`` takes ``{"ticket_id": N}``, ``renewal`` ``{"partner_id": N}`` (Odoo ids: positive, below
    2**31, else 422; a partner Odoo does not have is a 422 "no partner N in Odoo", no run started). One run
    per record: a second start answers 200 ``duplicate`` with the same thread id.
    A partner without a subscription answers 200 ``skipped`` with ``reason`` "no subscription: nothing to
    score" and no thread or links (no run, as the CLI). With an idempotency key (body field
    or header ``Idempotency-Key``) a repeated request gets the first answer again (header
    ``Idempotent-Replayed: true``); the same key with a different request is a 422, and so is a body key
    that differs from the header's.
    """
    orch = _orchestration(request)
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise ApiError(422, "invalid_input", "two different idempotency keys: the body's 'idempotency_key' and "
                                             "the Idempotency-Key header disagree; send one")
    key = body.idempotency_key or idempotency_key
    try:
        code, answer, replayed = await run_in_threadpool(orch.start_idempotent, principal.id, key, body.agent,
                                                         dict(body.input), source="api")
    except DataError as exc:
        raise ApiError(422, "invalid_input", str(exc)) from exc
    return JSONResponse(answer, status_code=code, headers={"Idempotent-Replayed": "true"} if replayed else None)


@router.get("/runs/{thread_id}", tags=["runs"], response_model=RunView, responses={**_ERRORS, 404: {}})
async def get_run(thread_id: str, request: Request, _: Annotated[Principal, Depends(_read)]) -> RunView:
    """A run's state, the agent's conclusion (no ticket text) and its proposals (scope ``read``)."""
    view = await run_in_threadpool(_orchestration(request).run_view, thread_id)
    if view is None:
        raise ApiError(404, "not_found", f"no run {thread_id!r}")
    return view


@router.get("/runs/{thread_id}/proposals", tags=["runs"], response_model=ProposalsView,
            responses={**_ERRORS, 404: {}})
async def get_run_proposals(thread_id: str, request: Request,
                            _: Annotated[Principal, Depends(_read)]) -> ProposalsView:
    """The run's proposals, oldest first, with their states (scope ``read``); 404 when there is no such run."""
    orch = _orchestration(request)
    found = await run_in_threadpool(orch.proposals, thread_id)
    if not found and await run_in_threadpool(orch.run_view, thread_id) is None:
        raise ApiError(404, "not_found", f"no run {thread_id!r}")
    return ProposalsView(thread_id=thread_id, proposals=found)


@router.post("/subscriptions", status_code=201, tags=["events"], response_model=SubscriptionCreated,
             responses={**_ERRORS, **INVALID})
async def add_subscription(body: SubscriptionIn, request: Request,
                           _: Annotated[Principal, Depends(_decide)]) -> SubscriptionCreated:
    """Subscribe a URL to event types (scope ``decide``). The signing secret is returned once.

    Deliveries are POSTs signed with ``X-Signoff-Signature: sha256=HMAC(secret, "<timestamp>.<body>")``,
    ``X-Signoff-Timestamp`` and ``X-Signoff-Event-Id``; retried with backoff; in order per run.
    """
    try:
        sub, secret = await run_in_threadpool(_orchestration(request).outbox.subscribe, body.url, body.events,
                                              secret=body.secret, scope=body.scope, description=body.description)
    except DataError as exc:
        raise ApiError(422, "invalid_subscription", str(exc)) from exc
    return SubscriptionCreated(**sub.public(), secret=secret)


@router.get("/subscriptions", tags=["events"], response_model=list[SubscriptionView], responses=_ERRORS)
async def list_subscriptions(request: Request, _: Annotated[Principal, Depends(_decide)]) -> list[SubscriptionView]:
    """Active subscriptions, without their secrets (scope ``decide``)."""
    subs = await run_in_threadpool(_orchestration(request).outbox.subscriptions)
    return [SubscriptionView(**s.public()) for s in subs]


@router.delete("/subscriptions/{subscription_id}", tags=["events"], response_model=SubscriptionView,
               responses={**_ERRORS, 404: {}})
async def remove_subscription(subscription_id: str, request: Request,
                              _: Annotated[Principal, Depends(_decide)]) -> SubscriptionView:
    """Remove a subscription: nothing more is sent to it; its pending deliveries are cancelled (scope ``decide``)."""
    try:
        sub = await run_in_threadpool(_orchestration(request).outbox.unsubscribe, subscription_id)
    except DataError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    return SubscriptionView(**sub.public())


@router.get("/subscriptions/{subscription_id}/deliveries", tags=["events"], response_model=list[DeliveryView],
            responses=_ERRORS)
async def list_deliveries(subscription_id: str, request: Request, _: Annotated[Principal, Depends(_decide)],
                          status: str | None = None,
                          limit: int = 100) -> list[DeliveryView]:
    """Recent deliveries to a subscription: status, attempts, last HTTP status and error (scope ``decide``)."""
    rows = await run_in_threadpool(_orchestration(request).outbox.deliveries, subscription_id=subscription_id,
                                   status=status, limit=max(1, min(limit, 1000)))
    return [DeliveryView(**d.public()) for d in rows]


@router.post("/events/{event_id}/replay", tags=["events"], response_model=list[DeliveryView],
             responses={**_ERRORS, 404: {}})
async def replay_event(event_id: str, request: Request,
                       _: Annotated[Principal, Depends(_decide)]) -> list[DeliveryView]:
    """Send an event again to its active subscriptions (scope ``decide``); consumers dedupe on the event id."""
    orch = _orchestration(request)
    try:
        rows = await run_in_threadpool(orch.outbox.replay, event_id)
    except DataError as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    orch.deliverer.wake()
    return [DeliveryView(**d.public()) for d in rows]


@router.post("/webhooks/in/{source}", status_code=202, tags=["webhooks"], response_model=InboundAccepted,
             responses={200: {"description": "duplicate or ignored (the mapping's `when` did not match)"},
                        401: {"description": "bad or stale signature: nothing runs"},
                        404: {"description": "unknown source"}, 422: {"description": "payload does not map"}})
async def inbound_webhook(source: str, request: Request,
                          idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JSONResponse:
    """A signed webhook from another system, mapped to a run by ``SIGNOFF_INBOUND_MAPPING_PATH``.

    Sign ``"<timestamp>.<raw body>"`` with HMAC-SHA256 and the source's secret (``SIGNOFF_INBOUND_SECRETS``);
    send ``X-Signoff-Timestamp`` (Unix seconds, within 5 minutes) and ``X-Signoff-Signature: sha256=<hex>``.
    An ``Idempotency-Key`` header makes a redelivery replay the first answer.
    """
    orch = _orchestration(request)
    settings: Settings = request.app.state.settings
    raw = await request.body()
    audit = orch.svc.rt.audit
    try:
        routes = load_mapping(settings.inbound_mapping_path)
    except ConfigError as exc:
        raise ApiError(503, "disabled", str(exc)) from exc
    secret = settings.inbound_secrets.get(source)
    route = routes.get(source)
    if route is None or secret is None:
        raise ApiError(404, "unknown_source", f"no inbound webhook {source!r}: it needs an entry in "
                                              "SIGNOFF_INBOUND_MAPPING_PATH and a secret in SIGNOFF_INBOUND_SECRETS")
    problem = verify(secret.get_secret_value(), request.headers.get(TIMESTAMP_HEADER), raw,
                     request.headers.get(SIGNATURE_HEADER), tolerance=INBOUND_TOLERANCE)
    if problem:
        await run_in_threadpool(audit.append, "webhook.rejected", f"webhook:{source}", f"system:webhook:{source}",
                                {"reason": problem, "bytes": len(raw)})
        raise ApiError(401, "unauthorised", f"webhook {source}: {problem}")
    try:
        payload = parse_json(raw)
        if not route.matches(payload):
            return JSONResponse(InboundAccepted(status="ignored").model_dump(), status_code=200)
        inputs = route.resolve(payload)
        code, body, _replayed = await run_in_threadpool(
            orch.start_idempotent, f"webhook:{source}", idempotency_key, route.agent, inputs,
            source=f"webhook:{source}")
    except (ValueError, DataError) as exc:
        await run_in_threadpool(audit.append, "webhook.rejected", f"webhook:{source}", f"system:webhook:{source}",
                                {"reason": str(exc)[:500], "bytes": len(raw)})
        raise ApiError(422, "malformed_payload", f"webhook {source}: {exc}") from exc
    await run_in_threadpool(audit.append, "webhook.received", body["thread_id"] or f"webhook:{source}",
                            f"system:webhook:{source}",
                            {"source": source, "agent": route.agent, "input": inputs, "result": body["status"],
                             **({"reason": body["reason"]} if body.get("reason") else {})},
                            thread_id=body["thread_id"])
    answer = InboundAccepted(status=body["status"], thread_id=body["thread_id"], agent=route.agent,
                             reason=body.get("reason"))
    return JSONResponse(answer.model_dump(), status_code=code)


def install(app: FastAPI) -> None:
    """Mount the routes and map :class:`ApiError` to ``{"error", "detail"}`` answers."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    app.include_router(router)


__all__ = ["EVENT_TYPES", "ApiError", "Orchestration", "authenticate", "authorise_api", "install", "router",
           "scope_for"]
