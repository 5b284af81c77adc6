"""The in-process API: the operations of the HTTP API for the platform's own
Python code and for tests. The HTTP routes (:mod:`mailer.api.routes`) are a
thin layer over this class.

    async with App(config) as app:
        client = Client(app)
        accepted = await client.enqueue(distribution, recipients, idempotency_key="req-17")
        status = await client.distribution(accepted.distribution_id)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

from mailer.api.tokens import UnsubscribeLinks, UnsubscribeToken, links_from_config
from mailer.app import App
from mailer.enqueue import (
    CompiledTemplates,
    Recipient,
    Rejected,
    check_distribution,
    check_recipients,
)
from mailer.errors import ValidationError
from mailer.reasons import State
from mailer.store.models import (
    Attempt,
    Distribution,
    Event,
    Idempotency,
    IdempotencyRecord,
    NewDistribution,
    NewSend,
    Send,
)

MAX_EVENTS_PAGE = 1000
MAX_IDEMPOTENCY_KEY = 255
_RESERVED = "unsubscribe_url"
_PROBE_ADDRESS = "probe@unsubscribe.invalid"

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


class IdempotencyConflict(ValidationError):
    """The Idempotency-Key was used before with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__("Idempotency-Key", f"{key!r} was used with a different request")


class NoValidRecipient(ValidationError):
    """Every recipient was rejected; ``rejected`` says why, by index."""

    def __init__(self, rejected: Sequence[Rejected]) -> None:
        first = rejected[0]
        super().__init__(first.field, f"no valid recipient ({first.reason})")
        self.rejected = list(rejected)


@dataclass(frozen=True)
class AcceptedSend:
    index: int
    id: str


@dataclass(frozen=True)
class Accepted:
    """An enqueued distribution: one send per accepted recipient (by index
    in the request) and the rejected ones. ``replayed`` is True when an
    earlier request with the same idempotency key answered."""

    distribution_id: str
    sends: list[AcceptedSend]
    rejected: list[Rejected]
    replayed: bool = False


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


def request_hash(distribution: NewDistribution, recipients: Sequence[Recipient]) -> str:
    """SHA-256 over a canonical form of the request: equal for requests
    that say the same thing, whatever their JSON spelling was."""
    canonical = json.dumps(
        {
            "distribution": asdict(distribution),
            "recipients": [[r.email, r.name, dict(r.variables), r.reference] for r in recipients],
        },
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise ValidationError(
            "Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters"
        )
    return key


def _accepted(
    distribution_id: str,
    send_ids: Sequence[str],
    rejected: list[Rejected],
    *,
    replayed: bool,
) -> Accepted:
    skipped = {r.index for r in rejected}
    indices = [i for i in range(len(send_ids) + len(rejected)) if i not in skipped]
    sends = [AcceptedSend(i, s) for i, s in zip(indices, send_ids, strict=True)]
    return Accepted(distribution_id, sends, rejected, replayed)


def _replay(record: IdempotencyRecord, *, replayed: bool = True) -> Accepted:
    rejected = [Rejected(**item) for item in json.loads(record.data)["rejected"]]
    return _accepted(record.distribution_id, record.send_ids, rejected, replayed=replayed)


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
        self.links = unsubscribe or links_from_config(api.secret, api.public_url)
        self.clock = clock
        self.templates = CompiledTemplates()

    # enqueue -----------------------------------------------------------------

    async def enqueue(
        self,
        distribution: NewDistribution,
        recipients: Sequence[Recipient],
        *,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Validate and store; durable on return.

        Raises ValidationError (or TemplateError) naming the field when the
        request is malformed, nothing stored; NoValidRecipient when every
        recipient was rejected; IdempotencyConflict when the key was used
        with a different request. A request repeated with its key returns
        the first answer and stores nothing new.
        """
        idempotency = None
        if idempotency_key is not None:
            key = _check_key(idempotency_key)
            idempotency = Idempotency(key, request_hash(distribution, recipients))
            record = await self.app.store.idempotent(distribution.account, key)
            if record is not None:
                return self._answer(record, idempotency)
        # Rendering every recipient's templates takes a while for 10,000 of
        # them; off the loop, the API and an engine in the same process keep
        # going meanwhile.
        sends, rejected = await asyncio.to_thread(self._validate, distribution, recipients)
        if idempotency is not None:
            data = json.dumps({"rejected": [asdict(r) for r in rejected]}, ensure_ascii=False)
            idempotency = replace(idempotency, data=data)
        distribution_id, send_ids = await self.app.store.enqueue(
            distribution,
            sends,
            hostname=self.app.config.hostname,
            now=self.clock(),
            idempotency=idempotency,
        )
        if idempotency is not None:
            # another request with the same key may have been first
            record = await self.app.store.idempotent(distribution.account, idempotency.key)
            if record is not None and record.distribution_id != distribution_id:
                return self._answer(record, idempotency)
        return _accepted(distribution_id, send_ids, rejected, replayed=False)

    @staticmethod
    def _answer(record: IdempotencyRecord, idempotency: Idempotency) -> Accepted:
        if record.body_hash != idempotency.body_hash:
            raise IdempotencyConflict(idempotency.key)
        return _replay(record)

    def _validate(
        self, distribution: NewDistribution, recipients: Sequence[Recipient]
    ) -> tuple[list[NewSend], list[Rejected]]:
        compiled = check_distribution(distribution, templates=self.templates)
        service: dict[str, str] = {}
        if distribution.unsubscribe_url is None and self.links is not None:
            # templates may use the service's unsubscribe URL, which is made
            # per send at delivery: validate with a stand-in
            for index, item in enumerate(recipients):
                if _RESERVED in item.variables:
                    raise ValidationError(
                        f"recipients[{index}].variables.{_RESERVED}",
                        "reserved: the service provides the unsubscribe URL",
                    )
            service[_RESERVED] = self.links.url(distribution.account, _PROBE_ADDRESS, "probe")
        sends, rejected = check_recipients(compiled, recipients, service=service)
        if not sends:
            raise NoValidRecipient(rejected)
        return sends, rejected

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
