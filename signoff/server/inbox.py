"""The web inbox: approvers and operators see and decide everything in a browser, at ``/inbox``.

Server-rendered (Jinja2 templates in ``signoff/server/templates``, one plain CSS file, no JavaScript,
no external assets). Pages:

* ``/inbox/pending``: what the signed-in user's approver groups may decide, most urgent first, paged,
  filtered by agent, action, group and age;
* ``/inbox/p/{id}``: one proposal: the diff against the current Odoo values (read live through the
  server's read-only reader), why (rationale, confidence, evidence), the policy that routed it, and
  Approve / Edit (validated and shown before it is confirmed) / Reject (reason required); decided
  elsewhere: who, where and when, no buttons;
* ``/inbox/exceptions``: failed executions, retry or cancel (authorised like the CLI, audited);
* ``/inbox/audit``: the trail of a ticket, account, contract or proposal, the hash chain verified;
* ``/inbox/quality``: the latest eval HTML reports and, per action, approval rate, median time to
  decision and edit rate from the store.

Who: a local user store or a trusted reverse-proxy header (:mod:`signoff.server.inbox_auth`); every
decision goes through ``ServerServices.decide``, so ``Approvals`` checks the approver group and
separation of duties as on every other channel. Every form carries the session's CSRF token.
The inbox answers 503 until ``SIGNOFF_INBOX_SECRET`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from signoff.config import Settings
from signoff.domain import Decision, Proposal, utcnow
from signoff.errors import (
    AlreadyDecided,
    AuditIntegrityError,
    InvalidDecision,
    NotAuthorised,
    ProposalNotFound,
    SignoffError,
)
from signoff.guardrails.actions import Action, get_action
from signoff.guardrails.policy import parse_duration
from signoff.server.inbox_auth import InboxUser, Signer, UserStore
from signoff.server.inbox_data import AGENTS, SORTS, InboxData, PendingQuery, human_duration, latest_reports
from signoff.server.services import ServerServices

TEMPLATES = Path(__file__).with_name("templates")
SESSION_COOKIE = "signoff_inbox"
LOGIN_COOKIE = "signoff_inbox_login"
AGES = ("", "15m", "1h", "4h", "1d", "3d", "7d")
_REPORT_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.html$")
_CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'")

router = APIRouter(prefix="/inbox", include_in_schema=False)

_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters["duration"] = human_duration
_env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False, default=str)
_env.filters["short"] = lambda s: str(s)[:14]


def _show(value: Any) -> str:
    return "(empty)" if value in (None, False, "") else str(value)


_env.filters["show"] = _show


def _when(dt: datetime | None) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC") if dt else ""


_env.filters["when"] = _when


# --- who is asking ----------------------------------------------------------------------------------


@dataclass
class Ctx:
    request: Request
    settings: Settings
    svc: ServerServices
    signer: Signer
    users: UserStore
    data: InboxData
    user: InboxUser | None = None
    csrf: str = ""

    @property
    def groups(self) -> list[str]:
        if self.user is None:
            return []
        return [g for g in self.svc.rt.policy.groups if self.svc.rt.policy.may_decide(self.user.identity, g)]

    def may_see(self, p: Proposal) -> bool:
        return self.user is not None and self.svc.rt.policy.may_decide(self.user.identity, p.approver_group)


def _state(request: Request) -> tuple[Signer, UserStore, InboxData] | None:
    app_state = request.app.state
    cached = getattr(app_state, "inbox", None)
    if cached is None:
        settings: Settings = app_state.settings
        if settings.inbox_secret is None:
            return None
        svc: ServerServices = app_state.services
        db = svc.rt.statedb
        cached = (Signer(settings.inbox_secret.get_secret_value()), UserStore(db), InboxData(db))
        app_state.inbox = cached
    return cached


def _context(request: Request) -> Ctx | Response:
    """The request's context, with the signed-in user if any; a 503 page when the inbox is disabled."""
    state = _state(request)
    settings: Settings = request.app.state.settings
    if state is None or getattr(request.app.state, "services", None) is None:
        return _plain(503, "The web inbox is disabled: set SIGNOFF_INBOX_SECRET (16+ characters) to enable it.")
    signer, users, data = state
    ctx = Ctx(request, settings, request.app.state.services, signer, users, data)
    header = settings.inbox_trusted_header
    if header and (name := request.headers.get(header, "").strip()):
        ctx.user = users.get(name) or InboxUser(name, f"inbox:{name}")
        ctx.user = InboxUser(ctx.user.name, ctx.user.identity, via="header")
        ctx.csrf = signer.token("csrf", name)
        return ctx
    session = signer.read(request.cookies.get(SESSION_COOKIE))
    if session is not None and (user := users.get(session.user)) is not None:
        ctx.user, ctx.csrf = user, session.csrf
    return ctx


def _signed_in(request: Request) -> Ctx | Response:
    ctx = _context(request)
    if isinstance(ctx, Ctx) and ctx.user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/inbox/login?" + urlencode({"next": target}), status_code=303)
    return ctx


async def _form(request: Request) -> dict[str, str] | None:
    """A urlencoded form body, first value of each field (None: not a form)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


async def _posted(request: Request) -> tuple[Ctx, dict[str, str]] | Response:
    """A signed-in user's form POST with a valid CSRF token, or the response refusing it."""
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    form = await _form(request) or {}  # not a form: no CSRF token either
    given = form.get("csrf", "")
    if not given or not hmac.compare_digest(given.encode(), ctx.csrf.encode()):
        return _page(ctx, "error.html", 403, title="Refused",
                     message="The form's security token (CSRF) is missing or stale: reload the page and try again.")
    return ctx, form


# --- rendering ---------------------------------------------------------------------------------------


def _headers(response: Response, csp: str = _CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _plain(status: int, message: str) -> Response:
    body = _env.get_template("error.html").render(user=None, csrf="", title="Web inbox", message=message, nav="")
    return _headers(HTMLResponse(body, status_code=status))


def _page(ctx: Ctx, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    body = _env.get_template(template).render(user=ctx.user, csrf=ctx.csrf, groups=ctx.groups, now=utcnow(),
                                              **values)
    return _headers(HTMLResponse(body, status_code=status))  # type: ignore[return-value]


#: Signs the status messages the inbox puts in its own redirects, so a crafted link cannot show text as ours.
_FLASH_KEY = secrets.token_bytes(32)


def _flash_sig(flash: str, error: str) -> str:
    return hmac.new(_FLASH_KEY, f"{flash}\x00{error}".encode(), hashlib.sha256).hexdigest()[:32]


def _back(url: str, **flash: str) -> RedirectResponse:
    sep = "&" if "?" in url else "?"
    if flash:
        flash["fs"] = _flash_sig(flash.get("flash", ""), flash.get("error", ""))
    return RedirectResponse(url + (sep + urlencode(flash) if flash else ""), status_code=303)


def _messages(request: Request) -> tuple[str | None, str | None]:
    """The (flash, error) of one of our own redirects; anything unsigned is ignored."""
    q = request.query_params
    flash, error = q.get("flash"), q.get("error")
    if not (flash or error) or not hmac.compare_digest(q.get("fs", ""), _flash_sig(flash or "", error or "")):
        return None, None
    return flash, error


# --- sign-in -----------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/inbox/") and "//" not in target and "\\" not in target \
        else "/inbox/pending"


@router.get("")
async def inbox_root() -> Response:
    return RedirectResponse("/inbox/pending", status_code=303)


@router.get("/static/inbox.css")
async def inbox_css() -> Response:
    return FileResponse(TEMPLATES / "inbox.css", media_type="text/css", headers={"Cache-Control": "max-age=300"})


def _login_page(ctx: Ctx, next_: str, status: int = 200, error: str | None = None) -> Response:
    nonce = secrets.token_urlsafe(16)
    ctx.csrf = ctx.signer.token("login", nonce)
    response = _page(ctx, "login.html", status, next=_safe_next(next_), error=error, nav="login")
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", path="/inbox",
                        secure=ctx.settings.inbox_secure_cookie, max_age=3600)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/inbox/pending") -> Response:
    ctx = _context(request)
    if not isinstance(ctx, Ctx):
        return ctx
    if ctx.user is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(ctx, next)


@router.post("/login")
async def login(request: Request) -> Response:
    ctx = _context(request)
    if not isinstance(ctx, Ctx):
        return ctx
    form = await _form(request) or {}
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    given = form.get("csrf", "")
    if not nonce or not given or not hmac.compare_digest(given, ctx.signer.token("login", nonce)):
        return _login_page(ctx, form.get("next", ""), 403, "The sign-in form expired (CSRF check): try again.")
    name, password = form.get("username", "").strip(), form.get("password", "")
    user = await run_in_threadpool(ctx.users.verify, name, password) if name and password else None
    if user is None:
        await run_in_threadpool(ctx.svc.rt.audit.append, "inbox.sign_in_failed", f"inbox:{name[:64]}",
                                "system:inbox", {"client": request.client.host if request.client else None})
        return _login_page(ctx, form.get("next", ""), 401, "Wrong user name or password.")
    cookie, _ = ctx.signer.issue(user.name, ctx.settings.inbox_session_hours * 3600)
    await run_in_threadpool(ctx.svc.rt.audit.append, "inbox.signed_in", f"inbox:{user.name}", user.identity, {})
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, httponly=True, samesite="lax", path="/inbox",
                        secure=ctx.settings.inbox_secure_cookie,
                        max_age=int(ctx.settings.inbox_session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/inbox")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    response = RedirectResponse("/inbox/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/inbox")
    return response


# --- pending -----------------------------------------------------------------------------------------


@router.get("/pending")
async def pending(request: Request, agent: str = "", action: str = "", group: str = "", age: str = "",
                  sort: str = "urgent", page: int = 1) -> Response:
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    assert ctx.user is not None
    try:
        older = parse_duration(age) if age else None
    except SignoffError:
        older, age = None, ""
    q = PendingQuery(groups=ctx.groups, exclude_requester=ctx.user.identity, agent=agent or None,
                     action=action or None, group=group or None, older_than=older,
                     sort=sort if sort in SORTS else "urgent", page=page)
    result = await run_in_threadpool(ctx.data.pending, q)
    filters = {"agent": agent, "action": action, "group": group, "age": age, "sort": q.sort}
    keep = {k: v for k, v in filters.items() if v}
    return _page(ctx, "pending.html", nav="pending", page=result, filters=filters, agents=AGENTS,
                 actions=sorted(ctx.svc.rt.policy.actions), ages=AGES, sorts=list(SORTS),
                 prev_url="?" + urlencode({**keep, "page": result.page - 1}),
                 next_url="?" + urlencode({**keep, "page": result.page + 1}),
                 flash=_messages(request)[0])


# --- one proposal ------------------------------------------------------------------------------------


async def _posted_proposal(request: Request, proposal_id: str) -> tuple[Ctx, dict[str, str], Proposal] | Response:
    """A CSRF-checked form POST about one proposal the user may see, or the response refusing it."""
    posted = await _posted(request)
    if isinstance(posted, Response):
        return posted
    ctx, form = posted
    p = await run_in_threadpool(_load, ctx, proposal_id)
    return p if isinstance(p, Response) else (ctx, form, p)


def _load(ctx: Ctx, proposal_id: str) -> Proposal | Response:
    try:
        p = ctx.svc.get(proposal_id)
    except ProposalNotFound:
        return _page(ctx, "error.html", 404, title="Not found", message=f"No proposal {proposal_id!r}.")
    if not ctx.may_see(p):
        assert ctx.user is not None
        return _page(ctx, "error.html", 403, title="Not yours to decide",
                     message=f"{ctx.user.identity} is not in approver group {p.approver_group!r}.")
    return p


def _diff(ctx: Ctx, p: Proposal, args: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Rows (field, value when proposed, value in Odoo now, new value) and an error reading Odoo, if any."""
    args = p.effective_args if args is None else args
    reader = ctx.svc.rt.reader
    try:
        action = get_action(p.action)
    except SignoffError as exc:
        return [], str(exc)
    if isinstance(action, Action):
        live, error = None, None
        try:
            live = action.current(reader, p.target_id)
        except SignoffError as exc:
            error = f"could not read {p.target_model}({p.target_id}) from Odoo: {exc}"
        return [{"field": action.arg, "odoo_field": f"{p.target_model}.{action.field}",
                 "then": p.current.get(action.arg), "live": live, "live_read": error is None,
                 "new": args.get(action.arg), "changed_since": error is None and live != p.current.get(action.arg)}
                ], error
    error = None
    try:
        reader.read(p.target_model, [p.target_id], ["id"])
    except SignoffError as exc:
        error = f"could not read {p.target_model}({p.target_id}) from Odoo: {exc}"
    return [{"field": k, "odoo_field": "new mail.activity", "then": None, "live": None, "live_read": False,
             "new": v, "changed_since": False} for k, v in args.items()], error


def _title(ctx: Ctx, p: Proposal) -> str | None:
    """The target record's name in Odoo (a ticket's number and subject), read live; None if unreadable."""
    try:
        rows = ctx.svc.rt.reader.read(p.target_model, [p.target_id], ["display_name"])
    except SignoffError:
        return None
    return str(rows[0]["display_name"]) if rows and rows[0].get("display_name") else None


def _decided(ctx: Ctx, p: Proposal) -> dict[str, Any] | None:
    """Who decided, where (channel) and when, from the audit trail."""
    if p.state == "pending":
        return None
    channel = None
    for e in ctx.svc.rt.audit.trail(p.id):
        if e.kind in ("proposal.approved", "proposal.rejected", "proposal.edited") and e.actor == p.decided_by:
            channel = e.data.get("channel") or channel
        elif e.kind == "proposal.expired":
            channel = "expiry sweep"
    return {"by": p.decided_by, "at": p.decided_at, "channel": channel or "unknown", "reason": p.decision_reason}


def _edit_fields(p: Proposal) -> list[dict[str, Any]]:
    action = get_action(p.action)
    names = list(p.effective_args)
    for key in (*getattr(action, "required", ()), *getattr(action, "optional", ())):
        if key not in names:
            names.append(key)
    editable = getattr(action, "editable", None)  # the rest keep their proposed values (Approvals.check_edit)
    if editable is not None:
        names = [k for k in names if k in editable]
    return [{"name": k, "value": "" if p.effective_args.get(k) is None else p.effective_args.get(k),
             "choices": action.choices if isinstance(action, Action) else None,
             "long": k in ("details", "reason") and not isinstance(action, Action)} for k in names]


async def _view(ctx: Ctx, p: Proposal, status: int = 200, **extra: Any) -> Response:
    rt = ctx.svc.rt
    diff, odoo_error = await run_in_threadpool(_diff, ctx, p)
    decided = await run_in_threadpool(_decided, ctx, p)
    try:
        rule = rt.policy.action(p.action)
    except SignoffError:
        rule = None
    assert ctx.user is not None
    own = rt.policy.separation_of_duties and ctx.user.identity == p.requested_by
    return _page(ctx, "proposal.html", status, nav="pending", p=p, diff=diff, odoo_error=odoo_error,
                 decided=decided, rule=rule, policy_label=rt.policy.label, own=own,
                 may_edit=bool(rule and rule.edits) and p.state == "pending" and not own,
                 fields=_edit_fields(p) if p.state == "pending" else [],
                 flash=_messages(ctx.request)[0], title=_title(ctx, p), **extra)


@router.get("/p/{proposal_id}")
async def proposal(request: Request, proposal_id: str) -> Response:
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    p = await run_in_threadpool(_load, ctx, proposal_id)
    return p if isinstance(p, Response) else await _view(ctx, p)


async def _decide(ctx: Ctx, p: Proposal, verdict: str, *, reason: str | None = None,
                  args: dict[str, Any] | None = None) -> Response:
    assert ctx.user is not None
    decision = Decision(proposal_id=p.id, verdict=verdict, actor=ctx.user.identity,  # type: ignore[arg-type]
                        reason=reason, args=args, channel="inbox")
    try:
        done, _run = await run_in_threadpool(ctx.svc.decide, decision)
    except AlreadyDecided as exc:
        fresh = await run_in_threadpool(ctx.svc.get, p.id)
        return await _view(ctx, fresh, 409, error=f"Already decided: {exc}. Nothing changed.")
    except NotAuthorised as exc:
        return await _view(ctx, p, 403, error=f"Not authorised: {exc}.")
    except InvalidDecision as exc:
        return await _view(ctx, p, 422, error=f"Invalid: {exc}.")
    return _back(f"/inbox/p/{done.id}", flash=f"{verdict}: the proposal is now {done.state}")


@router.post("/p/{proposal_id}/approve")
async def approve(request: Request, proposal_id: str) -> Response:
    loaded = await _posted_proposal(request, proposal_id)
    return loaded if isinstance(loaded, Response) else await _decide(loaded[0], loaded[2], "approve")


@router.post("/p/{proposal_id}/reject")
async def reject(request: Request, proposal_id: str) -> Response:
    loaded = await _posted_proposal(request, proposal_id)
    if isinstance(loaded, Response):
        return loaded
    ctx, form, p = loaded
    reason = form.get("reason", "").strip()
    if not reason:
        return await _view(ctx, p, 422, error="A reason is required to reject.")
    return await _decide(ctx, p, "reject", reason=reason[:2000])


def _edited_args(form: dict[str, str]) -> dict[str, Any]:
    return {k[4:]: v.strip() for k, v in form.items() if k.startswith("arg.")}


def _check_edit(ctx: Ctx, p: Proposal, raw: dict[str, Any]) -> dict[str, Any]:
    """The same checks ``Approvals.decide`` makes on an edit, without deciding: normalised args."""
    action = get_action(p.action)
    optional = set(getattr(action, "optional", ()))
    raw = {k: v for k, v in raw.items() if v != "" or k in p.args or k not in optional}
    return ctx.svc.rt.approvals.check_edit(p, raw, reader=ctx.svc.rt.reader)


@router.post("/p/{proposal_id}/edit")
async def edit_preview(request: Request, proposal_id: str) -> Response:
    """Step 1 of an edit: validate the new values and show the resulting diff; nothing is decided yet."""
    loaded = await _posted_proposal(request, proposal_id)
    if isinstance(loaded, Response):
        return loaded
    ctx, form, p = loaded
    if p.state != "pending":
        return await _view(ctx, p, 409, error="Already decided: nothing to edit.")
    try:
        args = await run_in_threadpool(_check_edit, ctx, p, _edited_args(form))
    except SignoffError as exc:
        return await _view(ctx, p, 422, error=f"The edit does not pass the guardrails: {exc}")
    diff, odoo_error = await run_in_threadpool(_diff, ctx, p, args)
    return _page(ctx, "edit_preview.html", nav="pending", p=p, args=args, args_json=json.dumps(args),
                 diff=diff, odoo_error=odoo_error, reason=form.get("reason", ""))


@router.post("/p/{proposal_id}/edit/confirm")
async def edit_confirm(request: Request, proposal_id: str) -> Response:
    """Step 2: decide the edit as shown (``Approvals.decide`` validates it once more)."""
    loaded = await _posted_proposal(request, proposal_id)
    if isinstance(loaded, Response):
        return loaded
    ctx, form, p = loaded
    try:
        args = json.loads(form.get("args", ""))
        if not isinstance(args, dict):
            raise ValueError
    except ValueError:
        return await _view(ctx, p, 422, error="Invalid: the edit's values are missing; edit again.")
    return await _decide(ctx, p, "edit", args=args, reason=form.get("reason", "").strip()[:2000] or None)


# --- exceptions --------------------------------------------------------------------------------------


@router.get("/exceptions")
async def exceptions(request: Request, page: int = 1) -> Response:
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    q = PendingQuery(groups=ctx.groups, states=("failed",), sort="newest", page=page)
    result = await run_in_threadpool(ctx.data.pending, q)
    flash, error = _messages(request)
    return _page(ctx, "exceptions.html", nav="exceptions", page=result, flash=flash, error=error,
                 prev_url=f"?page={result.page - 1}", next_url=f"?page={result.page + 1}")


def _retry(ctx: Ctx, p: Proposal) -> Proposal:
    assert ctx.user is not None
    rt = ctx.svc.rt
    rt.approvals.authorise(p, ctx.user.identity, verb="retry", channel="inbox")
    with ctx.svc.lock(p.thread_id):
        done = rt.executor.retry(p.id, ctx.user.identity)
    ctx.svc.refresh(done)
    return done


def _cancel(ctx: Ctx, p: Proposal, reason: str) -> Proposal:
    assert ctx.user is not None
    rt = ctx.svc.rt
    rt.approvals.authorise(p, ctx.user.identity, verb="cancel", channel="inbox")
    done = rt.executor.cancel(p.id, ctx.user.identity, reason)
    ctx.svc.refresh(done)
    return done


@router.post("/p/{proposal_id}/retry")
async def retry(request: Request, proposal_id: str) -> Response:
    loaded = await _posted_proposal(request, proposal_id)
    if isinstance(loaded, Response):
        return loaded
    ctx, _form_, p = loaded
    try:
        done = await run_in_threadpool(_retry, ctx, p)
    except SignoffError as exc:
        return _back("/inbox/exceptions", error=f"retry of {p.id}: {exc}")
    return _back("/inbox/exceptions", flash=f"retried {p.id}: {done.state}" + (f" ({done.error})" if done.error
                                                                                else ""))


@router.post("/p/{proposal_id}/cancel")
async def cancel(request: Request, proposal_id: str) -> Response:
    loaded = await _posted_proposal(request, proposal_id)
    if isinstance(loaded, Response):
        return loaded
    ctx, form, p = loaded
    reason = form.get("reason", "").strip()
    if not reason:
        return _back("/inbox/exceptions", error=f"cancel of {p.id}: a reason is required")
    try:
        done = await run_in_threadpool(_cancel, ctx, p, reason[:2000])
    except SignoffError as exc:
        return _back("/inbox/exceptions", error=f"cancel of {p.id}: {exc}")
    return _back("/inbox/exceptions", flash=f"cancelled {done.id}: it will never be written")


# --- audit -------------------------------------------------------------------------------------------


def _audit(ctx: Ctx, subject: str) -> dict[str, Any]:
    rt = ctx.svc.rt
    if subject.isdigit():
        subject = f"ticket:{ctx.settings.odoo_db}:{subject}"
    elif subject.startswith("p_"):
        try:
            subject = ctx.svc.get(subject).id
        except ProposalNotFound:
            pass
    chain: dict[str, Any]
    try:
        chain = {"ok": True, "events": rt.audit.verify()}
    except AuditIntegrityError as exc:
        chain = {"ok": False, "error": str(exc)}
    events = rt.audit.trail(subject) if subject else []
    return {"subject": subject, "events": events, "chain": chain}


@router.get("/audit")
async def audit(request: Request, subject: str = "") -> Response:
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    if not ctx.groups:
        return _page(ctx, "error.html", 403, title="Not an approver",
                     message="Your identity is in none of the policy's approver groups.")
    found = await run_in_threadpool(_audit, ctx, subject.strip()[:200])
    return _page(ctx, "audit.html", nav="audit", **found)


# --- quality -----------------------------------------------------------------------------------------


@router.get("/quality")
async def quality(request: Request) -> Response:
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    if not ctx.groups:
        return _page(ctx, "error.html", 403, title="Not an approver",
                     message="Your identity is in none of the policy's approver groups.")
    rows = await run_in_threadpool(ctx.data.quality)
    reports = await run_in_threadpool(latest_reports, ctx.settings.inbox_reports_dir)
    return _page(ctx, "quality.html", nav="quality", rows=rows, reports=reports,
                 reports_dir=str(ctx.settings.inbox_reports_dir))


@router.get("/quality/reports/{name}")
async def quality_report(request: Request, name: str) -> Response:
    """One eval HTML report as the eval runner wrote it (self-contained: inline CSS and SVG)."""
    ctx = _signed_in(request)
    if not isinstance(ctx, Ctx):
        return ctx
    path = ctx.settings.inbox_reports_dir / name
    if not ctx.groups or not _REPORT_NAME.match(name) or not path.is_file():
        return _page(ctx, "error.html", 404, title="Not found", message=f"No report {name!r}.")
    return _headers(FileResponse(path, media_type="text/html"),
                    csp="default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'")
