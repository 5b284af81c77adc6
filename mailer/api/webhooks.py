"""The /v1/webhooks routes: an account's endpoints, their delivery log,
replay, secret rotation and a test request.

An account's key acts for its own account; an operator key names the
account (the ``account`` body field on creation, the ``account`` query
parameter on every other route). Another account's endpoint is a 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from mailer.accounts.keys import Principal
from mailer.api.errors import ApiError
from mailer.api.models import ErrorOut
from mailer.api.routes import UNAUTHORIZED
from mailer.app import App
from mailer.errors import DNSError, WebhookFailed
from mailer.store.webhooks import DeliveryRecord, Endpoint
from mailer.webhooks.endpoints import MAX_ACCOUNT, MAX_DESCRIPTION, Created
from mailer.webhooks.payload import EVENT_TYPES, event_type
from mailer.webhooks.policy import MAX_URL

AccountParam = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_ACCOUNT,
        description="the account the endpoint belongs to (operator keys; an account's key "
        "acts for its own account)",
    ),
]


def _acting_for(principal: Principal, named: str | None) -> str:
    """The account a request acts for. Raises ApiError: 422 when an
    operator key names none, 404 when an account's key names another."""
    if principal.operator:
        if named is None:
            raise ApiError(422, "account", "required: an operator key names the account")
        return named
    assert principal.account is not None  # an account's key always has one
    if named is not None and named != principal.account:
        raise ApiError(404, "webhook", "no such endpoint")
    return principal.account


def _account(request: Request, account: AccountParam = None) -> str:
    principal: Principal = request.state.principal  # set by the router's auth dependency
    return _acting_for(principal, account)


Account = Annotated[str, Depends(_account)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    422: {"model": ErrorOut, "description": "invalid input; `field` says where"},
}
# routes that read a JSON body answer 400 for one that cannot be read
_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body cannot be read (not UTF-8, not JSON)"}
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such endpoint for this account"}
}
_LOOKUP: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorOut, "description": "the URL's host could not be looked up now"}
}


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str | None = Field(default=None, min_length=1, max_length=MAX_ACCOUNT)
    url: str = Field(max_length=MAX_URL, description="https:// (http only in development)")
    event_types: list[str] = Field(
        default=[], max_length=len(EVENT_TYPES), description=f"any of {list(EVENT_TYPES)}; [] = all"
    )
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)


class WebhookPatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=MAX_URL)
    event_types: list[str] | None = Field(default=None, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    enabled: bool | None = Field(
        default=None, description="true re-enables a disabled endpoint, its batch retried anew"
    )


class WebhookOut(BaseModel):
    id: str
    account: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    cursor: int
    failures: int
    failing_since: datetime | None
    next_attempt_at: datetime | None
    previous_secret_until: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, e: Endpoint) -> WebhookOut:
        return cls(
            id=e.id,
            account=e.account,
            url=e.url,
            description=e.description,
            event_types=[event_type(state) for state in e.event_types],
            enabled=e.enabled,
            disabled_reason=e.disabled_reason,
            cursor=e.cursor,
            failures=e.failures,
            failing_since=_time(e.failing_since),
            next_attempt_at=_time(e.next_attempt_at),
            previous_secret_until=_time(e.previous_until),
            created_at=datetime.fromtimestamp(e.created_at, UTC),
        )


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="whsec_…: shown once; verify signatures with it")

    @classmethod
    def created(cls, c: Created) -> WebhookCreatedOut:
        return cls(**WebhookOut.of(c.endpoint).model_dump(), secret=c.secret)


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str
    first_seq: int
    last_seq: int
    events: int
    at: datetime
    status: int | None
    latency_ms: float
    outcome: str
    response_excerpt: str
    error: str | None

    @classmethod
    def of(cls, d: DeliveryRecord) -> DeliveryOut:
        return cls(
            id=d.id,
            webhook_id=d.webhook_id,
            first_seq=d.first_seq,
            last_seq=d.last_seq,
            events=d.events,
            at=datetime.fromtimestamp(d.at, UTC),
            status=d.status,
            latency_ms=round(d.latency * 1000, 3),
            outcome=d.outcome,
            response_excerpt=d.excerpt,
            error=d.error,
        )


class TestOut(BaseModel):
    status: int
    latency_ms: float
    response_excerpt: str


@asynccontextmanager
async def _url_checks() -> AsyncIterator[None]:
    """A failed lookup of the URL's host is the service's trouble (503),
    not the caller's."""
    try:
        yield
    except DNSError as exc:
        raise ApiError(503, "url", f"could not look up the host now: {exc}") from exc


def webhooks_router(app: App, auth: Callable[..., Awaitable[Principal]]) -> APIRouter:
    router = APIRouter(
        prefix="/v1/webhooks", dependencies=[Depends(auth)], tags=["webhooks"], responses=_ERRORS
    )
    hooks = app.webhooks()

    @router.post("", status_code=201, responses={**_LOOKUP, **_BODY})
    async def create_webhook(request: Request, body: WebhookIn) -> WebhookCreatedOut:
        """Register an endpoint. The answer holds its signing secret, once.
        It gets the account's events from now on, signed as Standard
        Webhooks says, in batches (a JSON array of up to 100 events)."""
        async with _url_checks():
            created = await hooks.add(
                _acting_for(request.state.principal, body.account),
                body.url,
                event_types=body.event_types,
                description=body.description,
            )
        return WebhookCreatedOut.created(created)

    @router.get("")
    async def list_webhooks(account: Account) -> list[WebhookOut]:
        """The account's endpoints."""
        return [WebhookOut.of(e) for e in await hooks.endpoints(account)]

    @router.get("/{webhook_id}", responses=_NOT_FOUND)
    async def get_webhook(webhook_id: str, account: Account) -> WebhookOut:
        return WebhookOut.of(await hooks.get(webhook_id, account))

    @router.patch("/{webhook_id}", responses={**_NOT_FOUND, **_LOOKUP, **_BODY})
    async def update_webhook(webhook_id: str, account: Account, body: WebhookPatchIn) -> WebhookOut:
        """Change the URL, event types, description, or re-enable."""
        async with _url_checks():
            endpoint = await hooks.update(
                webhook_id,
                account,
                url=body.url,
                event_types=body.event_types,
                description=body.description,
                enabled=body.enabled,
            )
        return WebhookOut.of(endpoint)

    @router.delete("/{webhook_id}", status_code=204, responses=_NOT_FOUND)
    async def delete_webhook(webhook_id: str, account: Account) -> Response:
        await hooks.remove(webhook_id, account)
        return Response(status_code=204)

    @router.post("/{webhook_id}/rotate", responses=_NOT_FOUND)
    async def rotate_secret(webhook_id: str, account: Account) -> WebhookCreatedOut:
        """A new secret (in the answer, once). The old one keeps signing
        beside it for 24 hours ([webhooks] rotation_overlap)."""
        return WebhookCreatedOut.created(await hooks.rotate(webhook_id, account))

    @router.get("/{webhook_id}/deliveries", responses=_NOT_FOUND)
    async def list_deliveries(
        webhook_id: str,
        account: Account,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[int | None, Query(ge=1, description="page on: the last id seen")] = None,
    ) -> list[DeliveryOut]:
        """Delivery attempts, newest first: status, latency, the start of
        the reply."""
        found = await hooks.deliveries(webhook_id, account, limit=limit, before=before)
        return [DeliveryOut.of(d) for d in found]

    @router.post("/{webhook_id}/replay", responses=_NOT_FOUND)
    async def replay(
        webhook_id: str,
        account: Account,
        from_: Annotated[
            int, Query(alias="from", ge=0, le=2**62, description="feed cursor (an event seq)")
        ],
    ) -> WebhookOut:
        """Send the account's events after ``from`` again, in order."""
        return WebhookOut.of(await hooks.replay(webhook_id, account, from_))

    @router.post(
        "/{webhook_id}/test",
        responses={**_NOT_FOUND, **_LOOKUP, 502: {"model": ErrorOut, "description": "no reply"}},
    )
    async def test_webhook(webhook_id: str, account: Account) -> TestOut:
        """POST one signed ``webhook.test`` event now and report the reply."""
        async with _url_checks():
            try:
                reply = await hooks.test(webhook_id, account)
            except WebhookFailed as exc:
                raise ApiError(502, "url", f"no reply: {exc}") from exc
        return TestOut(
            status=reply.status,
            latency_ms=round(reply.latency * 1000, 3),
            response_excerpt=reply.excerpt,
        )

    return router
