"""The /v1 routes the platform reads and steers its accounts' mail with:
listings (cursor pagination), suppressions, replays, account records.

Every route acts for the key's account (mailer.api.auth): listings hold
only that account's objects, and another account's object is answered 404
exactly like one that does not exist. ``/v1/accounts/{id}`` needs an
operator key (403 otherwise).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from mailer.accounts import account_change
from mailer.api.auth import Principal, Who, account_of, operator_only
from mailer.api.models import DistributionOut, ErrorOut
from mailer.client import Client, DistributionStatus
from mailer.errors import NotFound, ValidationError
from mailer.message.addresses import parse_address
from mailer.reasons import Reason, State
from mailer.store.models import Account, Send, SendFilter, Suppression
from mailer.store.rules import replay_filter

MAX_PAGE = 1000
MAX_SUPPRESSIONS = 10_000
REPLAY_BATCH = 1000

Id = Annotated[str, Path(min_length=1, max_length=200)]
After = Annotated[str, Query(max_length=200, description="cursor: `next` of the last page")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
AccountQuery = Annotated[
    str | None, Query(max_length=200, description="operator keys: one account's only")
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class DistributionPageOut(BaseModel):
    items: list[DistributionOut]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class SendItemOut(BaseModel):
    id: str
    distribution_id: str
    account: str
    recipient: str
    reference: str | None
    state: State
    reason: Reason
    attempts: int
    due_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, send: Send) -> SendItemOut:
        return cls(
            id=send.id,
            distribution_id=send.distribution_id,
            account=send.account,
            recipient=send.recipient,
            reference=send.reference,
            state=send.state,
            reason=send.reason,
            attempts=send.attempts,
            due_at=_time(send.due_at),
            updated_at=_time(send.updated_at),
        )


class SendPageOut(BaseModel):
    items: list[SendItemOut]
    next: str | None


class SuppressionOut(BaseModel):
    account: str
    address: str
    reason: Reason
    created_at: datetime | None
    detail: str | None

    @classmethod
    def of(cls, item: Suppression) -> SuppressionOut:
        return cls(
            account=item.account,
            address=item.address,
            reason=item.reason,
            created_at=_time(item.created_at),
            detail=item.detail,
        )


class SuppressionPageOut(BaseModel):
    items: list[SuppressionOut]
    next: str | None


class SuppressionIn(_In):
    address: Annotated[str, Field(min_length=3, max_length=320)]
    reason: Literal["suppressed-bounce", "suppressed-unsubscribe"] = "suppressed-unsubscribe"
    detail: Annotated[str | None, Field(max_length=1000)] = None


class SuppressionsIn(_In):
    account: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    entries: Annotated[list[SuppressionIn], Field(min_length=1, max_length=MAX_SUPPRESSIONS)]


class SuppressedOut(BaseModel):
    written: int


class ReplayIn(_In):
    account: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    distribution: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    state: list[Literal["bounced", "failed"]] = []
    reason: list[Reason] = []
    domain: Annotated[str | None, Field(min_length=1, max_length=253)] = None
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    include_suppressed: bool = False
    note: Annotated[str | None, Field(max_length=1000)] = None


class ReplayOut(BaseModel):
    dry_run: bool
    matching: int = Field(description="bounced or failed sends matching the filter")
    replayable: int
    requeued: int
    skipped: int = Field(description="left alone: their address is suppressed")
    unsuppressed: int
    held: int


class AccountOut(BaseModel):
    id: str
    name: str
    language: str
    rate_cap: int | None = Field(description="sends per minute across every worker")
    priority: str
    created_at: datetime | None

    @classmethod
    def of(cls, item: Account) -> AccountOut:
        return cls(
            id=item.id,
            name=item.name,
            language=item.language,
            rate_cap=item.rate_cap,
            priority=item.priority,
            created_at=_time(item.created_at),
        )


class AccountPatch(_In):
    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    language: Literal["de", "en"] | None = None
    rate_cap: Annotated[int | None, Field(ge=1, le=10_000_000)] = None
    clear_rate_cap: bool = False
    priority: Literal["high", "normal", "bulk"] | None = None


def _scope(principal: Principal, named: str | None) -> str | None:
    """None (every account) for an operator naming none."""
    if principal.operator and named is None:
        return None
    return account_of(principal, named)


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "no such id, or another account's"}
}
_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body cannot be read (not UTF-8)"},
}
_OPERATOR: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    403: {"model": ErrorOut, "description": "not an operator key"},
}


def platform_router(client: Client) -> APIRouter:
    router = APIRouter(responses=_NOT_FOUND)
    store = client.app.store

    async def owned_send(principal: Principal, send_id: str) -> Send:
        send = await store.send(send_id)
        if not principal.sees(send.account):
            raise NotFound("send", send_id)
        return send

    @router.get("/distributions")
    async def list_distributions(
        principal: Who, after: After = "", limit: Limit = 100, account: AccountQuery = None
    ) -> DistributionPageOut:
        """The account's distributions by id (oldest first), with counts."""
        found = await store.list_distributions(_scope(principal, account), after=after, limit=limit)
        items = [DistributionOut.of(DistributionStatus(d, await store.counts(d.id))) for d in found]
        return DistributionPageOut(items=items, next=found[-1].id if len(found) == limit else None)

    @router.get("/sends")
    async def list_sends(
        principal: Who,
        distribution: Annotated[str | None, Query(max_length=200)] = None,
        state: Annotated[list[State] | None, Query()] = None,
        reason: Annotated[list[Reason] | None, Query()] = None,
        recipient: Annotated[str | None, Query(max_length=320)] = None,
        after: After = "",
        limit: Limit = 100,
        account: AccountQuery = None,
    ) -> SendPageOut:
        """The account's sends by id, filtered by distribution, states,
        reasons and recipient address."""
        flt = SendFilter(
            states=tuple(state or ()),
            reasons=tuple(reason or ()),
            distribution_id=distribution,
            account=_scope(principal, account),
            recipient=recipient,
        )
        found = await store.list_sends(flt, limit=limit, after=after or None)
        return SendPageOut(
            items=[SendItemOut.of(s) for s in found],
            next=found[-1].id if len(found) == limit else None,
        )

    @router.get("/suppressions")
    async def list_suppressions(
        principal: Who, after: After = "", limit: Limit = 100, account: AccountQuery = None
    ) -> SuppressionPageOut:
        """The account's suppression list by address."""
        scope = account_of(principal, account)
        found = [s for s in await store.suppressions(scope) if s.address > after][:limit]
        return SuppressionPageOut(
            items=[SuppressionOut.of(s) for s in found],
            next=found[-1].address if len(found) == limit else None,
        )

    @router.post("/suppressions", responses=_BODY)
    async def add_suppressions(principal: Who, body: SuppressionsIn) -> SuppressedOut:
        """Add or replace up to 10,000 entries on the account's list, all or
        nothing; an invalid address is refused by index."""
        scope = account_of(principal, body.account)
        now = time.time()
        entries = [
            Suppression(
                scope,
                parse_address(f"entries[{i}].address", e.address).address.lower(),
                Reason(e.reason),
                now,
                e.detail,
            )
            for i, e in enumerate(body.entries)
        ]
        return SuppressedOut(written=await store.suppress_many(entries))

    @router.delete("/suppressions/{address}", status_code=204)
    async def remove_suppression(
        principal: Who,
        address: Annotated[str, Path(min_length=3, max_length=320)],
        account: AccountQuery = None,
    ) -> Response:
        """Take an address off the account's list (404 when not on it)."""
        if not await store.unsuppress(account_of(principal, account), address):
            raise NotFound("suppression", address)
        return Response(status_code=204)

    @router.post("/sends/{send_id}/replay")
    async def replay_send(
        principal: Who, send_id: Id, include_suppressed: bool = False
    ) -> ReplayOut:
        """Replay one bounced or failed send, as ``mailer replay`` does."""
        send = await owned_send(principal, send_id)
        if send.state not in (State.BOUNCED, State.FAILED):
            raise ValidationError("state", f"only bounced or failed sends replay, not {send.state}")
        flt = SendFilter(send_id=send.id, account=send.account)
        return await _replay(client, flt, dry_run=False, include_suppressed=include_suppressed)

    @router.post("/replays", responses=_BODY)
    async def replay(principal: Who, body: ReplayIn) -> ReplayOut:
        """Requeue the account's bounced/failed sends matching the filter
        (due now, attempts kept, a ``replayed`` event each); suppressed
        addresses are skipped unless ``include_suppressed``. ``dry_run``
        counts and changes nothing."""
        flt = SendFilter(
            states=tuple(State(s) for s in body.state),
            reasons=tuple(body.reason),
            distribution_id=body.distribution,
            domain=body.domain,
            since=None if body.since is None else body.since.timestamp(),
            until=None if body.until is None else body.until.timestamp(),
            account=_scope(principal, body.account),
        )
        return await _replay(
            client,
            flt,
            dry_run=body.dry_run,
            include_suppressed=body.include_suppressed,
            note=body.note,
        )

    @router.get("/accounts/{account_id}", responses=_OPERATOR)
    async def get_account(principal: Who, account_id: Id) -> AccountOut:
        """An account record (operator keys)."""
        operator_only(principal)
        return AccountOut.of(await store.account(account_id))

    @router.patch("/accounts/{account_id}", responses={**_OPERATOR, **_BODY})
    async def patch_account(principal: Who, account_id: Id, body: AccountPatch) -> AccountOut:
        """Change an account's name, language, rate cap or default priority
        (operator keys)."""
        operator_only(principal)
        change = account_change(
            name=body.name,
            language=body.language,
            rate_cap=body.rate_cap,
            clear_rate_cap=body.clear_rate_cap,
            priority_name=body.priority,
        )
        return AccountOut.of(await store.update_account(account_id, change))

    return router


async def _replay(
    client: Client,
    flt: SendFilter,
    *,
    dry_run: bool,
    include_suppressed: bool,
    note: str | None = None,
) -> ReplayOut:
    """The operator's replay (:meth:`mailer.client.Client.replay`), the
    same as the CLI's and the console's: it refuses the same filters and
    notes. Raises ValidationError."""
    replay_filter(flt)  # refuses states other than bounced and failed
    if dry_run:
        report, _ = await client.replay_preview(flt, include_suppressed=include_suppressed)
    else:
        report = await client.replay(
            flt, note=note, include_suppressed=include_suppressed, batch=REPLAY_BATCH
        )
    return ReplayOut(
        dry_run=dry_run,
        matching=report.matching,
        replayable=report.replayable,
        requeued=report.requeued,
        skipped=report.skipped,
        unsuppressed=report.unsuppressed,
        held=report.held,
    )
