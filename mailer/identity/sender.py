"""Sender identity: under which address a customer's message goes out.

The customer's own address is the sender only when the customer domain's
SPF policy lets our outbound IP send for it (``check_host`` = pass) — every
public address of the source pool the message may leave from: then
``From`` and the envelope are the customer's and SPF aligns. Anything else
(fail, softfail, neutral, none, permerror, temperror without a cached
answer) sends from the region's neutral no-reply address with the
customer's display name and ``Reply-To`` the customer, and the envelope at
our own bounce domain (DESIGN.md, "Sender identity").

Decisions are cached per customer domain for the SPF answer's TTL, bounded
to ``[min_ttl, max_ttl]``; one decider serves one region, so that is the
(domain, region) cache of the design.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from mailer.dns import Resolver, normalise_name
from mailer.errors import ConfigError, DNSPermanentError, ValidationError
from mailer.identity.aligned import AlignedDomains
from mailer.identity.check_host import SPFResult, check_host
from mailer.identity.spf_record import normalise_ip
from mailer.message.addresses import check_header_value

__all__ = ["Identity", "IdentityDecider"]


@dataclass(frozen=True)
class Identity:
    """Who a message is from; ``reason`` is recorded on every send."""

    from_address: str
    from_name: str
    reply_to: str | None
    envelope_from: str
    customer_sender: bool
    spf: SPFResult
    reason: str


@dataclass(frozen=True)
class _CachedSpf:
    spf: SPFResult
    stale: bool = False  # an older answer standing in for a temperror
    # the public address the result is for, when several are evaluated and
    # this one is not covered
    ip: str | None = None


@dataclass(frozen=True)
class _Entry:
    verdict: _CachedSpf
    expires: float


class IdentityDecider:
    """Decides the :class:`Identity` of messages of one region.

    ``outbound_ip`` is the public address this node sends from (what SPF is
    evaluated for), or every address of the source pool: the customer's
    address stands only when SPF passes for all of them, and the reason
    names the first one it does not cover; ``neutral_sender`` the region's no-reply address;
    ``bounce_address`` the envelope sender at our own domain. With
    ``dkim_alignment`` on, a customer domain in ``dkim_domains`` (we hold a
    verified DKIM key for it) keeps the customer's ``From`` without SPF
    pass: DMARC then aligns through the DKIM signature, while the envelope
    stays at our domain so SPF passes for it.

    Raises ConfigError for an outbound IP that is no IP address, a sender
    address without ``@`` or TTL bounds that do not fit.
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        outbound_ip: str | Sequence[str],
        neutral_sender: str,
        bounce_address: str,
        min_ttl: int = 60,
        max_ttl: int = 3600,
        clock: Callable[[], float] = time.monotonic,
        dkim_domains: Collection[str] | AlignedDomains = (),
        dkim_alignment: bool = False,
        cache_size: int = 10_000,
    ) -> None:
        ips = (outbound_ip,) if isinstance(outbound_ip, str) else tuple(outbound_ip)
        if not ips:
            raise ConfigError("outbound_ip", "no public address to evaluate SPF for")
        try:
            for ip in ips:
                normalise_ip(ip)
        except ValidationError as exc:
            raise ConfigError("outbound_ip", exc.reason) from exc
        for key, value in (("neutral_sender", neutral_sender), ("bounce_address", bounce_address)):
            if "@" not in value.strip("@"):
                raise ConfigError(key, f"{value!r} is not an address")
        if not 0 <= min_ttl <= max_ttl:
            raise ConfigError("identity.ttl", f"need 0 <= min_ttl ({min_ttl}) <= max_ttl")
        self._resolver = resolver
        self._ips = ips
        self._neutral = neutral_sender
        self._bounce = bounce_address
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._clock = clock
        # a fixed set, or decided lazily from DNS (AlignedDomains)
        self._dkim_domains: frozenset[str] | AlignedDomains = (
            dkim_domains
            if isinstance(dkim_domains, AlignedDomains)
            else frozenset(d.lower().rstrip(".") for d in dkim_domains)
        )
        self._dkim_alignment = dkim_alignment
        # Expired entries stay until evicted: they are the stale answer a
        # temperror falls back to.
        self._cache: LRUCache[str, _Entry] = LRUCache(max(cache_size, 1))
        self._inflight: dict[str, asyncio.Task[_CachedSpf]] = {}

    async def decide(self, customer_address: str, customer_name: str) -> Identity:
        """The identity for a message of ``customer_address`` / ``customer_name``.

        Raises ValidationError("customer_address" / "customer_name", ...) for
        CR/LF or control characters, or an address without local part or
        domain. DNS trouble never raises: it ends in the neutral sender (or
        the last known answer).
        """
        check_header_value("customer_name", customer_name)
        address = check_header_value("customer_address", customer_address).strip()
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            raise ValidationError("customer_address", f"{address!r} is not local@domain")
        try:
            domain = normalise_name(domain)
            # an international domain goes on as its A-label (From,
            # envelope, Reply-To): a U-label is no name for SMTP or DKIM
            address = f"{local}@{domain}"
        except DNSPermanentError:
            domain = domain.lower()  # check_host() answers none for it
        verdict = await self._verdict(domain, address)
        if verdict.spf is SPFResult.PASS:
            reason = f"spf=pass{_stale(verdict)} → customer sender"
            return Identity(address, customer_name, None, address, True, verdict.spf, reason)
        if self._dkim_alignment and await self._aligned(domain):
            reason = f"dkim key for {domain} → customer sender (DMARC alignment via DKIM)"
            return Identity(address, customer_name, None, self._bounce, True, verdict.spf, reason)
        reason = f"spf={verdict.spf}{_for(verdict)}{_stale(verdict)} → neutral sender"
        return Identity(
            self._neutral, customer_name, address, self._bounce, False, verdict.spf, reason
        )

    async def _aligned(self, domain: str) -> bool:
        if isinstance(self._dkim_domains, AlignedDomains):
            return await self._dkim_domains.aligned(domain)
        return domain in self._dkim_domains

    async def _verdict(self, domain: str, address: str) -> _CachedSpf:
        entry = self._cache.get(domain)
        if entry is not None and entry.expires > self._clock():
            return entry.verdict
        task = self._inflight.get(domain)
        loop = asyncio.get_running_loop()
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._evaluate(domain, address))
            self._inflight[domain] = task
            task.add_done_callback(functools.partial(self._landed, domain))
        # shield: a caller that gives up must not cancel the others' answer
        return await asyncio.shield(task)

    async def _evaluate(self, domain: str, address: str) -> _CachedSpf:
        outcome = await check_host(self._resolver, self._ips[0], domain, address)
        shortest = outcome.ttl
        uncovered: str | None = None
        for ip in self._ips[1:]:
            if outcome.result is not SPFResult.PASS:
                break
            outcome = await check_host(self._resolver, ip, domain, address)
            shortest = min(shortest, outcome.ttl)
            uncovered = ip
        if outcome.result is SPFResult.PASS or len(self._ips) == 1:
            uncovered = None
        elif uncovered is None:
            uncovered = self._ips[0]
        if outcome.result is SPFResult.TEMPERROR:
            previous = self._cache.get(domain)
            if previous is None or previous.verdict.spf is SPFResult.TEMPERROR:
                verdict = _CachedSpf(SPFResult.TEMPERROR)
            else:
                verdict = _CachedSpf(previous.verdict.spf, stale=True)
            # Not asking a failing DNS again for every message; min_ttl later.
            ttl = self._min_ttl
        else:
            verdict = _CachedSpf(outcome.result, ip=uncovered)
            ttl = min(max(shortest, self._min_ttl), self._max_ttl)
        self._cache[domain] = _Entry(verdict, self._clock() + ttl)
        return verdict

    def _landed(self, domain: str, task: asyncio.Task[_CachedSpf]) -> None:
        if self._inflight.get(domain) is task:
            del self._inflight[domain]
        if not task.cancelled():
            task.exception()  # marks it retrieved; the awaiting callers get it


def _for(verdict: _CachedSpf) -> str:
    return f" for {verdict.ip}" if verdict.ip else ""


def _stale(verdict: _CachedSpf) -> str:
    return " (cached, DNS temperror now)" if verdict.stale else ""
