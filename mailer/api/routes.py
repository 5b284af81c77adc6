"""The /v1 routes: a thin HTTP layer over :class:`mailer.client.Client`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from mailer.api.auth import Principal, Who, account_of
from mailer.api.body import OPENAPI_BODY, distribution_in
from mailer.api.metrics import ApiMetrics
from mailer.api.models import (
    AcceptedOut,
    CancelledOut,
    DistributionOut,
    ErrorOut,
    EventPageOut,
    SendOut,
    accepted_json,
)
from mailer.api.platform import platform_router
from mailer.api.stats import stats_router
from mailer.client import MAX_EVENTS_PAGE, Client, DistributionStatus
from mailer.errors import NotFound
from mailer.intake import MAX_IDEMPOTENCY_KEY

# SQLite integers are 64-bit; a larger cursor is a client error, not a crash
MAX_CURSOR = 2**62

UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no valid API key"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **UNAUTHORIZED,
    422: {"model": ErrorOut, "description": "invalid input; `field` says where"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such id"}
}

Id = Annotated[str, Path(min_length=1, max_length=200)]


def v1_router(
    client: Client, metrics: ApiMetrics, auth: Callable[..., Awaitable[Principal]]
) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth)], responses=_ERRORS)

    async def owned(principal: Principal, distribution_id: str) -> DistributionStatus:
        # another account's distribution is answered like one that does not exist
        found = await client.distribution(distribution_id)
        if not principal.sees(found.distribution.account):
            raise NotFound("distribution", distribution_id)
        return found

    # The body is read by distribution_in, not by FastAPI (which would
    # decode it into Python objects first), and the answer is written
    # directly: OPENAPI_BODY and response_model document both.
    @router.post(
        "/distributions",
        status_code=202,
        response_model=AcceptedOut,
        openapi_extra=OPENAPI_BODY,
        responses={
            400: {"model": ErrorOut, "description": "the body cannot be read (not UTF-8)"},
            409: {"model": ErrorOut, "description": "Idempotency-Key used with another body"},
            413: {"model": ErrorOut, "description": "request body too large"},
        },
    )
    async def create_distribution(
        request: Request,
        principal: Who,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                max_length=MAX_IDEMPOTENCY_KEY,
                description="a retry with the same key and body returns the first answer",
            ),
        ] = None,
    ) -> Response:
        """Enqueue a distribution. Invalid recipient addresses are rejected
        by index; the valid ones are stored in one transaction."""
        body = await distribution_in(request)
        account = account_of(principal, body.account)
        accepted = await client.enqueue(
            body.distribution(account), body.recipients, idempotency_key=idempotency_key
        )
        response = Response(accepted_json(accepted), 202, media_type="application/json")
        if accepted.replayed:
            response.headers["Idempotency-Replayed"] = "true"
        else:
            metrics.recipients.labels("accepted").inc(len(accepted.sends))
            metrics.recipients.labels("rejected").inc(len(accepted.rejected))
        return response

    @router.get("/distributions/{distribution_id}", responses=_NOT_FOUND)
    async def get_distribution(principal: Who, distribution_id: Id) -> DistributionOut:
        """A distribution and how many of its sends are in each state."""
        return DistributionOut.of(await owned(principal, distribution_id))

    @router.delete("/distributions/{distribution_id}", responses=_NOT_FOUND)
    async def cancel_distribution(principal: Who, distribution_id: Id) -> CancelledOut:
        """Cancel the sends not yet sent (queued, deferred, held); sends in
        an SMTP transaction finish."""
        await owned(principal, distribution_id)
        return CancelledOut.of(await client.cancel(distribution_id))

    @router.get("/sends/{send_id}", responses=_NOT_FOUND)
    async def get_send(principal: Who, send_id: Id) -> SendOut:
        """One send: state, sender identity decision, attempts (MX host,
        TLS version, SMTP reply) and events."""
        found = await client.send(send_id)
        if not principal.sees(found.send.account):
            raise NotFound("send", send_id)
        return SendOut.of(found)

    @router.get("/events")
    async def get_events(
        principal: Who,
        after: Annotated[int, Query(ge=0, le=MAX_CURSOR, description="cursor: `next`")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
        account: Annotated[
            str | None, Query(max_length=200, description="operator keys: one account's only")
        ] = None,
    ) -> EventPageOut:
        """State changes in order, resumable: read on with ``after=next``;
        no event is skipped or repeated across pages. An account's key reads
        its own account's events."""
        scope = account if principal.operator else account_of(principal, account)
        return EventPageOut.of(await client.events(after, limit, account=scope))

    router.include_router(platform_router(client))
    router.include_router(stats_router(client))
    return router
