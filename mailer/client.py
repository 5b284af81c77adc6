"""The in-process API: the operations of the HTTP API for the platform's own
Python code and for tests. The HTTP routes (:mod:`mailer.api.routes`) are a
thin layer over this class.

    async with App(config) as app:
        client = Client(app)
        accepted = await client.enqueue(distribution, recipients, idempotency_key="req-17")
        status = await client.distribution(accepted.distribution_id)
"""

from __future__ import annotations

import csv
import functools
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailer.app import App
from mailer.enqueue import Recipient
from mailer.errors import IdempotencyConflict, ValidationError
from mailer.intake import (
    Accepted,
    AcceptedSend,
    Intake,
    NoValidRecipient,
    request_hash,
)
from mailer.message.addresses import parse_address
from mailer.message.unsubscribe import UnsubscribeLinks, UnsubscribeToken, links_from_config
from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    Distribution,
    Event,
    Hold,
    HoldKind,
    NewDistribution,
    Send,
    SendFilter,
    Suppression,
)
from mailer.store.rules import hold_value, replay_filter

MAX_EVENTS_PAGE = 1000

__all__ = [
    "Accepted",
    "AcceptedSend",
    "Cancelled",
    "Client",
    "DistributionStatus",
    "EventPage",
    "IdempotencyConflict",
    "NoValidRecipient",
    "ReplayReport",
    "SendStatus",
    "Story",
    "Unsubscribed",
    "parse_suppression_csv",
    "request_hash",
]

#: The reasons an operator may put an address on a suppression list with.
SUPPRESSION_REASONS = (Reason.SUPPRESSED_BOUNCE, Reason.SUPPRESSED_UNSUBSCRIBE)


@dataclass(frozen=True)
class SendStatus:
    send: Send
    attempts: list[Attempt]
    events: list[Event]


@dataclass(frozen=True)
class DistributionStatus:
    distribution: Distribution
    counts: dict[State, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Cancelled:
    distribution_id: str
    cancelled: int
    counts: dict[State, int]


@dataclass(frozen=True)
class EventPage:
    """Events after a cursor, in order; ``next`` is the cursor of the next
    page (the same cursor again when nothing new happened)."""

    events: list[Event]
    next: int


@dataclass(frozen=True)
class Unsubscribed:
    account: str
    address: str
    changed: bool


@dataclass(frozen=True)
class Story:
    """One send's whole story (``mailer queue show``, the console's send
    page): its distribution, attempts, events, and the holds and
    suppressions that cover it."""

    send: Send
    distribution: Distribution
    attempts: list[Attempt]
    events: list[Event]
    holds: list[Hold]
    suppressions: list[Suppression]


@dataclass
class ReplayReport:
    """What a replay found and did (a dry run only counts)."""

    matching: int = 0
    replayable: int = 0
    suppressed: int = 0
    requeued: int = 0
    skipped: int = 0
    unsuppressed: int = 0
    held: int = 0
    dry_run: bool = False


def parse_suppression_csv(
    text: str, *, account: str, reason: Reason, now: float, detail: str | None = None
) -> list[Suppression]:
    """Rows ``address[,reason][,account]`` (a header row naming those columns
    is optional); an empty reason or account cell takes ``reason`` /
    ``account``. Pure.

    Raises ValidationError("line N", ...) for the first bad line, and
    ValidationError("csv", ...) when there is no address at all.
    """
    reader = csv.reader(io.StringIO(text))
    columns: tuple[str, ...] = ("address", "reason", "account")
    out: list[Suppression] = []
    first = True
    end = 0
    for row in reader:
        # a quoted cell may span lines: name the line the row starts on
        where, end = f"line {end + 1}", reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if first and cells[0].lower() in ("address", "email"):
            first = False
            names = tuple("address" if c.lower() == "email" else c.lower() for c in cells)
            unknown = [n for n in names if n not in columns]
            if unknown or len(set(names)) != len(names):
                raise ValidationError(where, f"header columns are {', '.join(columns)}")
            columns = names
            continue
        first = False
        if len(cells) > len(columns):
            raise ValidationError(
                where, f"{len(cells)} columns; expected {', '.join(columns)} at most"
            )
        values = dict(zip(columns, cells, strict=False))
        address = parse_address(where, values.get("address", "")).address
        why = values.get("reason") or reason.value
        if why not in {r.value for r in SUPPRESSION_REASONS}:
            allowed = " or ".join(r.value for r in SUPPRESSION_REASONS)
            raise ValidationError(where, f"reason {why!r} is not {allowed}")
        owner = values.get("account") or account
        out.append(Suppression(owner, address.lower(), Reason(why), now, detail))
    if not out:
        raise ValidationError("csv", "no addresses")
    return out


class Client:
    """The service's operations over an open :class:`~mailer.app.App`.

    ``unsubscribe`` makes the service's own unsubscribe links (default:
    from ``api.secret`` and ``api.public_url`` of the app's config); with
    none, distributions without an unsubscribe URL get no List-Unsubscribe
    and ``unsubscribe()`` refuses every token.
    """

    def __init__(
        self,
        app: App,
        *,
        unsubscribe: UnsubscribeLinks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        api = app.config.api
        self.links = unsubscribe or links_from_config(
            api.secret, api.public_url, enabled=api.unsubscribe
        )
        self.clock = clock

    @functools.cached_property
    def intake(self) -> Intake:
        """The enqueue path, made on first use: the app may open after the
        client is made."""
        return Intake(
            self.app.store,
            self.app.config.hostname,
            self.links,
            self.clock,
            idempotency_ttl=self.app.config.api.idempotency_ttl,
        )

    # enqueue -----------------------------------------------------------------

    async def enqueue(
        self,
        distribution: NewDistribution,
        recipients: Sequence[Recipient],
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Validate and store; durable on return. Raises what
        :meth:`mailer.intake.Intake.enqueue` raises."""
        return await self.intake.enqueue(distribution, recipients, idempotency_key=idempotency_key)

    # reading -----------------------------------------------------------------

    async def send(self, send_id: str) -> SendStatus:
        """Raises NotFound for an unknown id."""
        send = await self.app.store.send(send_id)
        attempts = await self.app.store.attempts(send_id)
        events = await self.app.store.events(send_id=send_id, limit=MAX_EVENTS_PAGE)
        return SendStatus(send, attempts, events)

    async def story(self, send_id: str) -> Story:
        """Everything known about one send. Raises NotFound."""
        store = self.app.store
        send = await store.send(send_id)
        mine = {("domain", send.domain), ("distribution", send.distribution_id)}
        holds = [h for h in await store.holds() if (h.kind, h.value) in mine]
        return Story(
            send=send,
            distribution=await store.distribution(send.distribution_id),
            attempts=await store.attempts(send_id),
            events=await store.events(send_id=send_id, limit=10_000),
            holds=holds,
            suppressions=await store.suppression_for(send.account, send.recipient),
        )

    async def distribution(self, distribution_id: str) -> DistributionStatus:
        """Raises NotFound for an unknown id."""
        distribution = await self.app.store.distribution(distribution_id)
        return DistributionStatus(distribution, await self.app.store.counts(distribution_id))

    async def cancel(self, distribution_id: str) -> Cancelled:
        """Cancel what is not yet sent. Raises NotFound for an unknown id."""
        cancelled = await self.app.store.cancel(distribution_id, now=self.clock())
        counts = await self.app.store.counts(distribution_id)
        return Cancelled(distribution_id, cancelled, counts)

    async def events(
        self, after: int = 0, limit: int = 100, *, account: str | None = None
    ) -> EventPage:
        """Events with a sequence number above ``after``, oldest first.

        Raises ValidationError("after" / "limit") for a negative cursor or
        a limit outside 1-1000.
        """
        if after < 0:
            raise ValidationError("after", "must not be negative")
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise ValidationError("limit", f"must be between 1 and {MAX_EVENTS_PAGE}")
        events = await self.app.store.events(after=after, limit=limit, account=account)
        return EventPage(events, events[-1].seq if events else after)

    # unsubscribe -------------------------------------------------------------

    def unsubscribe_target(self, token: str) -> UnsubscribeToken:
        """Who ``token`` unsubscribes. Raises ValidationError("token", ...)
        for a token that is malformed, forged, or when the service makes no
        unsubscribe links."""
        if self.links is None:
            raise ValidationError("token", "this service issues no unsubscribe links")
        return self.links.read(token)

    async def unsubscribe(self, token: str) -> Unsubscribed:
        """Suppress the token's address for its account (reason
        ``suppressed-unsubscribe``) with an event on the send that carried
        it. Repeating it changes nothing. Raises ValidationError("token",
        ...) as :meth:`unsubscribe_target`."""
        target = self.unsubscribe_target(token)
        changed = await self.app.store.unsubscribe(
            target.account,
            target.address,
            now=self.clock(),
            send_id=target.send_id,
            detail="one-click unsubscribe (RFC 8058)",
        )
        return Unsubscribed(target.account, target.address, changed)

    # operator actions (the CLI's verbs and the console's forms) -----------------

    async def replay_preview(
        self, flt: SendFilter, *, include_suppressed: bool = False, sample: int = 0
    ) -> tuple[ReplayReport, list[Send]]:
        """What a replay of ``flt`` would do, and the first ``sample``
        candidates by id; changes nothing. Raises ValidationError for a
        filter naming a state other than bounced or failed."""
        store = self.app.store
        plan = await store.replay_plan(flt)
        report = ReplayReport(
            matching=plan.matching,
            replayable=plan.replayable(include_suppressed),
            suppressed=plan.suppressed,
            dry_run=True,
        )
        shown = await store.list_sends(replay_filter(flt), limit=sample) if sample else []
        return report, shown

    async def replay(
        self,
        flt: SendFilter,
        *,
        note: str | None = None,
        include_suppressed: bool = False,
        batch: int = 1000,
        progress: Callable[[ReplayReport], None] | None = None,
    ) -> ReplayReport:
        """Requeue the bounced and failed sends matching ``flt`` a batch at
        a time (a ``replayed`` event each, with ``note``); ``progress`` is
        called after every batch. Raises ValidationError as
        :meth:`replay_preview`, and for a note with a line break."""
        _one_line("note", note)
        store = self.app.store
        plan = await store.replay_plan(flt)
        report = ReplayReport(
            matching=plan.matching,
            replayable=plan.replayable(include_suppressed),
            suppressed=plan.suppressed,
        )
        after: str | None = None
        while True:
            done = await store.replay(
                flt,
                now=self.clock(),
                note=note,
                include_suppressed=include_suppressed,
                after=after,
                limit=batch,
            )
            report.requeued += done.requeued
            report.skipped += done.skipped
            report.unsuppressed += done.unsuppressed
            report.held += done.held
            if progress is not None:
                progress(report)
            after = done.last_id
            if after is None:
                return report

    async def hold(self, kind: HoldKind, value: str, *, note: str | None = None) -> tuple[str, int]:
        """Hold a recipient domain or a distribution; returns the value as
        held (normalised) and how many waiting sends became held. Raises
        ValidationError for a bad kind, value or note, NotFound for an
        unknown distribution."""
        value = hold_value(kind, value)
        _one_line("note", note)
        return value, await self.app.store.hold(kind, value, now=self.clock(), note=note)

    async def release(self, kind: HoldKind, value: str) -> int:
        """Release a hold; how many sends were queued again. Raises
        NotFound when there is no such hold."""
        return await self.app.store.release_hold(kind, hold_value(kind, value), now=self.clock())

    async def hold_account(self, account: str, *, note: str | None = None) -> int:
        """Pause an account as the circuit breaker does: its waiting sends
        are held and its new ones start held until released. Raises
        NotFound for an unknown account, ValidationError for a bad note."""
        _one_line("note", note)
        await self.app.store.account(account)
        return await self.app.store.pause_account(
            account, now=self.clock(), detail=note or "held by an operator"
        )

    async def release_account(self, account: str) -> int:
        """Lift an account's pause; how many sends were queued. Raises
        NotFound when the account is not paused."""
        return await self.app.store.release_account(account, now=self.clock())

    async def suppress(self, entries: Sequence[Suppression], *, replace: bool = False) -> int:
        """Put ``entries`` on their lists, all or nothing; how many were
        written (an entry already there gives way only to a stronger reason
        unless ``replace``)."""
        for entry in entries:
            _one_line("note", entry.detail)
        return await self.app.store.suppress_many(entries, replace=replace)

    async def unsuppress(self, account: str, addresses: Sequence[str]) -> int:
        """Take ``addresses`` off ``account``'s list (``""``: the global
        one); how many were there."""
        removed = 0
        for address in addresses:
            removed += await self.app.store.unsuppress(account, address)
        return removed


def _one_line(field: str, value: str | None) -> None:
    """Raises ValidationError when ``value`` has a line break: notes end up
    in events, logs and header-like lines."""
    if value is not None and any(ch in value for ch in "\r\n"):
        raise ValidationError(field, "must not contain CR or LF")
