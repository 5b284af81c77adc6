"""ASGI middleware of the API: the request size limit (413 before the body
is parsed) and request counting for /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.api.errors import PROBLEM_JSON, ApiError, item, problem
from mailer.api.metrics import ApiMetrics


class _TooLarge(ApiError):
    """The body grew past the limit while it was being read. An
    HTTPException, so that FastAPI's body reading lets it through to the
    error handlers instead of making it a 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "body", _reason(limit), code="too-large")


def _reason(limit: int) -> str:
    return f"request body larger than {limit} bytes"


# A client that is still sending when the 413 goes out and the connection
# closes gets a reset instead of the answer; as nginx's lingering close does,
# the rest of the body is read and dropped first, within these bounds.
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_SECONDS = 10.0


async def _drain(receive: Receive, *, limit: int = DRAIN_BYTES) -> None:
    """Read and drop what is left of the request body (never kept)."""
    drained = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            while drained <= limit:
                message = await receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return


async def _reply_too_large(send: Send, limit: int) -> None:
    problem_doc = problem(413, [item("body", _reason(limit), "too-large")])
    body = json.dumps(problem_doc).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode("ascii")),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413: at once when
    Content-Length says so, else as soon as the streamed bytes pass it
    (chunked uploads), before anything parses them."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if int(declared) <= DRAIN_BYTES:
                await _drain(receive)
            await _reply_too_large(send, self.limit)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    if message.get("more_body", False):
                        await _drain(receive, limit=DRAIN_BYTES - received)
                    raise _TooLarge(self.limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLarge:
            if started:
                raise
            await _reply_too_large(send, self.limit)


class CountRequests:
    """Count every answered request by method, route template and status."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
