"""The operator console: server-rendered pages over an open app, mounted
by the API at ``/ui`` (:func:`create_console`).

Every page needs a session (an operator key exchanged for a signed,
HttpOnly, SameSite=Strict cookie, Secure over https); without one it
redirects to the login page. Every form carries the session's CSRF token
and a POST without it is refused (403). Pages carry the shared
Content-Security-Policy (no inline script; this console has no script
at all). The actions (:mod:`mailer.ui.actions`) call the same
:class:`~mailer.client.Client` methods as their CLI twins.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData

from mailer.accounts import Principal, authenticate, digest
from mailer.app import App
from mailer.client import Client, Story
from mailer.errors import NotFound, ValidationError
from mailer.reasons import Reason, State
from mailer.ui.actions import install_actions
from mailer.ui.chart import chart_of
from mailer.ui.forms import filter_args, filter_query
from mailer.ui.session import (
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Sessions,
    operator_of,
    same_token,
)
from mailer.web import PAGE_CSP, SecurityHeaders
from mailer.web.templating import page_templates

__all__ = ["Console", "create_console"]

_HERE = Path(__file__).parent
PAGE_SIZES = (25, 50, 100, 500)
CHART_MINUTES = 60


class LoginRequired(Exception):
    """A page asked for without a valid session (handled: a redirect)."""


class CsrfRefused(Exception):
    """A form without the session's token (handled: 403)."""


class Console:
    """What every route shares: the app, its client, the cookie signer."""

    def __init__(self, app: App, keys: Sequence[str], secret: str) -> None:
        self.app = app
        self.client = Client(app)
        self.sessions = Sessions(secret)
        self.keys = tuple(key.encode("utf-8") for key in keys)
        self.configured = tuple(digest(key) for key in keys)
        self.templates = page_templates(_HERE / "templates", query=lambda pairs: urlencode(pairs))

    async def operator(self, request: Request) -> tuple[Principal, str]:
        """Who the request acts for and its CSRF token; raises
        LoginRequired without a session of a live operator key."""
        session = self.sessions.read(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise LoginRequired
        principal = await operator_of(self.app.store, session.key_digest, self.configured)
        if principal is None:
            raise LoginRequired
        return principal, session.csrf

    async def form(self, request: Request) -> tuple[FormData, str]:
        """A POST's form, after checking its session and CSRF token."""
        _, csrf = await self.operator(request)
        form = await request.form()
        given = form.get("csrf")
        if not same_token(given if isinstance(given, str) else None, csrf):
            raise CsrfRefused
        return form, csrf

    def page(
        self, request: Request, name: str, csrf: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("errors", {})
        context.setdefault("notice", None)
        return self.templates.TemplateResponse(
            request,
            name,
            {"base": base(request), "csrf": csrf, **context},
            status_code=status,
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
        )


def base(request: Request) -> str:
    """The console's path prefix (``/ui`` when mounted by the API)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=(base(request) or "") + "/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def single(form: FormData | Any) -> dict[str, str]:
    """The form's (or query's) text fields, first value each."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


def errors_of(exc: ValidationError) -> dict[str, str]:
    return {exc.field: exc.reason}


def create_console(app: App, *, keys: Sequence[str] = (), secret: str | None = None) -> FastAPI:
    """The console over an open ``app``. ``keys`` are the config's operator
    keys (stored operator keys work too); ``secret`` signs the cookies (a
    random one when None: sessions then end with the process)."""
    console = Console(app, keys, secret or secrets.token_urlsafe(32))
    ui = FastAPI(title="mailer console", docs_url=None, redoc_url=None, openapi_url=None)
    ui.state.console = console
    ui.mount("/static", StaticFiles(directory=_HERE / "static"), name="console-static")

    @ui.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=(base(request) or "") + "/")
        return response

    @ui.exception_handler(CsrfRefused)
    async def refused(request: Request, exc: CsrfRefused) -> Response:
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><title>Refused · mailer console</title></head>"
            "<body><main><h1>Refused</h1><p>The form carried no valid CSRF token: "
            "nothing was changed. Reload the page and try again.</p></main></body></html>",
            status_code=403,
            headers={"Content-Security-Policy": PAGE_CSP},
        )

    @ui.get("/login", include_in_schema=False)
    async def login_page(request: Request) -> HTMLResponse:
        return _login(request, console, {})

    @ui.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = single(await request.form())
        nonce = console.sessions.login_nonce_of(request.cookies.get(LOGIN_COOKIE))
        if nonce is None or not same_token(form.get("csrf"), nonce):
            raise CsrfRefused
        token = form.get("key", "").strip()
        errors: dict[str, str] = {}
        if not token:
            errors["key"] = "an operator API key is required"
        elif any(ch in token for ch in "\r\n"):
            errors["key"] = "must not contain CR or LF"
        else:
            principal = await _principal_of(console, token)
            if principal is None:
                errors["key"] = "not a valid API key (unknown or revoked)"
            elif not principal.operator:
                errors["key"] = "this is an account's key: the console needs an operator key"
        if errors:
            return _login(request, console, errors, status=401)
        cookie, _ = console.sessions.issue(token)
        response = RedirectResponse(f"{base(request)}/", status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path=(base(request) or "") + "/")
        return response

    @ui.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await console.form(request)
        response = RedirectResponse(f"{base(request)}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=(base(request) or "") + "/")
        return response

    @ui.get("/", include_in_schema=False)
    async def overview(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        store = app.store
        stats = await store.stats(now=time.time(), minutes=CHART_MINUTES, top=10)
        return console.page(
            request,
            "overview.html",
            csrf,
            counts=[(s, stats.counts.get(s, 0)) for s in State],
            stats=stats,
            chart=chart_of(stats.throughput),
            pauses=[p for p in await store.account_pauses() if p.paused_at is not None],
        )

    @ui.get("/queue", include_in_schema=False)
    async def queue(request: Request) -> HTMLResponse:
        _, csrf = await console.operator(request)
        query = request.query_params
        fields = single(query)
        context: dict[str, Any] = {
            "fields": fields,
            "states": query.getlist("state"),
            "reasons": query.getlist("reason"),
            "accounts": [a.id for a in await app.store.accounts()],
            "sends": [],
            "next_after": None,
            "query": [],
            "limit": 50,
            "replayable": False,
            "all_reasons": [r.value for r in Reason],
        }
        try:
            args = filter_args(fields, context["states"], context["reasons"])
            limit = _page_size(fields.get("limit", "50"))
            context["limit"] = limit
            flt = args.build(time.time())
            after = fields.get("after") or None
            sends = await app.store.list_sends(flt, limit=limit, after=after)
        except ValidationError as exc:
            return console.page(
                request, "queue.html", csrf, status=422, errors=errors_of(exc), **context
            )
        context["sends"] = sends
        context["query"] = filter_query(args)
        context["next_after"] = sends[-1].id if len(sends) == limit else None
        context["replayable"] = not args.empty and all(
            s in ("bounced", "failed") for s in args.states
        )
        return console.page(request, "queue.html", csrf, **context)

    @ui.get("/sends/{send_id}", include_in_schema=False)
    async def send_page(request: Request, send_id: str) -> HTMLResponse:
        _, csrf = await console.operator(request)
        try:
            story = await console.client.story(send_id)
        except NotFound:
            return console.page(request, "missing.html", csrf, status=404, what=f"send {send_id}")
        return console.page(request, "send.html", csrf, story=story, timeline=timeline(story))

    install_actions(ui, console)
    ui.add_middleware(SecurityHeaders)
    return ui


async def _principal_of(console: Console, token: str) -> Principal | None:
    return await authenticate(console.app.store, token, console.keys)


def _login(
    request: Request, console: Console, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    cookie, nonce = console.sessions.login_nonce()
    response = console.templates.TemplateResponse(
        request,
        "login.html",
        {"base": base(request), "csrf": nonce, "errors": errors, "notice": None},
        status_code=status,
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
    )
    _set_cookie(request, response, LOGIN_COOKIE, cookie, LOGIN_SECONDS)
    return response


def _page_size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size not in PAGE_SIZES:
        raise ValidationError("limit", f"must be one of {', '.join(map(str, PAGE_SIZES))}")
    return size


def timeline(story: Story) -> list[dict[str, Any]]:
    """Attempts and events of a send in the order they happened (pure)."""
    items: list[tuple[float, int, dict[str, Any]]] = []
    for number, attempt in enumerate(story.attempts, start=1):
        items.append((attempt.started_at, 0, {"kind": "attempt", "number": number, "a": attempt}))
    for event in story.events:
        items.append((event.at, 1, {"kind": "event", "e": event}))
    items.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in items]
