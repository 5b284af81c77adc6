"""``/u/{token}``: the service's own unsubscribe link (RFC 8058).

``GET`` only shows a confirmation page with a form, because link scanners
and mail previews follow links; the form, and mailbox providers' one-click
requests, ``POST`` the body ``List-Unsubscribe=One-Click`` (form-urlencoded
or multipart), which suppresses the address for the account.
"""

from __future__ import annotations

import email.parser
import email.policy
from html import escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.api.metrics import ApiMetrics
from mailer.client import Client
from mailer.errors import ValidationError

ONE_CLICK = ("List-Unsubscribe", "One-Click")
MAX_FORM = 64 * 1024

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1.25rem}}</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"""


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=escape(title), body=body), status_code=status_code)


def _invalid_link() -> HTMLResponse:
    return page(
        "Link not valid",
        "<p>This unsubscribe link is not valid. Please use the link from the e-mail.</p>",
        404,
    )


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
    router = APIRouter(prefix="/u", tags=["unsubscribe"], responses=_RESPONSES)

    @router.get("/{token}", response_class=HTMLResponse)
    async def confirm(token: str) -> HTMLResponse:
        """A confirmation page; unsubscribing needs the POST."""
        try:
            target = client.unsubscribe_target(token)
        except ValidationError:
            return _invalid_link()
        name, value = ONE_CLICK
        return page(
            "Unsubscribe",
            f"<p>Stop survey e-mails to <strong>{escape(target.address)}</strong>?</p>\n"
            f'<form method="post"><input type="hidden" name="{name}" value="{value}">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    @router.post(
        "/{token}",
        response_class=HTMLResponse,
        responses={400: {"description": "the body is not List-Unsubscribe=One-Click", **_HTML}},
    )
    async def one_click(token: str, request: Request) -> HTMLResponse:
        """RFC 8058 one-click: the body must be ``List-Unsubscribe=One-Click``."""
        body = await request.body()
        fields = form_fields(request.headers.get("content-type", ""), body[:MAX_FORM])
        name, value = ONE_CLICK
        if value not in fields.get(name, []):
            return page(
                "Not unsubscribed",
                f"<p>The request must carry <code>{name}={value}</code>.</p>",
                400,
            )
        try:
            done = await client.unsubscribe(token)
        except ValidationError:
            return _invalid_link()
        if done.changed:
            metrics.unsubscribes.inc()
        return page(
            "Unsubscribed",
            f"<p>{escape(done.address)} will get no more survey e-mails from this sender.</p>",
        )

    return router
