"""``/u/{token}``: the service's own unsubscribe link (RFC 8058).

``GET`` only shows a confirmation page with a form, because link scanners
and mail previews follow links; the form, and mailbox providers' one-click
requests, ``POST`` the body ``List-Unsubscribe=One-Click`` (form-urlencoded
or multipart), which suppresses the address for the account. Every answer
is a page in place (no redirect, RFC 8058 §3.2), in the distribution's
language or the browser's (:mod:`mailer.api.unsubscribe_page`).
"""

from __future__ import annotations

import email.parser
import email.policy
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.api.metrics import ApiMetrics
from mailer.api.unsubscribe_page import CSP, Page, choose_language, render
from mailer.client import Client
from mailer.errors import ValidationError
from mailer.message.unsubscribe import UnsubscribeToken

ONE_CLICK = ("List-Unsubscribe", "One-Click")
MAX_FORM = 64 * 1024

NO_STORE = {"Cache-Control": "no-store", "Content-Security-Policy": CSP}


def _answer(page: Page) -> HTMLResponse:
    # Answered in place, never redirected (RFC 8058 §3.2): a mailbox
    # provider's one-click POST does not follow redirects.
    return HTMLResponse(page.html, status_code=page.status, headers=NO_STORE)


def form_fields(content_type: str, body: bytes) -> dict[str, list[str]]:
    """The fields of a form body, urlencoded or multipart/form-data (pure;
    unparseable input gives no fields)."""
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode(
            "latin-1", "replace"
        )
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        fields: dict[str, list[str]] = {}
        if not message.is_multipart():
            return fields
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                value = payload.decode("utf-8", "replace").strip()
                fields.setdefault(name, []).append(value)
        return fields
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


_HTML: dict[str, Any] = {"content": {"text/html": {}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "the link is not valid", **_HTML},
}


def unsubscribe_router(client: Client, metrics: ApiMetrics) -> APIRouter:
    # redirect_slashes off: "/u/{token}/" is answered, not redirected
    router = APIRouter(
        prefix="/u", tags=["unsubscribe"], responses=_RESPONSES, redirect_slashes=False
    )
    form = "=".join(ONE_CLICK)

    def language(target: UnsubscribeToken | None, request: Request) -> str:
        preferred = target.language if target is not None else None
        return choose_language(preferred, request.headers.get("accept-language"))

    @router.get("/{token}", response_class=HTMLResponse)
    @router.get("/{token}/", response_class=HTMLResponse, include_in_schema=False)
    async def confirm(token: str, request: Request) -> HTMLResponse:
        """A confirmation page in the distribution's language or the
        browser's; unsubscribing needs the POST."""
        try:
            target = client.unsubscribe_target(token)
        except ValidationError:
            return _answer(render("invalid", language(None, request)))
        return _answer(
            render("confirm", language(target, request), address=target.address, form=form)
        )

    @router.post(
        "/{token}",
        response_class=HTMLResponse,
        responses={400: {"description": "the body is not List-Unsubscribe=One-Click", **_HTML}},
    )
    @router.post("/{token}/", response_class=HTMLResponse, include_in_schema=False)
    async def one_click(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click: the body must be ``List-Unsubscribe=One-Click``.
        Answered with a page, never a redirect."""
        try:
            target = client.unsubscribe_target(token)
        except ValidationError:
            target = None
        lang = language(target, request)
        body = await request.body()
        fields = form_fields(request.headers.get("content-type", ""), body[:MAX_FORM])
        name, value = ONE_CLICK
        if target is None:
            return _answer(render("invalid", lang))
        if value not in fields.get(name, []):
            return _answer(render("bad", lang, form=form))
        try:
            done = await client.unsubscribe(token)
        except ValidationError:
            return _answer(render("invalid", lang))
        if done.changed:
            metrics.unsubscribes.inc()
        return _answer(render("done" if done.changed else "again", lang, address=done.address))

    return router
