"""The FastAPI app: Odoo webhooks, the approvals REST API, health and metrics, Slack (Bolt) events.

``create_app(settings)`` builds it; the lifespan opens the runtime (the embedded Odoo stand-in when
``SIGNOFF_ODOO_URL`` is unset), starts the worker pool and the sweep, and mounts Slack when a bot
token and signing secret are configured. Handlers reach the services through FastAPI dependencies.

The webhook answers ``202 accepted`` at once and triages in the worker pool (Odoo's webhook gives up
after one second, and may call before its transaction commits: the worker re-reads the ticket with
a short backoff first). Decisions over the REST API are synchronous: the response carries the
proposal's state after the run resumed (``executed`` when this was the run's last decision).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from signoff.agents.services import Runtime, open_runtime
from signoff.config import Settings, get_settings
from signoff.domain import ODOO_ID_LIMIT, Decision
from signoff.errors import AlreadyDecided, InvalidDecision, NotAuthorised, ProposalNotFound, SignoffError
from signoff.server.limits import BodyLimit, parse_json
from signoff.server.services import ServerServices

log = logging.getLogger(__name__)


#: A decision's reason is for people to read (Slack's modal caps it at 2,000 characters too).
MAX_REASON = 2000
#: No request this server understands is bigger; larger bodies are refused before they are read.
MAX_BODY = 1_000_000
#: Filters and ids fit easily; longer query strings are refused before any page is built.
MAX_QUERY = 4096
#: ``GET /api/proposals?state=``: a proposal state, or ``all`` (the schema lists them; anything else is a 422).
StateFilter = Literal["all", "proposed", "pending", "approved", "edited", "rejected", "expired", "cancelled",
                      "executing", "executed", "failed"]
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
               414: "uri_too_long", 415: "unsupported_media_type", 422: "invalid_request"}


class OdooEvent(BaseModel):
    """An Odoo automation rule's "Send Webhook Notification" body; extra fields are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    model: str = Field(alias="_model", min_length=1, max_length=128)
    id: StrictInt = Field(alias="_id", gt=0, lt=ODOO_ID_LIMIT)
    action: str | None = Field(default=None, alias="_action")


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["approve", "edit", "reject"]
    actor: str | None = None
    """Approver identity as the policy's groups name it (or header ``X-Signoff-Actor``)."""
    reason: str | None = Field(default=None, max_length=MAX_REASON)
    args: dict[str, Any] | None = None


class TriageIn(BaseModel):
    ticket_id: StrictInt = Field(gt=0, lt=ODOO_ID_LIMIT)


#: How much of a rejected value a 422 echoes back (FastAPI echoes all of it: a 100 KB key came back whole).
MAX_ECHO = 200


def _trimmed(problem: dict[str, Any]) -> dict[str, Any]:
    shown = problem.get("input")
    if shown is not None and not isinstance(shown, bool | int | float):
        text = shown if isinstance(shown, str) else json.dumps(shown, default=str)
        if len(text) > MAX_ECHO:
            problem = {**problem, "input": f"{text[:MAX_ECHO]}... ({len(text)} characters)"}
    return problem


def _error(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def get_services(request: Request) -> ServerServices:
    services: ServerServices | None = getattr(request.app.state, "services", None)
    if services is None:
        raise RuntimeError("the server is not started (lifespan did not run)")
    return services


Services = Annotated[ServerServices, Depends(get_services)]


class AuthError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _check_secret(expected: str | None, given: str | None, what: str, setting: str) -> None:
    if not expected:
        raise AuthError(503, f"{what} is disabled: set {setting} to enable it")
    if not given:
        raise AuthError(401, f"{what}: credentials missing")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AuthError(403, f"{what}: wrong credentials")


async def require_api_token(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """SIGNOFF_API_TOKEN (all scopes) or an API key with the route's scope (signoff.server.orchestration)."""
    from signoff.server.orchestration import authorise_api

    await authorise_api(request, authorization)


def require_webhook_secret(
    request: Request,
    x_signoff_webhook_secret: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query()] = None,
) -> None:
    settings: Settings = request.app.state.settings
    expected = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    _check_secret(expected, x_signoff_webhook_secret or token, "the Odoo webhook", "SIGNOFF_WEBHOOK_SECRET")


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The Signoff server. ``runtime``: reuse an open runtime instead of opening one from settings."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stack = ExitStack()
        if runtime is not None:
            rt = runtime
        else:
            rt = await run_in_threadpool(stack.enter_context, open_runtime(settings, odoo_at_first_use=True))
        from signoff.server.slack import build_slack  # Slack is optional; import only when the app starts

        slack = build_slack(rt.settings, rt)
        services = ServerServices(rt, slack=slack.channel if slack else None, workers=settings.server_workers)
        if slack:
            slack.attach(services)
        app.state.services, app.state.slack, app.state.runtime = services, slack, rt
        from signoff.server.orchestration import Orchestration  # API keys, /runs, events out

        app.state.orchestration = orchestration = Orchestration(services, settings)
        orchestration.start()
        sweeper = asyncio.create_task(_sweep_forever(services, settings.sweep_seconds))
        try:
            yield
        finally:
            await run_in_threadpool(orchestration.close)
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await run_in_threadpool(services.close)
            await run_in_threadpool(stack.close)

    app = FastAPI(title="Signoff", version="0.1.0", lifespan=lifespan,
                  description="Agents propose, humans approve, the executor writes once; all audited.")
    app.state.settings = settings

    app.add_middleware(BodyLimit, max_body=MAX_BODY, max_query=MAX_QUERY)  # counts streamed bytes too

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's and FastAPI's own errors (unknown path, wrong method, unparsable body, too large) in
        # the same {"error", "detail"} shape as ours.
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Every error answer has "error" (a code) and "detail"; here "detail" stays FastAPI's list (the
        # schema's HTTPValidationError), and "message" says it in one line.
        problems = [_trimmed(e) for e in jsonable_encoder(exc.errors())]
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in problems[:5]
        )
        return JSONResponse({"error": "invalid_request", "detail": problems, "message": message}, status_code=422)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return _error(exc.status, "unauthorised" if exc.status in (401, 403) else "disabled", exc.detail)

    @app.exception_handler(AlreadyDecided)
    async def _already(request: Request, exc: AlreadyDecided) -> JSONResponse:
        return _error(409, "already_decided", str(exc), proposal=exc.proposal_id, state=exc.state,
                      decided_by=exc.by, decided_at=exc.at)

    @app.exception_handler(NotAuthorised)
    async def _not_authorised(request: Request, exc: NotAuthorised) -> JSONResponse:
        return _error(403, "not_authorised", str(exc))

    @app.exception_handler(InvalidDecision)
    async def _invalid(request: Request, exc: InvalidDecision) -> JSONResponse:
        return _error(422, "invalid_decision", str(exc))

    @app.exception_handler(ProposalNotFound)
    async def _not_found(request: Request, exc: ProposalNotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(SignoffError)
    async def _signoff_error(request: Request, exc: SignoffError) -> JSONResponse:
        return _error(502 if "Odoo" in type(exc).__name__ else 500, type(exc).__name__, str(exc))

    # -- health --------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(svc: Services) -> JSONResponse:
        """Readiness: Odoo reachable and the state database writable."""
        checks = await run_in_threadpool(svc.readiness)
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics(svc: Services) -> Response:
        """Prometheus text: runs, proposals by state, decision latency, executor failures."""
        counts = await run_in_threadpool(svc.proposals_by_state)
        return PlainTextResponse(svc.metrics.render(counts), media_type="text/plain; version=0.0.4")

    # -- Odoo webhook --------------------------------------------------------------------------------

    @app.post("/webhooks/odoo", status_code=202, tags=["odoo"],
              dependencies=[Depends(require_webhook_secret)])
    async def odoo_webhook(request: Request, svc: Services) -> JSONResponse:
        """An Odoo automation rule's webhook for ``helpdesk.ticket``: triage the ticket once, in the background.

        Authenticated by ``SIGNOFF_WEBHOOK_SECRET`` in header ``X-Signoff-Webhook-Secret`` or ``?token=``.
        202 ``accepted`` (the run starts), 200 ``duplicate`` (this ticket already has a run), 422 malformed.
        """
        raw = await request.body()
        try:
            data = parse_json(raw)
            event = OdooEvent.model_validate(data)
            if event.model != "helpdesk.ticket":
                raise ValueError(f"unsupported model {event.model!r}: only helpdesk.ticket is triaged")
        except (ValueError, ValidationError) as exc:
            detail = str(exc) if not isinstance(exc, ValidationError) else "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
            await run_in_threadpool(svc.rt.audit.append, "webhook.rejected", "webhook:odoo", "system:webhook",
                                    {"error": detail[:500], "bytes": len(raw)})
            svc.metrics.webhooks.inc("malformed")
            return _error(422, "malformed_payload", f"not an Odoo webhook payload for helpdesk.ticket: {detail}")
        status, thread = await run_in_threadpool(svc.accept_ticket, event.id, source="webhook")
        await run_in_threadpool(svc.rt.audit.append, "webhook.received", thread, "system:webhook",
                                {"model": event.model, "id": event.id, "action": event.action, "result": status},
                                thread_id=thread)
        svc.metrics.webhooks.inc(status)
        return JSONResponse({"status": status, "thread_id": thread}, status_code=202 if status == "accepted" else 200)

    # -- approvals REST API --------------------------------------------------------------------------

    api = [Depends(require_api_token)]

    @app.get("/api/proposals", dependencies=api, tags=["approvals"])
    async def list_proposals(svc: Services, state: StateFilter = "pending",
                             thread: str | None = None) -> dict[str, Any]:
        """Proposals, oldest first: ``state`` is a state name or ``all`` (anything else: 422); ``thread``
        filters by run."""
        rows = await run_in_threadpool(svc.rt.store.find, states=None if state == "all" else (state,),
                                       thread_id=thread)
        return {"proposals": [p.model_dump(mode="json") for p in rows]}

    @app.get("/api/proposals/{proposal_id}", dependencies=api, tags=["approvals"])
    async def get_proposal(proposal_id: str, svc: Services) -> dict[str, Any]:
        """One proposal (id or unique prefix) and its audit trail."""
        p = await run_in_threadpool(svc.get, proposal_id)
        trail = await run_in_threadpool(svc.rt.audit.trail, p.id)
        return {"proposal": p.model_dump(mode="json"), "audit": [e.model_dump(mode="json") for e in trail]}

    from signoff.server.orchestration import INVALID

    @app.post("/api/proposals/{proposal_id}/decision", dependencies=api, tags=["approvals"], responses=INVALID)
    async def decide(proposal_id: str, body: DecisionIn, svc: Services,
                     x_signoff_actor: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        """Approve, edit (``args``) or reject (``reason``) as ``actor``; the run resumes when it was the last.

        403 not in the approver group, 409 already decided (who and when), 422 invalid, 404 unknown.
        """
        if body.actor and x_signoff_actor and body.actor != x_signoff_actor:
            raise InvalidDecision(f"two different actors: body 'actor' {body.actor!r} and header X-Signoff-Actor "
                                  f"{x_signoff_actor!r}; send one")
        actor = body.actor or x_signoff_actor
        if not actor:
            raise InvalidDecision("say who decides: body field 'actor' or header X-Signoff-Actor")
        p = await run_in_threadpool(svc.get, proposal_id)
        decision = Decision(proposal_id=p.id, verdict=body.verdict, actor=actor, reason=body.reason,
                            args=body.args, channel="api")
        done, run = await run_in_threadpool(svc.decide, decision)
        return {"proposal": done.model_dump(mode="json"),
                "run": {"thread_id": run.thread_id, "status": run.status} if run else None}

    @app.post("/api/triage", dependencies=api, status_code=202, tags=["runs"])
    async def triage(body: TriageIn, svc: Services) -> JSONResponse:
        """Triage one ticket in the background (as the webhook does); ``duplicate`` when it has a run."""
        status, thread = await run_in_threadpool(svc.accept_ticket, body.ticket_id, source="api")
        return JSONResponse({"status": status, "thread_id": thread}, status_code=202 if status == "accepted" else 200)

    @app.get("/api/runs/{thread_id}", dependencies=api, tags=["runs"])
    async def run_status(thread_id: str, svc: Services) -> dict[str, Any]:
        """A run's status (``none``, ``running``, ``paused``, ``done``, ``stopped``, ``failed`` before its first
        step), triage and proposals."""
        return await run_in_threadpool(svc.run_status, thread_id)

    @app.post("/api/sweep", dependencies=api, tags=["ops"])
    async def sweep(svc: Services) -> dict[str, int]:
        """Run the sweep now: expire, remind, post what was never posted, resume decided runs.

        On Postgres one worker sweeps at a time: ``skipped: 1`` when another worker's sweep was running."""
        return await run_in_threadpool(svc.sweep)

    from signoff.server.orchestration import install as install_orchestration

    install_orchestration(app)  # /runs, /subscriptions, /events, /webhooks/in/{source}

    from signoff.server.inbox import router as inbox_router  # the web inbox: /inbox

    app.include_router(inbox_router)

    # -- Slack ---------------------------------------------------------------------------------------

    @app.post("/slack/events", tags=["slack"])
    async def slack_events(request: Request) -> Response:
        """Slack Events API and Interactivity (one URL); every request is signature-checked by Bolt."""
        slack = getattr(request.app.state, "slack", None)
        if slack is None:
            return _error(503, "disabled", "Slack is not configured: set SIGNOFF_SLACK_BOT_TOKEN and "
                                           "SIGNOFF_SLACK_SIGNING_SECRET")
        return await slack.handle(request)

    return app


async def _sweep_forever(services: ServerServices, every: float) -> None:
    if every <= 0:
        return
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(services.sweep)
        except Exception:
            log.exception("sweep failed")
