"""A Slack Web API stand-in: a real HTTP server on 127.0.0.1 that ``slack_sdk.WebClient`` talks to.

Point a client at it with ``WebClient(token=..., base_url=standin.api_url)`` (``.../api/``, with the
trailing slash). It implements, at ``/api/<method>`` (GET or POST; JSON, form or query parameters;
``Authorization: Bearer <token>`` checked on every call):

* ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral``, ``views.open``,
  ``users.info``, ``conversations.replies``;
* Block Kit limits (50 blocks per message, 100 per modal, section text 3000, fields 10 x 2000, header
  150, button text 75, ``action_id``/``block_id`` 255, button value 2000, modal title 24,
  ``private_metadata`` 3000, ...): a violation answers ``invalid_blocks`` with the reasons;
* ``trigger_id`` s it issues in deliveries: single use, valid for ``trigger_ttl`` seconds.

It also plays Slack's side towards the app under test, with real HMAC signatures (the same signing
secret as the app): :meth:`SlackStandIn.click` builds a ``block_actions`` payload from the *stored*
message (the button must exist), :meth:`SlackStandIn.submit_view` a ``view_submission`` from a stored
modal, :meth:`SlackStandIn.deliver_event` an Events API envelope. Each can carry retry headers
(``X-Slack-Retry-Num``) or be ``forged`` (wrong signature) or ``stale`` (timestamp 10 minutes old).
Every API call and every delivery is recorded (:attr:`calls`, :attr:`deliveries`).
"""

from __future__ import annotations

import html
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from slack_sdk.signature import SignatureVerifier

DEFAULT_USERS: dict[str, dict[str, Any]] = {
    "U024BE7LH": {"name": "lead", "real_name": "Lee Lead", "email": "lead@example.com"},
    "U0ALICE01": {"name": "alice", "real_name": "Alice Approver", "email": "alice@example.com"},
    "U0MALLORY": {"name": "mallory", "real_name": "Mallory Outsider", "email": "mallory@example.com"},
}

# --- Block Kit limits ------------------------------------------------------------------------------


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def validate_blocks(blocks: Any, *, surface: str = "message") -> list[str]:
    """The Block Kit limits Slack enforces, as a list of problems (empty: valid)."""
    problems: list[str] = []
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    limit = 50 if surface == "message" else 100
    if len(blocks) > limit:
        problems.append(f"more than {limit} blocks ({len(blocks)})")
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict) or "type" not in block:
            problems.append(f"{where}: a block needs a type")
            continue
        kind = block["type"]
        if len(str(block.get("block_id", ""))) > 255:
            problems.append(f"{where}: block_id longer than 255")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if _text_len(block.get("text")) > 3000:
                problems.append(f"{where}: section text longer than 3000")
            fields_ = block.get("fields", [])
            if len(fields_) > 10:
                problems.append(f"{where}: more than 10 fields")
            problems += [f"{where}: field longer than 2000" for f in fields_ if _text_len(f) > 2000]
        elif kind == "header":
            if _text_len(block.get("text")) > 150:
                problems.append(f"{where}: header text longer than 150")
        elif kind == "context":
            if len(block.get("elements", [])) > 10:
                problems.append(f"{where}: more than 10 context elements")
        elif kind == "actions":
            elements = block.get("elements", [])
            if len(elements) > 25:
                problems.append(f"{where}: more than 25 elements")
            for j, el in enumerate(elements):
                problems += _check_element(el, f"{where}.elements[{j}]")
        elif kind == "input":
            if surface == "message":
                problems.append(f"{where}: input blocks belong in modals")
            if _text_len(block.get("label")) > 2000:
                problems.append(f"{where}: label longer than 2000")
            problems += _check_element(block.get("element", {}), f"{where}.element")
        elif kind not in ("divider", "image", "rich_text", "markdown"):
            problems.append(f"{where}: unknown block type {kind!r}")
    return problems


def _check_element(el: Any, where: str) -> list[str]:
    problems: list[str] = []
    if not isinstance(el, dict):
        return [f"{where}: not an object"]
    if len(str(el.get("action_id", ""))) > 255:
        problems.append(f"{where}: action_id longer than 255")
    if el.get("type") == "button":
        if not 0 < _text_len(el.get("text")) <= 75:
            problems.append(f"{where}: button text must be 1..75 characters")
        if len(str(el.get("value", ""))) > 2000:
            problems.append(f"{where}: button value longer than 2000")
        if "style" in el and el["style"] not in ("primary", "danger"):
            problems.append(f"{where}: style must be primary or danger")
        confirm = el.get("confirm")
        if confirm:
            for key, most in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
                if _text_len(confirm.get(key)) > most:
                    problems.append(f"{where}: confirm {key} longer than {most}")
    if el.get("type") == "plain_text_input" and int(el.get("max_length", 0) or 0) > 3000:
        problems.append(f"{where}: max_length above 3000")
    return problems


def validate_view(view: Any) -> list[str]:
    if not isinstance(view, dict) or view.get("type") != "modal":
        return ["view must be a modal"]
    problems = validate_blocks(view.get("blocks", []), surface="modal")
    for key in ("title", "submit", "close"):
        if key in view and _text_len(view[key]) > 24:
            problems.append(f"{key} longer than 24")
    if "title" not in view:
        problems.append("a modal needs a title")
    if len(view.get("private_metadata", "")) > 3000:
        problems.append("private_metadata longer than 3000")
    return problems


# --- the stand-in ----------------------------------------------------------------------------------


@dataclass
class Delivery:
    """What the app answered to a signed request the stand-in delivered."""

    status: int
    body: str
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class SlackError(Exception):
    """A Web API error: answered as ``{"ok": false, "error": code}``."""

    def __init__(self, code: str, messages: list[str] | None = None) -> None:
        super().__init__(code)
        self.code, self.messages = code, messages or []


class SlackStandIn:
    """Slack's Web API and Slack's deliveries to an app, on 127.0.0.1. ``port=0`` picks a free port."""

    def __init__(
        self,
        *,
        token: str = "xoxb-standin-token",
        signing_secret: str = "standin-signing-secret",
        app_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        team_id: str = "T0SIGNOFF",
        bot_user_id: str = "U0BOT0001",
        bot_id: str = "B0BOT0001",
        users: dict[str, dict[str, Any]] | None = None,
        trigger_ttl: float = 3.0,
    ) -> None:
        self.token, self.signing_secret, self.app_url = token, signing_secret, app_url
        self.host, self._requested_port = host, port
        self.team_id, self.bot_user_id, self.bot_id = team_id, bot_user_id, bot_id
        self.users = dict(users or DEFAULT_USERS)
        self.trigger_ttl = trigger_ttl
        self.calls: list[dict[str, Any]] = []
        self.deliveries: list[dict[str, Any]] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, str] = {}
        self._triggers: dict[str, tuple[float, bool]] = {}
        self._lock = threading.RLock()
        self._ts = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=30.0, trust_env=False)
        self.ui_token = uuid.uuid4().hex
        """Carried by the forms of ``/_fake/ui`` (another site's page cannot post clicks here)."""
        self.ui_notes: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        if self._server is None:
            server = ThreadingHTTPServer((self.host, self._requested_port), _Handler)
            server.daemon_threads = True
            server.standin = self  # type: ignore[attr-defined]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name="slack-standin", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._http.close()

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``slack_sdk.WebClient`` (trailing slash included)."""
        return self.url + "/api/"

    # -- inspection ---------------------------------------------------------------------------------

    def channel_id(self, name: str) -> str:
        """The id of a channel given by name (``approvals`` or ``#approvals``) or id."""
        name = name.lstrip("#")
        if name[:1] in ("C", "D", "G") and name[1:].isalnum() and name.upper() == name:
            return name
        with self._lock:
            if name not in self.channels:
                self.channels[name] = "C" + uuid.uuid5(uuid.NAMESPACE_DNS, name).hex[:9].upper()
            return self.channels[name]

    def messages_in(self, channel: str) -> list[dict[str, Any]]:
        cid = self.channel_id(channel)
        with self._lock:
            return [dict(m) for (c, _), m in sorted(self.messages.items()) if c == cid]

    def api_calls(self, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self.calls if method is None or c["method"] == method]

    def ephemerals_for(self, user: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self.ephemerals if e["user"] == user]

    def last_view(self) -> dict[str, Any]:
        with self._lock:
            if not self.views:
                raise LookupError("no view was opened")
            return dict(list(self.views.values())[-1])

    # -- the Web API --------------------------------------------------------------------------------

    def handle_api(self, method: str, args: dict[str, Any], auth: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"method": method, "args": args, "at": time.time()}
        try:
            if not auth:
                raise SlackError("not_authed")
            if auth != f"Bearer {self.token}":
                raise SlackError("invalid_auth")
            handler = getattr(self, "_api_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            result = {"ok": True, **handler(args)}
        except SlackError as exc:
            result = {"ok": False, "error": exc.code}
            if exc.messages:
                result["response_metadata"] = {"messages": exc.messages}
        entry.update(ok=result["ok"], error=result.get("error"))
        with self._lock:
            self.calls.append(entry)
        return result

    def _new_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    @staticmethod
    def _json_arg(args: dict[str, Any], key: str) -> Any:
        value = args.get(key)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise SlackError(f"invalid_{key}") from None
        return value

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://signoff-standin.slack.com/", "team": "Signoff stand-in", "user": "signoff",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id}

    def _message_args(self, args: dict[str, Any]) -> tuple[str, list[Any] | None]:
        blocks = self._json_arg(args, "blocks")
        text = str(args.get("text") or "")
        if blocks is not None:
            problems = validate_blocks(blocks)
            if problems:
                raise SlackError("invalid_blocks", problems)
        elif not text:
            raise SlackError("no_text")
        return text, blocks

    def _api_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel"):
            raise SlackError("channel_not_found")
        text, blocks = self._message_args(args)
        channel = self.channel_id(str(args["channel"]))
        with self._lock:
            ts = self._new_ts()
            message = {"type": "message", "channel": channel, "ts": ts, "text": text, "blocks": blocks or [],
                       "user": self.bot_user_id, "bot_id": self.bot_id, "thread_ts": args.get("thread_ts"),
                       "updates": 0}
            self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": {k: v for k, v in message.items() if k != "updates"}}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(args.get("channel") or ""))
        ts = str(args.get("ts") or "")
        text, blocks = self._message_args(args)
        with self._lock:
            message = self.messages.get((channel, ts))
            if message is None:
                raise SlackError("message_not_found")
            if message.get("bot_id") != self.bot_id:
                raise SlackError("cant_update_message")
            message.update(text=text, updates=message["updates"] + 1)
            if blocks is not None:
                message["blocks"] = blocks
        return {"channel": channel, "ts": ts, "text": text}

    def _api_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("user"):
            raise SlackError("user_not_found")
        text, blocks = self._message_args(args)
        channel = self.channel_id(str(args.get("channel") or ""))
        with self._lock:
            ts = self._new_ts()
            self.ephemerals.append({"channel": channel, "user": args["user"], "text": text,
                                    "blocks": blocks or [], "ts": ts})
        return {"message_ts": ts}

    def _api_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger = str(args.get("trigger_id") or "")
        with self._lock:
            issued = self._triggers.get(trigger)
            if issued is None:
                raise SlackError("invalid_trigger_id")
            at, used = issued
            if used or time.monotonic() - at > self.trigger_ttl:
                raise SlackError("expired_trigger_id")
            self._triggers[trigger] = (at, True)
        view = self._json_arg(args, "view")
        problems = validate_view(view)
        if problems:
            raise SlackError("invalid_arguments", problems)
        view_id = "V" + uuid.uuid4().hex[:10].upper()
        stored = {**view, "id": view_id, "hash": uuid.uuid4().hex[:12], "team_id": self.team_id,
                  "app_id": "A0SIGNOFF", "bot_id": self.bot_id, "state": {"values": {}}}
        with self._lock:
            self.views[view_id] = stored
        return {"view": stored}

    def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        uid = str(args.get("user") or "")
        user = self.users.get(uid)
        if user is None:
            raise SlackError("user_not_found")
        return {"user": {"id": uid, "team_id": self.team_id, "name": user["name"], "real_name": user["real_name"],
                         "is_bot": False, "profile": {"email": user.get("email"),
                                                      "real_name": user["real_name"]}}}

    def _api_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self.channel_id(str(args.get("channel") or ""))
        ts = str(args.get("ts") or "")
        with self._lock:
            if (channel, ts) not in self.messages:
                raise SlackError("thread_not_found")
            thread = [m for (c, t), m in sorted(self.messages.items())
                      if c == channel and (t == ts or m.get("thread_ts") == ts)]
        return {"messages": thread, "has_more": False}

    # -- deliveries to the app (signed) -------------------------------------------------------------

    def _issue_trigger(self) -> str:
        trigger = f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:16]}"
        with self._lock:
            self._triggers[trigger] = (time.monotonic(), False)
        return trigger

    def send(self, body: str, content_type: str, *, retry_num: int | None = None, forged: bool = False,
             stale: bool = False, url: str | None = None) -> Delivery:
        """POST a signed body to the app, as Slack does; record status and latency."""
        target = url or self.app_url
        if not target:
            raise RuntimeError("the stand-in has no app_url to deliver to")
        timestamp = str(int(time.time()) - (600 if stale else 0))
        secret = "not-the-" + self.signing_secret if forged else self.signing_secret
        signature = str(SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body))
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": signature}
        if retry_num is not None:
            headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"})
        started = time.perf_counter()
        response = self._http.post(target, content=body.encode(), headers=headers)
        seconds = time.perf_counter() - started
        delivery = Delivery(response.status_code, response.text, seconds, dict(response.headers))
        with self._lock:
            self.deliveries.append({"status": delivery.status, "seconds": seconds, "slow": seconds > 3.0,
                                    "retry": retry_num, "forged": forged, "stale": stale, "body": body,
                                    "content_type": content_type})
        return delivery

    def replay(self, index: int = -1, *, retry_num: int | None = 1, **kwargs: Any) -> Delivery:
        """Send an earlier delivery again, byte for byte (freshly signed), as Slack's retries do."""
        with self._lock:
            earlier = dict(self.deliveries[index])
        return self.send(earlier["body"], earlier["content_type"], retry_num=retry_num, **kwargs)

    def _send_payload(self, payload: dict[str, Any], **kwargs: Any) -> Delivery:
        return self.send(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded",
                         **kwargs)

    def _user(self, user: str) -> dict[str, Any]:
        name = self.users.get(user, {}).get("name", user.lower())
        return {"id": user, "username": name, "name": name, "team_id": self.team_id}

    def snapshot(self, channel: str, ts: str) -> dict[str, Any]:
        """A copy of a stored message as a client shows it now (to click on later, as a slow client would)."""
        with self._lock:
            message = self.messages.get((self.channel_id(channel), ts))
            if message is None:
                raise LookupError(f"no message {ts} in {channel}")
            return dict(json.loads(json.dumps(message)))

    def click(self, channel: str, ts: str, action_id: str, user: str, *, message: dict[str, Any] | None = None,
              **kwargs: Any) -> Delivery:
        """A user clicks the button ``action_id`` on a stored message (which must carry that button).

        ``message``: click on this earlier :meth:`snapshot` instead (a client that has not refreshed yet).
        """
        cid = self.channel_id(channel)
        message = message or self.snapshot(channel, ts)
        for block in message.get("blocks", []):
            for el in block.get("elements", []) if block.get("type") == "actions" else []:
                if el.get("action_id") == action_id:
                    button, block_id = el, block.get("block_id", "")
                    break
            else:
                continue
            break
        else:
            raise LookupError(f"message {ts} has no button {action_id!r} (already decided?)")
        action_ts = f"{time.time():.6f}"
        payload: dict[str, Any] = {
            "type": "block_actions", "user": self._user(user), "api_app_id": "A0SIGNOFF", "token": "legacy",
            "container": {"type": "message", "message_ts": ts, "channel_id": cid, "is_ephemeral": False},
            "trigger_id": self._issue_trigger(), "team": {"id": self.team_id, "domain": "signoff"},
            "enterprise": None, "is_enterprise_install": False,
            "channel": {"id": cid, "name": channel.lstrip("#")},
            "message": {k: v for k, v in message.items() if k != "updates"},
            "state": {"values": {}}, "response_url": f"{self.url}/actions/{uuid.uuid4().hex}",
            "actions": [{"type": "button", "action_id": action_id, "block_id": block_id,
                         "value": button.get("value", ""), "style": button.get("style"),
                         "text": button.get("text"), "action_ts": action_ts}],
        }
        return self._send_payload(payload, **kwargs)

    def submit_view(self, view_id: str, values: dict[str, str], user: str, **kwargs: Any) -> Delivery:
        """A user submits a stored modal with ``values`` as ``{block_id: value}`` for its input blocks."""
        with self._lock:
            view = self.views.get(view_id)
            if view is None:
                raise LookupError(f"no view {view_id}")
            view = json.loads(json.dumps(view))
        state: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input" or block.get("block_id") not in values:
                continue
            element = block["element"]
            value = values[block["block_id"]]
            if element.get("type") == "static_select":
                option = next((o for o in element.get("options", []) if o["value"] == value), None)
                if option is None:
                    raise LookupError(f"{block['block_id']} has no option {value!r}")
                entry: dict[str, Any] = {"type": "static_select", "selected_option": option}
            else:
                entry = {"type": element.get("type", "plain_text_input"), "value": value}
            state[block["block_id"]] = {element["action_id"]: entry}
        unknown = set(values) - set(state)
        if unknown:
            raise LookupError(f"view {view_id} has no input blocks {sorted(unknown)}")
        view["state"] = {"values": state}
        payload = {"type": "view_submission", "team": {"id": self.team_id, "domain": "signoff"},
                   "user": self._user(user), "api_app_id": "A0SIGNOFF", "token": "legacy",
                   "trigger_id": self._issue_trigger(), "view": view, "response_urls": []}
        return self._send_payload(payload, **kwargs)

    def deliver_event(self, event: dict[str, Any], *, event_id: str | None = None, **kwargs: Any) -> Delivery:
        """An Events API delivery (``event_callback``) of ``event``; pass the same ``event_id`` to replay it."""
        envelope = {
            "token": "legacy", "team_id": self.team_id, "api_app_id": "A0SIGNOFF", "type": "event_callback",
            "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(), "event_time": int(time.time()),
            "authorizations": [{"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True,
                                "is_enterprise_install": False, "enterprise_id": None}],
            "event": {"event_ts": f"{time.time():.6f}", **event},
        }
        return self.send(json.dumps(envelope), "application/json", **kwargs)

    def mention(self, user: str, text: str, channel: str = "support", **kwargs: Any) -> Delivery:
        """``@signoff <text>`` in a channel, as an ``app_mention`` event."""
        cid = self.channel_id(channel)
        with self._lock:
            ts = self._new_ts()
            self.messages[(cid, ts)] = {"type": "message", "channel": cid, "ts": ts, "user": user,
                                        "text": f"<@{self.bot_user_id}> {text}", "blocks": [], "updates": 0}
        return self.deliver_event({"type": "app_mention", "user": user, "text": f"<@{self.bot_user_id}> {text}",
                                   "ts": ts, "channel": cid}, **kwargs)

    def dm(self, user: str, text: str, **kwargs: Any) -> Delivery:
        """A direct message to the bot (``message.im``)."""
        channel = "D" + user[1:]
        ts = self._new_ts()
        return self.deliver_event({"type": "message", "channel_type": "im", "user": user, "text": text,
                                   "ts": ts, "channel": channel}, **kwargs)


# --- a tiny server-rendered UI: read the messages, click their buttons, fill modals, talk to the bot ----


def _mrkdwn_texts(blocks: list[Any]) -> list[str]:
    out: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("section", "header"):
            if block.get("text"):
                out.append(str(block["text"].get("text", "")))
            out += [str(f.get("text", "")) for f in block.get("fields", [])]
        elif kind == "context":
            out += [str(e.get("text", "")) for e in block.get("elements", []) if isinstance(e, dict)]
    return out


def render_ui(standin: SlackStandIn, user: str) -> str:
    """``GET /_fake/ui``: every channel's messages (newest first) with working buttons, open modals, a chat box."""
    e = html.escape
    hidden = (f"<input type=hidden name=csrf value='{e(standin.ui_token)}'>"
              f"<input type=hidden name=as value='{e(user)}'>")
    names = {cid: name for name, cid in standin.channels.items()}
    with standin._lock:
        messages = sorted(standin.messages.values(), key=lambda m: m["ts"], reverse=True)[:60]
        views = list(standin.views.values())[-3:]
        ephemerals = [x for x in standin.ephemerals if x["user"] == user][-5:]
        notes = standin.ui_notes[-5:]
    users = " ".join(f"<b>{e(u['name'])}</b>" if uid == user else
                     f"<a href='/_fake/ui?{urlencode({'as': uid})}'>{e(u['name'])}</a>"
                     for uid, u in standin.users.items())
    out = ["<!doctype html><meta charset=utf-8><title>Slack stand-in</title>",
           "<style>body{font:14px system-ui;max-width:60em;margin:1em auto}pre{white-space:pre-wrap;margin:.2em 0}"
           ".m{border:1px solid #ccc;border-radius:6px;padding:.5em;margin:.5em 0}.t{color:#666;font-size:12px}"
           "form{display:inline}</style>",
           f"<h1>Slack stand-in</h1><p>Acting as: {users} · <a href='/_fake/ui?{urlencode({'as': user})}'>"
           "refresh</a> · <a href='/_fake/messages'>JSON</a></p>"]
    out += [f"<p class=t>{e(n)}</p>" for n in notes]
    out.append(f"<form method=post action='/_fake/say'>{hidden}<input name=text size=50 "
               "placeholder='which accounts are at risk this month?'> in channel <input name=channel size=10 "
               "placeholder='(DM)'> <button>Send</button></form>")
    for x in ephemerals:
        out.append(f"<div class=m><span class=t>only you can see this</span><pre>{e(x['text'])}</pre></div>")
    for view in views:
        inputs = []
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            name, el = f"v:{block['block_id']}", block.get("element", {})
            label = e(str(block.get("label", {}).get("text", block["block_id"])))
            if el.get("type") == "static_select":
                opts = "".join(f"<option value='{e(str(o['value']))}'>{e(str(o['text']['text']))}</option>"
                               for o in el.get("options", []))
                inputs.append(f"<label>{label} <select name='{e(name)}'>{opts}</select></label>")
            else:
                inputs.append(f"<label>{label} <input name='{e(name)}' size=40 "
                              f"value='{e(str(el.get('initial_value', '')))}'></label>")
        title = e(str(view.get("title", {}).get("text", "")))
        submit = e(str(view.get("submit", {}).get("text", "Submit")))
        out.append(f"<div class=m><b>Modal: {title}</b><pre>{e(chr(10).join(_mrkdwn_texts(view['blocks'])))}</pre>"
                   f"<form method=post action='/_fake/submit'>{hidden}<input type=hidden name=view "
                   f"value='{e(view['id'])}'>{' '.join(inputs)} <button>{submit}</button></form></div>")
    for m in messages:
        channel = names.get(m["channel"], m["channel"])
        who = standin.users.get(str(m.get("user")), {}).get("name") or ("bot" if m.get("bot_id") else m.get("user"))
        head = f"#{channel} · {who} · {m['ts']}" + (f" · reply in thread {m['thread_ts']}" if m.get("thread_ts")
                                                    else "")
        body = "\n".join(_mrkdwn_texts(m.get("blocks") or [])) or str(m.get("text", ""))
        buttons = [
            f"<form method=post action='/_fake/click'>{hidden}<input type=hidden name=channel value='{e(channel)}'>"
            f"<input type=hidden name=ts value='{e(m['ts'])}'><input type=hidden name=action "
            f"value='{e(str(el.get('action_id')))}'><button>{e(str(el.get('text', {}).get('text', '?')))}</button>"
            "</form>"
            for block in m.get("blocks") or [] if block.get("type") == "actions"
            for el in block.get("elements", []) if el.get("type") == "button"]
        out.append(f"<div class=m><div class=t>{e(head)}</div><pre>{e(body)}</pre>{' '.join(buttons)}</div>")
    return "\n".join(out)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def standin(self) -> SlackStandIn:
        return self.server.standin  # type: ignore[attr-defined]

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        ctype = self.headers.get("Content-Type", "")
        if body:
            if "json" in ctype:
                try:
                    loaded = json.loads(body)
                except json.JSONDecodeError:
                    self._send(200, {"ok": False, "error": "invalid_json"})
                    return
                args.update(loaded if isinstance(loaded, dict) else {})
            else:
                args.update({k: v[-1] for k, v in parse_qs(body.decode()).items()})
        auth = self.headers.get("Authorization")
        if not auth and args.get("token"):
            auth = f"Bearer {args.pop('token')}"
        if parts.path.startswith("/api/"):
            self._send(200, self.standin.handle_api(parts.path[len("/api/"):], args, auth))
        elif parts.path.startswith("/actions/"):
            self._send(200, {"ok": True})
        elif parts.path == "/_fake/messages":
            with self.standin._lock:
                self._send(200, list(self.standin.messages.values()))
        elif parts.path == "/_fake/ui" and self.command == "GET":
            self._send_html(render_ui(self.standin, args.get("as") or next(iter(self.standin.users))))
        elif parts.path in ("/_fake/click", "/_fake/submit", "/_fake/say") and self.command == "POST":
            self._ui_post(parts.path, args)
        else:
            self._send(404, {"ok": False, "error": "not_found"})

    def _send_html(self, page: str, status: int = 200) -> None:
        data = page.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _ui_post(self, path: str, form: dict[str, Any]) -> None:
        """A form on ``/_fake/ui``: deliver the signed click / modal submission / message, then go back."""
        standin = self.standin
        user = str(form.get("as") or "")
        if form.get("csrf") != standin.ui_token or user not in standin.users:
            self._send_html("<p>stale form: reload <a href='/_fake/ui'>/_fake/ui</a></p>", 403)
            return
        try:
            if path == "/_fake/click":
                delivery = standin.click(str(form["channel"]), str(form["ts"]), str(form["action"]), user)
            elif path == "/_fake/submit":
                values = {k[2:]: str(v) for k, v in form.items() if k.startswith("v:")}
                delivery = standin.submit_view(str(form["view"]), values, user)
            elif form.get("channel"):
                delivery = standin.mention(user, str(form.get("text") or ""), channel=str(form["channel"]))
            else:
                delivery = standin.dm(user, str(form.get("text") or ""))
            note = f"{path[7:]}: the app answered {delivery.status} in {delivery.seconds * 1000:.0f} ms"
            if delivery.body and delivery.body.strip() not in ("", "{}"):
                note += f": {delivery.body[:300]}"
        except (LookupError, RuntimeError, httpx.HTTPError) as exc:
            note = f"{path[7:]} failed: {exc}"
        standin.ui_notes.append(note)
        self.send_response(303)
        self.send_header("Location", f"/_fake/ui?{urlencode({'as': user})}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._dispatch(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._dispatch(self.rfile.read(length) if length else b"")
