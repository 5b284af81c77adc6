"""The inbox in the browser: the sink's JSON API, its pages and its
offline API docs in one ASGI app.

Pages are Jinja templates rendered on the server; the list updates live
through server-sent events (``/events``) and htmx's SSE extension, both
vendored. Every response carries a Content-Security-Policy without inline
scripts; the HTML preview is served on its own URL with a policy that
allows no script at all and no remote image until the reader allows
them, inside an ``<iframe sandbox>``. Forms are refused when the browser
says they come from another site.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from mailer.errors import ValidationError
from mailer.sink.api import api_router
from mailer.sink.record import SinkMessage
from mailer.sink.server import DevSink
from mailer.sink.web.faults import FaultSwitches, Switch
from mailer.sink.web.live import Changes
from mailer.sink.web.view import attachment_bytes, newest_first, view
from mailer.web import SecurityHeaders, csp_header, install_docs, static_files
from mailer.web.templating import page_templates

__all__ = ["PREVIEW_CSP", "create_app", "preview_csp"]

_HERE = Path(__file__).parent


def preview_csp(images: bool) -> str:
    """The policy of an HTML body shown in the preview: no script, no
    form, no connection, inline styles; remote images only when allowed."""
    return csp_header(
        {
            "default-src": "'none'",
            "style-src": "'unsafe-inline'",
            "img-src": "data: http: https:" if images else "data:",
            "font-src": "data:",
            "form-action": "'none'",
            "base-uri": "'none'",
            "frame-ancestors": "'self'",
            "sandbox": "allow-popups allow-popups-to-escape-sandbox",
        }
    )


PREVIEW_CSP = preview_csp(False)
# Rows on the page at most (the sink keeps up to 10,000 messages; search
# reaches them all).
LIST_LIMIT = 500


def _same_site(request: Request) -> None:
    """Raises HTTPException(403) for a form sent from another site: the
    inbox listens on loopback, where any web page could post to it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        # The browser's own word, which a sandboxed frame (the preview)
        # cannot bend: its requests are cross-site. Origin is no help here:
        # under the inbox's Referrer-Policy (no-referrer) Chromium sends
        # "Origin: null" with the page's own forms too.
        if site not in ("same-origin", "none"):
            raise HTTPException(403, "cross-site request refused")
        return
    origin = request.headers.get("origin")
    # without Sec-Fetch-Site: "null" (a sandboxed frame) is refused too
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"request from {origin} refused")


def _message(sink: DevSink, message_id: str) -> SinkMessage:
    message = sink.get(message_id)
    if message is None:
        raise HTTPException(404, f"no message {message_id}")
    return message


def create_app(sink: DevSink, *, changes: Changes | None = None) -> FastAPI:
    """The inbox over a running ``sink``: pages at ``/``, the JSON API at
    ``/messages``, docs at ``/docs``. ``changes`` (made when None, in
    ``app.state.changes``) is subscribed to the sink's messages; call its
    ``close()`` before stopping the server so open event streams end."""
    changes = changes or Changes()
    sink.listen(lambda message: changes.publish("message"))
    switches = FaultSwitches(sink)
    templates = page_templates(_HERE / "templates")
    app = FastAPI(
        title="mailer sink",
        description="The developer sink's inbox and JSON API.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.changes = changes
    app.state.switches = switches
    app.include_router(api_router(sink, changes.publish))
    app.mount("/static/sink", StaticFiles(directory=_HERE / "static"), name="sink-static")
    app.mount("/static/web", static_files(), name="web-static")
    install_docs(app)

    def page(request: Request, name: str, **context: object) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"sink": sink, "switches": switches.states(), **context}
        )

    def listing(request: Request, template: str, q: str) -> HTMLResponse:
        kept = sink.messages
        shown = newest_first(kept, q, LIST_LIMIT)
        return page(request, template, q=q, messages=shown, total=len(kept), limit=LIST_LIMIT)

    @app.get("/", include_in_schema=False)
    def inbox(request: Request, q: str = "") -> HTMLResponse:
        return listing(request, "inbox.html", q)

    @app.get("/inbox/list", include_in_schema=False)
    def inbox_list(request: Request, q: str = "") -> HTMLResponse:
        return listing(request, "_list.html", q)

    @app.get("/events", include_in_schema=False)
    async def events() -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            async for kind in changes.subscribe():
                yield f"event: changed\ndata: {kind}\n\n" if kind else ": keep-alive\n\n"

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @app.get("/m/{message_id}", include_in_schema=False)
    def message_page(request: Request, message_id: str, images: bool = False) -> HTMLResponse:
        shown = view(_message(sink, message_id))
        return page(request, "message.html", m=shown.message, v=shown, images=images)

    @app.get("/m/{message_id}/preview", include_in_schema=False)
    def preview(message_id: str, images: bool = False) -> HTMLResponse:
        html = view(_message(sink, message_id)).html
        if html is None:
            raise HTTPException(404, "the message has no HTML part")
        return HTMLResponse(html, headers={"Content-Security-Policy": preview_csp(images)})

    @app.get("/m/{message_id}/raw.eml", include_in_schema=False)
    def raw(message_id: str) -> Response:
        message = _message(sink, message_id)
        return Response(
            message.data,
            media_type="message/rfc822",
            headers={"Content-Disposition": f'attachment; filename="{message_id}.eml"'},
        )

    @app.get("/m/{message_id}/attachments/{index}", include_in_schema=False)
    def attachment(message_id: str, index: int) -> Response:
        found = attachment_bytes(_message(sink, message_id), index)
        if found is None:
            raise HTTPException(404, f"no attachment {index}")
        info, data = found
        # never rendered as a page of the inbox's origin: always a download
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="attachment-{index}"; '
                f"filename*=UTF-8''{quote(info.filename, safe='')}"
            },
        )

    @app.post("/m/{message_id}/delete", include_in_schema=False)
    def delete(request: Request, message_id: str) -> RedirectResponse:
        _same_site(request)
        if not sink.delete(message_id):
            raise HTTPException(404, f"no message {message_id}")
        changes.publish("deleted")
        return RedirectResponse("/", status_code=303)

    @app.post("/clear", include_in_schema=False)
    def clear(request: Request) -> RedirectResponse:
        _same_site(request)
        sink.clear()
        changes.publish("cleared")
        return RedirectResponse("/", status_code=303)

    @app.post("/faults/{name}", include_in_schema=False)
    async def fault(request: Request, name: str) -> RedirectResponse:
        _same_site(request)
        try:
            switch = Switch(name)
        except ValueError as exc:
            raise HTTPException(404, f"no fault switch {name!r}") from exc
        form = await request.form()
        state = form.get("state")
        if state not in ("on", "off"):
            raise HTTPException(422, "state: must be 'on' or 'off'")
        try:
            await asyncio.to_thread(switches.set, switch, state == "on")
        except ValidationError as exc:
            raise HTTPException(422, f"{exc.field}: {exc.reason}") from exc
        return RedirectResponse("/#faults", status_code=303)

    app.add_middleware(SecurityHeaders)
    return app
