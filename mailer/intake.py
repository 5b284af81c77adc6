"""The one enqueue path of the service: a request is validated at the door
(:mod:`mailer.enqueue`), checked against its idempotency key, and stored
durably. The in-process client, the HTTP API and the CLI all enqueue
through :class:`Intake`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from mailer.enqueue import (
    CompiledTemplates,
    Recipient,
    Rejected,
    check_distribution,
    check_recipients,
)
from mailer.errors import IdempotencyConflict, NotFound, ValidationError
from mailer.message.addresses import parse_address
from mailer.message.unsubscribe import UnsubscribeLinks
from mailer.store.base import AccountStore, IntakeStore
from mailer.store.models import (
    Idempotency,
    IdempotencyRecord,
    NewDistribution,
    NewSend,
    new_id,
)

MAX_IDEMPOTENCY_KEY = 255
# how long an Idempotency-Key is remembered, by default (api.idempotency_ttl)
IDEMPOTENCY_TTL = 24 * 3600.0
_RESERVED = "unsubscribe_url"
_PROBE_ADDRESS = "probe@unsubscribe.invalid"


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


class IntakeStores(IntakeStore, AccountStore, Protocol):
    """What the enqueue path reads and writes: the queue's enqueue side,
    and the account records (their default language)."""


class Intake:
    """Validates and stores distributions over ``store``. ``links`` makes
    the service's own unsubscribe URLs (None: the service makes none). The
    compiled templates of recent requests are kept, so the many requests
    of one large distribution compile them once."""

    def __init__(
        self,
        store: IntakeStores,
        hostname: str,
        links: UnsubscribeLinks | None,
        clock: Callable[[], float] = time.time,
        *,
        idempotency_ttl: float = IDEMPOTENCY_TTL,
    ) -> None:
        self.store = store
        self.hostname = hostname
        self.links = links
        self.clock = clock
        self.idempotency_ttl = idempotency_ttl
        self.templates = CompiledTemplates()

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
            stale_before = self.clock() - self.idempotency_ttl
            idempotency = Idempotency(
                key, request_hash(distribution, recipients), stale_before=stale_before
            )
            record = await self.store.idempotent(
                distribution.account, key, stale_before=stale_before
            )
            if record is not None:
                return self._answer(record, idempotency)
        # The sender as it goes on the wire: an international domain in its
        # A-label form (From, envelope and DKIM d= all use that form).
        sender = parse_address(
            "sender.address",
            distribution.sender_address,
            distribution.sender_name,
            name_field="sender.name",
        )
        if sender.address != distribution.sender_address:
            distribution = replace(distribution, sender_address=sender.address)
        if distribution.language is None:
            # the account's default language speaks for a distribution that
            # names none: its footer and its unsubscribe page
            language = await self._account_language(distribution.account)
            distribution = replace(distribution, language=language)
        # Rendering every recipient's templates takes a while for 10,000 of
        # them; off the loop, the API and an engine in the same process keep
        # going meanwhile.
        sends, rejected = await asyncio.to_thread(self._validate, distribution, recipients)
        if idempotency is not None:
            data = json.dumps({"rejected": [asdict(r) for r in rejected]}, ensure_ascii=False)
            idempotency = replace(idempotency, data=data)
        # The store compares the key's body hash in its transaction: of two
        # requests racing with one key, one is stored, the other gets the
        # stored answer (same body) or IdempotencyConflict (another body).
        fresh_id = new_id()
        distribution_id, send_ids = await self.store.enqueue(
            distribution,
            sends,
            hostname=self.hostname,
            now=self.clock(),
            idempotency=idempotency,
            distribution_id=fresh_id,
        )
        if idempotency is not None and distribution_id != fresh_id:
            record = await self.store.idempotent(distribution.account, idempotency.key)
            if record is not None and record.distribution_id == distribution_id:
                return _replay(record)
        return _accepted(distribution_id, send_ids, rejected, replayed=False)

    def validate(
        self, distribution: NewDistribution, recipients: Sequence[Recipient]
    ) -> tuple[list[NewSend], list[Rejected]]:
        """What :meth:`enqueue` would store and reject; stores nothing.
        Raises as :meth:`enqueue` does for a malformed request."""
        return self._validate(distribution, recipients)

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

    async def _account_language(self, account: str) -> str | None:
        """The account's default language; None for an account without a
        record yet (the store makes one at enqueue)."""
        try:
            return (await self.store.account(account)).language
        except NotFound:
            return None
