"""Slack (Bolt) inside the FastAPI app: approval buttons, reject/edit modals, and a small chat.

Every request's signature is checked before its body is parsed (forged or stale: 401, nothing runs), and
Bolt checks it again. A signed request Bolt or a listener cannot read (not an object, no ``user``, no
``actions``) is a 400 with one log line, never a 500.
Listeners ``ack()`` first; the decision, the resume and the write happen after the ack in Bolt's
listener threads, so Slack always gets its answer well inside 3 seconds. A global middleware drops
Events API retries and repeated clicks (keys remembered in the state database for an hour); the
store's compare-and-set makes a second decision a no-op and tells the clicker who decided first.

Identity: a Slack user is ``slack:<user id>``, the form the policy's groups list.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from slack_bolt import App, BoltResponse
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool

from signoff.agents.services import Runtime
from signoff.config import Settings
from signoff.domain import PRIORITY_NAMES, Decision, Verdict
from signoff.errors import AlreadyDecided, InvalidDecision, NotAuthorised, ProposalNotFound, SignoffError
from signoff.integrations.slack import SlackApprovalChannel, SlackMessages, describe, who
from signoff.server import chat
from signoff.server.services import ServerServices

log = logging.getLogger(__name__)

HELP = ("I triage support tickets, score renewal risk and read contracts. Try:\n"
        "• `triage 4312`: classify, route and prioritise ticket 4312 and post the proposals for approval\n"
        "• `why did you route 4312 to Billing?`: what I concluded about ticket 4312, and why\n"
        "• `which accounts are at risk this month?`: the accounts most likely to churn, band and top driver\n"
        "• `risk 7`: run the renewal agent on customer 7 (follow-up / retention offer for approval)\n"
        "• `summarise Acme's contract` or `summarise contract 12`: key terms, what needs review\n"
        "• `review contract 12`: run the contracts agent (renewal reminder / legal review for approval)\n"
        "Nothing is written to Odoo until an approver clicks Approve.")
_TRIAGE = re.compile(r"\btriage\b\D*?(-?\d+)", re.I)
_WHY = re.compile(r"\b(why|explain|reason)\b.*?(-?\d+)", re.I | re.S)


def build_slack(settings: Settings, rt: Runtime) -> SlackBridge | None:
    """The Slack bridge when a bot token and a signing secret are configured, else None."""
    if not (settings.slack_bot_token and settings.slack_signing_secret):
        return None
    base = settings.slack_api_base_url if settings.slack_api_base_url.endswith("/") else \
        settings.slack_api_base_url + "/"
    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=base)
    channel = SlackApprovalChannel(client, SlackMessages(rt.statedb), settings.slack_approvals_channel)
    return SlackBridge(settings.slack_signing_secret.get_secret_value(), channel)


#: Slack's own payloads stay far below this; anything bigger is refused before it is parsed.
MAX_SLACK_BODY = 1_000_000
#: What a signed but unreadable payload raises in Bolt's parsing, its matchers or a listener.
MALFORMED = (ValueError, AttributeError, TypeError, KeyError, IndexError)


def _json(status: int, error: str) -> Response:
    return Response(json.dumps({"error": error}), status_code=status, media_type="application/json")


class SlackBridge:
    def __init__(self, signing_secret: str, channel: SlackApprovalChannel) -> None:
        self.channel = channel
        self.app = App(client=channel.client, signing_secret=signing_secret, token_verification_enabled=False,
                       listener_executor=ThreadPoolExecutor(max_workers=8, thread_name_prefix="slack-listener"))
        self.verifier = SignatureVerifier(signing_secret)
        self.app.error(self._on_error)
        self._svc: ServerServices | None = None
        #: The clause model for contract intents (None: the trained one in the models dir); tests inject one.
        self.contract_model: Any = None

    @property
    def svc(self) -> ServerServices:
        assert self._svc is not None, "attach() the services first"
        return self._svc

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_SLACK_BODY:
            return Response("payload too large", status_code=413)
        timestamp = request.headers.get("x-slack-request-timestamp", "")
        if not timestamp.isdigit() or not self.verifier.is_valid_request(body, dict(request.headers)):
            self._count("rejected")  # not a Slack request: refused before anything reads the body
            return _json(401, "invalid request")
        try:
            # Bolt's dispatch is synchronous until ack(): keep it off the event loop.
            bolt_response = await run_in_threadpool(self.app.dispatch, to_bolt_request(request, body))
        except MALFORMED as exc:  # signed, but not a JSON object / form data Bolt can parse
            log.warning("slack: unreadable signed request: %s: %s", type(exc).__name__, exc)
            self._count("error")
            return _json(400, "malformed body")
        self._count("rejected" if bolt_response.status == 401 else "ok" if bolt_response.status < 400 else "error")
        return to_starlette_response(bolt_response)

    def _count(self, kind: str) -> None:
        if self._svc is not None:
            self._svc.metrics.slack.inc(kind)

    @staticmethod
    def _on_error(error: Exception) -> BoltResponse:
        """Bolt's error handler: a payload its matchers or a listener cannot read is the sender's fault (400,
        one log line); anything else stays a 500 so Slack retries it."""
        if isinstance(error, MALFORMED):
            log.warning("slack: unreadable payload: %s: %s", type(error).__name__, error)
            return BoltResponse(status=400, body='{"error": "malformed payload"}',
                                headers={"content-type": "application/json"})
        log.error("slack listener failed", exc_info=error)
        return BoltResponse(status=500, body='{"error": "internal error"}',
                            headers={"content-type": "application/json"})

    def attach(self, svc: ServerServices) -> None:
        self._svc = svc
        app = self.app
        app.middleware(self._dedupe)
        app.action("approve")(self._on_approve)
        app.action("reject")(self._on_reject)
        app.action("edit")(self._on_edit)
        app.view("reject_reason")(self._on_reject_submit)
        app.view("edit_proposal")(self._on_edit_submit)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)

    # -- dedupe --------------------------------------------------------------------------------------

    def _dedupe(self, body: dict[str, Any], next: Callable[[], BoltResponse]) -> BoltResponse | None:
        key = None
        if body.get("type") == "event_callback" and body.get("event_id"):
            key = f"event:{body['event_id']}"
        elif body.get("type") == "block_actions" and body.get("actions"):
            action = body["actions"][0]
            key = f"click:{body.get('user', {}).get('id')}:{action.get('action_id')}:{action.get('action_ts')}"
        if key and not self.channel.messages.first_time(key):
            self.svc.metrics.slack.inc("duplicate")
            return BoltResponse(status=200, body="")
        return next()

    # -- buttons -------------------------------------------------------------------------------------

    @staticmethod
    def _click(body: dict[str, Any]) -> tuple[str, str, str, str]:
        """(proposal id, channel, message ts, Slack user id) of a button click."""
        container = body.get("container", {})
        return (str(body["actions"][0].get("value", "")), str(container.get("channel_id", "")),
                str(container.get("message_ts", "")), str(body["user"]["id"]))

    def _tell_problem(self, exc: SignoffError, channel: str, user: str) -> None:
        if isinstance(exc, AlreadyDecided):
            text = (f"Already {exc.state} by {who(exc.by)} at {exc.at or '?'}; nothing changed.")
        elif isinstance(exc, NotAuthorised):
            text = f":no_entry: You can't decide this proposal: {exc}. Your click was recorded in the audit trail."
        elif isinstance(exc, InvalidDecision):
            text = f":warning: Not recorded: {exc}"
        elif isinstance(exc, ProposalNotFound):
            text = ":warning: This proposal no longer exists."
        else:
            text = f":warning: Something went wrong: {exc}"
        self.channel.tell(channel, user, text)

    def decide(self, proposal_id: str, verdict: Verdict, channel: str, user: str, *, reason: str | None = None,
               args: dict[str, Any] | None = None) -> None:
        decision = Decision(proposal_id=proposal_id, verdict=verdict, actor=f"slack:{user}", reason=reason,
                            args=args, channel="slack")
        try:
            self.svc.decide(decision)
        except SignoffError as exc:
            self._tell_problem(exc, channel, user)

    def _on_approve(self, ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        pid, channel, _ts, user = self._click(body)
        self.decide(pid, "approve", channel, user)

    def _open_modal(self, body: dict[str, Any], builder: Callable[..., dict[str, Any]]) -> None:
        pid, channel, ts, user = self._click(body)
        try:
            p = self.svc.check_may_decide(pid, f"slack:{user}", channel="slack")
        except SignoffError as exc:
            self._tell_problem(exc, channel, user)
            return
        self.channel.client.views_open(trigger_id=body["trigger_id"], view=builder(p, channel, ts))

    def _on_reject(self, ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        from signoff.integrations.slack import reject_modal

        self._open_modal(body, reject_modal)

    def _on_edit(self, ack: Callable[..., None], body: dict[str, Any]) -> None:
        ack()
        from signoff.integrations.slack import edit_modal

        self._open_modal(body, edit_modal)

    # -- modals --------------------------------------------------------------------------------------

    @staticmethod
    def _value(view: dict[str, Any], block: str) -> str:
        entry: dict[str, Any] = next(iter(view.get("state", {}).get("values", {}).get(block, {}).values()), {})
        if entry.get("type") == "static_select":
            return str((entry.get("selected_option") or {}).get("value") or "")
        return str(entry.get("value") or "")

    def _on_reject_submit(self, ack: Callable[..., None], body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = self._value(view, "reason").strip()
        if not reason:
            ack(response_action="errors", errors={"reason": "Please give a reason: it goes into the audit trail."})
            return
        ack()
        meta = json.loads(view.get("private_metadata") or "{}")
        self.decide(meta["proposal"], "reject", meta.get("channel", ""), body["user"]["id"], reason=reason)

    def _on_edit_submit(self, ack: Callable[..., None], body: dict[str, Any], view: dict[str, Any]) -> None:
        meta = json.loads(view.get("private_metadata") or "{}")
        arg, value = meta.get("arg", ""), self._value(view, "value").strip()
        try:  # the checks that need no Odoo call, before the ack, so the modal can show them
            p = self.svc.rt.store.get(meta["proposal"])
            self.svc.rt.approvals.check_edit(p, {arg: value}, reader=None)  # merged over the proposal's args
        except SignoffError as exc:
            ack(response_action="errors", errors={"value": str(exc)[:150]})
            return
        ack()
        reason = self._value(view, "reason").strip() or None
        self.decide(p.id, "edit", meta.get("channel", ""), body["user"]["id"], args={arg: value}, reason=reason)

    # -- chat ----------------------------------------------------------------------------------------

    def _on_mention(self, event: dict[str, Any], say: Callable[..., Any]) -> None:
        self._chat(event, say)

    def _on_message(self, event: dict[str, Any], say: Callable[..., Any]) -> None:
        if event.get("channel_type") == "im" and not event.get("subtype") and not event.get("bot_id"):
            self._chat(event, say)

    def _chat(self, event: dict[str, Any], say: Callable[..., Any]) -> None:
        text = re.sub(r"<@[A-Z0-9]+>", "", str(event.get("text", ""))).strip()
        thread_ts = event.get("thread_ts") or event.get("ts")
        actor = f"slack:{event.get('user')}"
        try:
            if match := chat.REVIEW_CONTRACT.search(text):
                answer = chat.review_contract(self.svc, chat.record_id(match.group(1), "attachment"), actor,
                                              model=self.contract_model)
            elif match := chat.RISK_RUN.search(text):
                answer = chat.run_risk(self.svc, chat.record_id(match.group(1), "partner"), actor)
            elif chat.CONTRACT_ID.search(text) or chat.contract_customer(text):
                answer = chat.summarise_contract(self.svc, text, model=self.contract_model)
            elif chat.AT_RISK.search(text):
                answer = chat.at_risk(self.svc, text)
            elif match := _WHY.search(text):
                answer = self.explain(chat.record_id(match.group(2), "ticket"))
            elif match := _TRIAGE.search(text):
                answer = self.triage(chat.record_id(match.group(1), "ticket"), actor)
            else:
                answer = HELP
        except (SignoffError, ValueError) as exc:  # ValueError: an id no Odoo record can have
            answer = f":warning: {exc}"
        say(text=answer, thread_ts=thread_ts)

    def triage(self, ticket_id: int, actor: str) -> str:
        svc = self.svc
        thread = svc.rt.runner.thread_for(ticket_id)
        values, _paused, _stopped = svc.rt.runner.status(thread)
        if values:
            return f"Ticket {ticket_id} was triaged already.\n" + self.explain(ticket_id)
        svc.rt.audit.append("chat.triage_requested", thread, actor, {"ticket": ticket_id}, thread_id=thread)
        result = svc.triage_now(ticket_id, source="slack")
        if result is None:
            return f"I can't find ticket {ticket_id} in Odoo."
        if result.status == "failed" or result.triage is None:
            return f"Triage of ticket {ticket_id} failed: {result.error}"
        t = result.triage
        lines = [f"*Ticket {ticket_id}*: {t.category.label} ({t.category.confidence:.2f}) → team {t.team}, "
                 f"priority {PRIORITY_NAMES[t.priority]}."]
        if t.proposal_ids:
            lines.append(f"{len(t.proposal_ids)} proposal(s) wait for approval"
                         + (f" in #{self.channel.channel.lstrip('#')}." if self.channel else "."))
        lines += [f"• needs a human: {r}" for r in t.reasons]
        return "\n".join(lines)

    def explain(self, ticket_id: int) -> str:
        svc = self.svc
        thread = svc.rt.runner.thread_for(ticket_id)
        values, _paused, _stopped = svc.rt.runner.status(thread)
        triage = values.get("triage")
        if not triage:
            return f"I have not triaged ticket {ticket_id}. Say `triage {ticket_id}` to start."
        category = triage["category"]
        alternatives = ", ".join(f"{label} {p:.2f}" for label, p in category.get("alternatives", [])[:3])
        lines = [f"*Ticket {ticket_id}*: classified *{category['label']}* at {category['confidence']:.2f}"
                 + (f" (runners-up: {alternatives})" if alternatives else "") + ".",
                 f"• I proposed team *{triage['team']}*: {triage['team_reason']}",
                 f"• I proposed priority *{PRIORITY_NAMES[triage['priority']]}*: {triage['priority_reason']}"]
        for neighbour in category.get("neighbours", [])[:2]:
            lines.append(f"• similar resolved ticket ({neighbour['similarity']:.2f}, {neighbour['label']}): "
                         f"{str(neighbour['text'])[:120]}")
        lines += [f"• needs a human: {r}" for r in triage.get("reasons", [])]
        for p in svc.rt.store.find(thread_id=thread):
            by = f" by {who(p.decided_by)}" if p.decided_by else ""
            arg = next(iter(p.args))
            mine = PRIORITY_NAMES.get(p.args[arg], p.args[arg]) if arg == "priority" else p.args[arg]
            edited = (f" (a human edited it; I had proposed {mine})"
                      if p.edited_args is not None and p.edited_args.get(arg) != p.args.get(arg) else "")
            lines.append(f"• proposal {describe(p)}: *{p.state}*{by}{edited}")
        return "\n".join(lines)
