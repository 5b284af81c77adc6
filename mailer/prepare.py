"""From a leased send to the bytes on the wire: template rendering, sender
identity, MIME composition and DKIM signing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cachetools import LRUCache

from mailer.identity.sender import IdentityDecider
from mailer.message.addresses import Address, parse_address
from mailer.message.compose import build_message
from mailer.message.footer import with_unsubscribe_link
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
    # the RFC 3461 ENVID asked for where the server offers DSN
    envid: str | None = None


IdentityFn = Callable[[Distribution], Awaitable[Envelope]]
SignFn = Callable[[bytes, str], Awaitable[bytes]]
# the service's own unsubscribe URL of a send (mailer.message.unsubscribe), used when
# the distribution has none
UnsubscribeFn = Callable[[Send, Distribution], str]
# the per-send return path (mailer.message.verp) used when the envelope is ours
ReturnPathFn = Callable[[Send], str]
# the Feedback-ID header value of a send
FeedbackIdFn = Callable[[Send, Distribution], str]


async def sender_as_given(distribution: Distribution) -> Envelope:
    """The identity used when no SPF-based decision is configured: the
    distribution's sender on the envelope and in From."""
    sender = parse_address(
        "sender.address",
        distribution.sender_address,
        distribution.sender_name,
        name_field="sender.name",
    )
    return Envelope(sender.address, sender, None, "sender as given")


def decided_by(decider: IdentityDecider) -> IdentityFn:
    """The SPF-based sender decision (DESIGN.md, "Sender identity") as the
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


def unsubscribe_urls(
    own: str | None, service: str | None, *, one_click: bool
) -> tuple[list[str], str | None]:
    """The List-Unsubscribe URLs of a message and the unsubscribe link its
    body shows (pure).

    ``own`` is the distribution's rendered URL, ``service`` the service's
    one-click URL. The header carries exactly one web URL, the one-click
    one: the service's, or ``own`` when the distribution declared that it
    takes RFC 8058 POSTs (``one_click``); a ``mailto:`` of its own goes
    beside it. The body shows ``own`` when there is one (an https URL that
    is not one-click belongs there), else the service's.
    """
    mailto = own if own is not None and own.lower().startswith("mailto:") else None
    web = own if own is not None and mailto is None and one_click else service
    header = [url for url in (web, mailto) if url is not None]
    return header, own if own is not None else service


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
        return_path: ReturnPathFn | None = None,
        feedback_id: FeedbackIdFn | None = None,
        cache_size: int = 256,
    ) -> None:
        self._load = load
        self._identity = identity
        self._sign = sign
        self._unsubscribe = unsubscribe
        self._return_path = return_path
        self._feedback_id = feedback_id
        self._cache: LRUCache[str, tuple[Distribution, CompiledContent]] = LRUCache(cache_size)

    async def _distribution(self, distribution_id: str) -> tuple[Distribution, CompiledContent]:
        hit = self._cache.get(distribution_id)
        if hit is not None:
            return hit
        distribution = await self._load(distribution_id)
        entry = (distribution, compile_content(Content.of(distribution)))
        self._cache[distribution_id] = entry
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
        own_one_click = (
            distribution.unsubscribe_url is not None and distribution.unsubscribe_one_click
        )
        if self._unsubscribe is not None and not own_one_click:
            service_url = self._unsubscribe(send, distribution)
            if distribution.unsubscribe_url is None:
                variables["unsubscribe_url"] = service_url
        rendered = render(compiled, variables)
        header, body_url = unsubscribe_urls(
            rendered.unsubscribe_url, service_url, one_click=distribution.unsubscribe_one_click
        )
        if body_url is not None:
            rendered = with_unsubscribe_link(rendered, body_url, distribution.language)
        extra: list[tuple[str, str]] = []
        if self._feedback_id is not None:
            extra.append(("Feedback-ID", self._feedback_id(send, distribution)))
        data = build_message(
            rendered,
            from_=envelope.header_from,
            # validated and normalised at enqueue
            to=Address(send.recipient, send.name),
            reply_to=envelope.reply_to,
            message_id=send.message_id,
            date=datetime.fromtimestamp(now, UTC),
            list_unsubscribe=header,
            extra_headers=extra,
        )
        if self._sign is not None:
            # the customer's key signs too where we hold one, whichever
            # address ended up in From
            customer_domain = distribution.sender_address.rpartition("@")[2].lower()
            data = await self._sign(data, customer_domain)
        mail_from = envelope.mail_from
        ours = mail_from.lower() != distribution.sender_address.lower()
        if ours and self._return_path is not None:
            # our envelope: the bounce comes back to a return path naming
            # the send; the customer's own envelope (SPF pass) is left as
            # it is, and its bounces go to the customer
            mail_from = self._return_path(send)
        return Prepared(mail_from, send.recipient, data, envelope.reason, envid=send.id)
