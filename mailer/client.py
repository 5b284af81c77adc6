"""The in-process API: the operations of the HTTP API for the platform's own
Python code and for tests. The HTTP routes (:mod:`mailer.api.routes`) are a
thin layer over this class.

    async with App(config) as app:
        client = Client(app)
        accepted = await client.enqueue(distribution, recipients, idempotency_key="req-17")
        status = await client.distribution(accepted.distribution_id)
"""

from __future__ import annotations

import functools
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
from mailer.message.unsubscribe import UnsubscribeLinks, UnsubscribeToken, links_from_config
from mailer.reasons import State
from mailer.store.models import Attempt, Distribution, Event, NewDistribution, Send

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
    "SendStatus",
    "Unsubscribed",
    "request_hash",
]


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

    async def distribution(self, distribution_id: str) -> DistributionStatus:
        """Raises NotFound for an unknown id."""
        distribution = await self.app.store.distribution(distribution_id)
        return DistributionStatus(distribution, await self.app.store.counts(distribution_id))

    async def cancel(self, distribution_id: str) -> Cancelled:
        """Cancel what is not yet sent. Raises NotFound for an unknown id."""
        cancelled = await self.app.store.cancel(distribution_id, now=self.clock())
        counts = await self.app.store.counts(distribution_id)
        return Cancelled(distribution_id, cancelled, counts)

    async def events(self, after: int = 0, limit: int = 100) -> EventPage:
        """Events with a sequence number above ``after``, oldest first.

        Raises ValidationError("after" / "limit") for a negative cursor or
        a limit outside 1-1000.
        """
        if after < 0:
            raise ValidationError("after", "must not be negative")
        if not 1 <= limit <= MAX_EVENTS_PAGE:
            raise ValidationError("limit", f"must be between 1 and {MAX_EVENTS_PAGE}")
        events = await self.app.store.events(after=after, limit=limit)
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
