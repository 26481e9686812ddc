"""Request size limits, enforced on the bytes that arrive, not on what the client declares.

:class:`BodyLimit` is plain ASGI middleware. A declared ``Content-Length`` over the limit is refused
before anything is read; a body sent without one (``Transfer-Encoding: chunked``) is counted as it
streams in, and the read that crosses the limit raises :class:`BodyTooLarge`, so at most ``max_body``
bytes of any request are ever held, whoever sends it and whether or not it is authenticated. A query
string over ``max_query`` characters is refused too.

:class:`BodyTooLarge` is an ``HTTPException`` (413): FastAPI passes it through its body parsing
untouched, and the app's handler answers it in the usual ``{"error", "detail"}`` shape.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body: int, max_query: int) -> None:
        self.app, self.max_body, self.max_query = app, max_body, max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            await _refuse(send, 414, "uri_too_long", f"query strings are limited to {self.max_query} characters")
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _refuse(send, 413, "too_large", f"request bodies are limited to {self.max_body} bytes")
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # raised where no exception handler saw it (e.g. in other middleware)
            if not started:
                await _refuse(send, 413, "too_large", str(exc.detail))


async def _refuse(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def parse_json(raw: bytes) -> object:
    """``json.loads`` for request bodies: empty is ``None``; nesting too deep for the parser is a ValueError
    (``json`` raises RecursionError, which would otherwise be a 500)."""
    try:
        return json.loads(raw or b"null")
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
