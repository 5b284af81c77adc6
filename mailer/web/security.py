"""Security headers on every HTTP response of a page-serving app.

The default policy lets a page load scripts, styles, images, fonts and
connections from its own origin only: no inline script, no ``eval``, no
CDN. A route that needs a different policy (the sink's HTML preview)
sets its own ``Content-Security-Policy`` header, which is kept.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PAGE_CSP", "SecurityHeaders", "csp_header"]


def csp_header(directives: Mapping[str, str]) -> str:
    """``{"default-src": "'self'"}`` → ``"default-src 'self'"`` (pure).

    Raises ValueError for a directive or value with ``;``, ``,`` or a line
    break, which would end or split the policy.
    """
    parts = []
    for name, value in directives.items():
        for text in (name, value):
            if any(c in text for c in ";,\r\n"):
                raise ValueError(f"CSP directive {name!r}: {text!r} would split the policy")
        parts.append(f"{name} {value}".strip())
    return "; ".join(parts)


PAGE_CSP = csp_header(
    {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "font-src": "'self'",
        "connect-src": "'self'",
        "frame-src": "'self'",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "'self'",
    }
)


class SecurityHeaders:
    """Adds ``Content-Security-Policy`` (``policy`` unless the response
    has one), ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
    no-referrer`` to every HTTP response."""

    def __init__(self, app: ASGIApp, *, policy: str = PAGE_CSP) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", self.policy)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
            await send(message)

        await self.app(scope, receive, with_headers)
