"""From a leased send to the bytes on the wire: template rendering, sender
identity, MIME composition and DKIM signing."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.identity.sender import IdentityDecider
from mailer.message.addresses import Address, parse_address
from mailer.message.compose import build_message
from mailer.message.templates import CompiledContent, Content, compile_content, render
from mailer.store.models import Distribution, Send


@dataclass(frozen=True)
class Envelope:
    """Who the message claims to be from, on the envelope and in the header."""

    mail_from: str
    header_from: Address
    reply_to: Address | None
    reason: str


@dataclass(frozen=True)
class Prepared:
    mail_from: str
    recipient: str
    data: bytes
    identity: str


IdentityFn = Callable[[Distribution], Awaitable[Envelope]]
SignFn = Callable[[bytes, str], Awaitable[bytes]]
# the service's own unsubscribe URL of a send (mailer.message.unsubscribe), used when
# the distribution has none
UnsubscribeFn = Callable[[Send, Distribution], str | None]


async def sender_as_given(distribution: Distribution) -> Envelope:
    """The identity used when no SPF-based decision is configured: the
    distribution's sender on the envelope and in From."""
    sender = parse_address("sender.address", distribution.sender_address, distribution.sender_name)
    return Envelope(sender.address, sender, None, "sender as given")


def decided_by(decider: IdentityDecider) -> IdentityFn:
    """The SPF-based sender decision (docs/design.md, "Sender identity") as the
    preparer's identity step."""

    async def identity(distribution: Distribution) -> Envelope:
        decision = await decider.decide(distribution.sender_address, distribution.sender_name)
        return Envelope(
            mail_from=decision.envelope_from,
            header_from=Address(decision.from_address, decision.from_name),
            reply_to=Address(decision.reply_to) if decision.reply_to else None,
            reason=decision.reason,
        )

    return identity


class Preparer:
    """Builds each send's message. Compiled templates are kept per
    distribution (bounded), so a distribution's templates are compiled once
    per worker, not once per message."""

    def __init__(
        self,
        load: Callable[[str], Awaitable[Distribution]],
        *,
        identity: IdentityFn = sender_as_given,
        sign: SignFn | None = None,
        unsubscribe: UnsubscribeFn | None = None,
        cache_size: int = 256,
    ) -> None:
        self._load = load
        self._identity = identity
        self._sign = sign
        self._unsubscribe = unsubscribe
        self._cache: OrderedDict[str, tuple[Distribution, CompiledContent]] = OrderedDict()
        self._cache_size = cache_size

    async def _distribution(self, distribution_id: str) -> tuple[Distribution, CompiledContent]:
        hit = self._cache.get(distribution_id)
        if hit is not None:
            self._cache.move_to_end(distribution_id)
            return hit
        distribution = await self._load(distribution_id)
        entry = (distribution, compile_content(Content.of(distribution)))
        self._cache[distribution_id] = entry
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return entry

    async def prepare(self, send: Send, *, now: float) -> Prepared:
        """Raises ValidationError/TemplateError when the send's data cannot
        make a message (checked at enqueue, so only for data changed
        since)."""
        distribution, compiled = await self._distribution(send.distribution_id)
        envelope = await self._identity(distribution)
        # as at enqueue (mailer.enqueue.check_recipients): the recipient's
        # own address and name win over variables of the same names
        variables = {**send.variables, "email": send.recipient, "name": send.name}
        service_url = None
        if distribution.unsubscribe_url is None and self._unsubscribe is not None:
            service_url = self._unsubscribe(send, distribution)
            if service_url is not None:
                variables["unsubscribe_url"] = service_url
        rendered = render(compiled, variables)
        unsubscribe_url = rendered.unsubscribe_url or service_url
        unsubscribe = [unsubscribe_url] if unsubscribe_url else []
        data = build_message(
            rendered,
            from_=envelope.header_from,
            # validated and normalised at enqueue
            to=Address(send.recipient, send.name),
            reply_to=envelope.reply_to,
            message_id=send.message_id,
            date=datetime.fromtimestamp(now, UTC),
            list_unsubscribe=unsubscribe,
        )
        if self._sign is not None:
            # the customer's key signs too where we hold one, whichever
            # address ended up in From
            customer_domain = distribution.sender_address.rpartition("@")[2].lower()
            data = await self._sign(data, customer_domain)
        return Prepared(envelope.mail_from, send.recipient, data, envelope.reason)
