"""``GET /v1/stats``: what came back after the 250, per account. The
circuit breaker's rolling hard-bounce and complaint rates over its window
(mailer.feedback.breaker) and whether the account is paused: the figures
``mailer bounces accounts`` and ``mailer stats`` print.

An account's key sees its own account only; naming another account is a
404, as if it did not exist. An operator key sees every account with sends
finished in the window or paused now, or the one it names (404 when there
is no such account).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mailer.api.auth import Who, account_of
from mailer.api.models import ErrorOut
from mailer.client import Client
from mailer.feedback.circuit import Breaker, Standing

__all__ = ["stats_router"]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such account, or another account's"}
}


class AccountRatesOut(BaseModel):
    account: str
    sends: int = Field(
        description="sends in the window: finished, with our envelope (only their bounces "
        "reach us), made since the account's last release"
    )
    hard_bounces: int = Field(description="of them bounced, at SMTP time or later")
    complaints: int = Field(description="of them complained about (abuse or fraud reports)")
    hard_bounce_rate: float = Field(description="hard_bounces / sends (0 without sends)")
    complaint_rate: float = Field(description="complaints / sends (0 without sends)")
    judged: bool = Field(description="the window holds enough sends (`min_sends`) to trip")
    paused: bool = Field(description="the breaker holds the account's unsent mail")
    paused_at: datetime | None
    pause_detail: str | None = Field(description="which rate reached its threshold")

    @classmethod
    def of(cls, standing: Standing, min_sends: int) -> AccountRatesOut:
        j, pause = standing.judgement, standing.pause
        return cls(
            account=standing.account,
            sends=j.sends,
            hard_bounces=j.hard_bounces,
            complaints=j.complaints,
            hard_bounce_rate=round(j.bounce_rate, 6),
            complaint_rate=round(j.complaint_rate, 6),
            judged=j.sends >= min_sends,
            paused=pause is not None,
            paused_at=(
                datetime.fromtimestamp(pause.paused_at, UTC)
                if pause is not None and pause.paused_at is not None
                else None
            ),
            pause_detail=pause.detail if pause is not None else None,
        )


class BreakerOut(BaseModel):
    hard_bounce_rate: float = Field(description="the breaker trips at this rate or above")
    complaint_rate: float = Field(description="the breaker trips at this rate or above")
    min_sends: int = Field(description="sends the window must hold before it judges")
    window_sends: int = Field(description="the window: at most the last this many sends")
    window_days: float = Field(description="the window: at most the sends of these days")


class StatsOut(BaseModel):
    breaker: BreakerOut
    accounts: list[AccountRatesOut] = Field(description="by account id")


AccountQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        description="one account's only (an account's key: its own, any other is a 404)",
    ),
]


def stats_router(client: Client) -> APIRouter:
    router = APIRouter()
    config = client.app.config.feedback.breaker

    @router.get("/stats", responses=_NOT_FOUND)
    async def stats(principal: Who, account: AccountQuery = None) -> StatsOut:
        """Rolling hard-bounce and complaint rates per account over the
        circuit breaker's window, and whether each account is paused."""
        breaker = Breaker(client.app.store, config, clock=client.clock)
        if principal.operator and account is None:
            standings = await breaker.standings()
        else:
            scope = account_of(principal, account)
            await client.app.store.account(scope)  # NotFound: no such account
            standings = await breaker.standings([scope])
        return StatsOut(
            breaker=BreakerOut(
                hard_bounce_rate=config.bounce_rate,
                complaint_rate=config.complaint_rate,
                min_sends=config.min_sends,
                window_sends=config.window_sends,
                window_days=config.window_days,
            ),
            accounts=[AccountRatesOut.of(s, config.min_sends) for s in standings],
        )

    return router
