"""SPF ``check_host()`` (RFC 7208) over the service's resolver.

The grammar, macros and address matching are pure functions in
:mod:`mailer.identity.spf_record`; this module walks a record, asks DNS what the
mechanisms need, and enforces the processing limits of §4.6.4 (10 terms
that cost a lookup, 2 void lookups, 10 MX names, 10 PTR names).

``check_host()`` never raises for anything DNS or the record does: every
outcome is an :class:`SPFOutcome`. Within it, ``PermError`` carries a
permerror up from wherever it happens (syntax, limits, include of a domain
without a record) and :class:`~mailer.errors.DNSTemporaryError` a temperror.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mailer.dns import Answer, Resolver
from mailer.errors import DNSPermanentError, DNSTemporaryError
from mailer.identity.spf_record import (
    IPAddress,
    MacroContext,
    MacroString,
    Mechanism,
    PermError,
    Record,
    SPFResult,
    expand,
    ip_matches,
    is_spf_record,
    is_valid_domain,
    normalise_ip,
    parse_explanation,
    parse_record,
    target_name,
)

__all__ = [
    "MAX_LOOKUPS",
    "MAX_VOID_LOOKUPS",
    "SPFOutcome",
    "SPFResult",
    "addresses",
    "check_host",
    "client_names",
    "tested_terms",
]

T = TypeVar("T")

MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
MAX_MX_NAMES = 10
MAX_PTR_NAMES = 10
# §4.6.4: "SHOULD allow at least 20 seconds" for a whole evaluation.
DEFAULT_TIMEOUT = 20.0


@dataclass(frozen=True)
class SPFOutcome:
    """The result of one ``check_host()``.

    ``mechanism`` is the deciding term as written ("include:_spf.netigate.se",
    "-all"), None for the default result and for errors. ``ttl`` is the
    smallest TTL among the DNS answers consulted, for callers that cache.
    """

    result: SPFResult
    domain: str
    mechanism: str | None
    explanation: str
    lookups: int
    void_lookups: int
    ttl: int


@dataclass(frozen=True)
class _RecordResult:
    result: SPFResult
    mechanism: str | None
    explanation: str


def tested_terms(record: Record) -> tuple[tuple[Mechanism, ...], MacroString | None]:
    """What an evaluation in which no mechanism matches tests (pure): the
    mechanisms in order up to the first ``all``, which always matches (§5.1),
    and the redirect target, followed only when the record has no ``all``
    (§6.1)."""
    tested: list[Mechanism] = []
    for mechanism in record.mechanisms:
        tested.append(mechanism)
        if mechanism.kind == "all":
            return tuple(tested), None
    return tuple(tested), record.redirect


async def client_names(resolver: Resolver, ip: IPAddress) -> Answer[str] | None:
    """The PTR answer for the client ``ip`` (``ptr`` terms and the %{p}
    macro), None when the lookup failed: DNS errors here mean no names,
    never temperror (§5.5)."""
    try:
        return await resolver.ptr(str(ip))
    except (DNSTemporaryError, DNSPermanentError):
        return None


async def addresses(resolver: Resolver, name: str, version: int) -> Answer[str]:
    """What ``a`` and ``mx`` terms look up for a client of IP ``version``:
    A records for IPv4, AAAA for IPv6 (§5.3, §5.4). Raises DNSTemporaryError,
    DNSPermanentError."""
    if version == 4:
        return await resolver.a(name)
    return await resolver.aaaa(name)


async def check_host(
    resolver: Resolver,
    ip: str,
    domain: str,
    sender: str,
    *,
    helo: str | None = None,
    receiver: str = "unknown",
    time_limit: float = DEFAULT_TIMEOUT,
) -> SPFOutcome:
    """Evaluate the SPF policy of ``domain`` for client ``ip`` and ``sender``.

    An empty ``sender`` (null reverse-path) checks the HELO identity:
    ``postmaster@<helo>`` against the ``helo`` domain (§2.3); a sender
    without local part becomes ``postmaster@<domain>`` (§4.3).

    Raises ValidationError("ip", ...) only when ``ip`` is not an IP address;
    everything else ends in an outcome (DNS failure or ``time_limit`` →
    temperror).
    """
    address = normalise_ip(ip)
    sender = sender.strip()
    if not sender:
        domain = helo or domain
        sender = f"postmaster@{domain}"
    local, at, sender_domain = sender.rpartition("@")
    if not at:
        sender = f"postmaster@{sender}"
    elif not local:
        sender = f"postmaster@{sender_domain}"
    domain = domain.strip()
    domain = domain[:-1] if domain.endswith(".") else domain
    run = _Evaluation(resolver, address, sender, helo or "unknown", receiver)
    if not is_valid_domain(domain):
        return run.outcome(SPFResult.NONE, domain, None, f"{domain!r} is not a valid domain name")
    try:
        async with asyncio.timeout(time_limit):
            verdict = await run.check(domain, in_include=False)
    except PermError as exc:
        return run.outcome(SPFResult.PERMERROR, domain, None, exc.reason)
    except DNSTemporaryError as exc:
        return run.outcome(SPFResult.TEMPERROR, domain, None, f"DNS error: {exc}")
    except TimeoutError:
        return run.outcome(SPFResult.TEMPERROR, domain, None, f"no result within {time_limit:g}s")
    if verdict is None:
        if domain in run.nonexistent:
            why = f"{domain} does not exist (NXDOMAIN)"
        else:
            why = f"no SPF record published for {domain}"
        return run.outcome(SPFResult.NONE, domain, None, why)
    return run.outcome(verdict.result, domain, verdict.mechanism, verdict.explanation)


class _Evaluation:
    """The state of one check_host() call: counters shared by every include
    and redirect it recurses into."""

    def __init__(
        self, resolver: Resolver, ip: IPAddress, sender: str, helo: str, receiver: str
    ) -> None:
        self.resolver = resolver
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
        self.lookups = 0
        self.void_lookups = 0
        self.ttl: int | None = None
        # names whose TXT lookup answered NXDOMAIN: "does not exist" is
        # what an operator needs to hear, not "publishes no record"
        self.nonexistent: set[str] = set()

    def outcome(
        self, result: SPFResult, domain: str, mechanism: str | None, explanation: str
    ) -> SPFOutcome:
        return SPFOutcome(
            result,
            domain,
            mechanism,
            explanation,
            self.lookups,
            self.void_lookups,
            0 if self.ttl is None else self.ttl,
        )

    # -- records ----------------------------------------------------------

    async def check(self, domain: str, *, in_include: bool) -> _RecordResult | None:
        """The verdict of ``domain``'s record, None when it has none.
        Raises PermError, DNSTemporaryError."""
        record = await self._record(domain)
        if record is None:
            return None
        mechanisms, redirect = tested_terms(record)
        for mechanism in mechanisms:
            if await self._matches(mechanism, domain):
                result = mechanism.qualifier
                text = f"{self.ip} matched {mechanism.text} in the SPF record of {domain}"
                # §6.2: exp= of an included record never speaks for the includer.
                if result is SPFResult.FAIL and not in_include and record.explanation:
                    text = await self._explain(record.explanation, domain) or text
                return _RecordResult(result, mechanism.text, text)
        if redirect is not None:
            term = f"redirect={redirect.text}"
            self._count(term)
            target = await self._target(redirect, domain)
            verdict = None if target is None else await self.check(target, in_include=in_include)
            if verdict is None:
                raise PermError(f"{term} in {domain}: {target or 'target'} has no SPF record")
            return verdict
        return _RecordResult(
            SPFResult.NEUTRAL, None, f"no mechanism of {domain} matched {self.ip} (default neutral)"
        )

    async def _record(self, domain: str) -> Record | None:
        try:
            answer = await self.resolver.txt(domain)
        except DNSPermanentError:
            return None
        self._note(answer)
        if answer.nxdomain:
            self.nonexistent.add(domain)
        records = [text for text in answer.records if is_spf_record(text)]
        if not records:
            return None
        if len(records) > 1:
            raise PermError(f"{domain} publishes {len(records)} v=spf1 records")
        try:
            return parse_record(records[0])
        except PermError as exc:
            raise PermError(f"syntax error in the SPF record of {domain}: {exc.reason}") from exc

    # -- mechanisms (§5) --------------------------------------------------

    async def _matches(self, mechanism: Mechanism, domain: str) -> bool:
        kind = mechanism.kind
        if kind == "all":
            return True
        if mechanism.network is not None:
            return self.ip in mechanism.network
        self._count(mechanism.text)
        target = domain
        if mechanism.domain_spec is not None:
            expanded = await self._target(mechanism.domain_spec, domain)
            if expanded is None:
                # A name no query can carry does not exist (test suite's
                # reading of §4.3 for targets) – but include needs a record.
                if kind == "include":
                    raise PermError(f"{mechanism.text}: target is not a valid domain name")
                return False
            target = expanded
        if kind == "include":
            verdict = await self.check(target, in_include=True)
            if verdict is None:
                raise PermError(f"{mechanism.text}: {target} has no SPF record")
            return verdict.result is SPFResult.PASS
        if kind == "a":
            found = await self._ask(self._addresses, target, void=True)
            return any(ip_matches(self.ip, a, mechanism.cidr4, mechanism.cidr6) for a in found)
        if kind == "mx":
            return await self._mx_matches(mechanism, target)
        if kind == "ptr":
            target = target.lower()
            names = await self._validated_names()
            return any(name == target or name.endswith("." + target) for name in names)
        return bool(await self._ask(self.resolver.a, target, void=True))  # exists

    async def _mx_matches(self, mechanism: Mechanism, target: str) -> bool:
        exchanges = await self._ask(self.resolver.mx, target, void=True)
        if len(exchanges) > MAX_MX_NAMES:
            raise PermError(
                f"{mechanism.text}: {target} has {len(exchanges)} MX records"
                f" (more than {MAX_MX_NAMES})"
            )
        for mx in exchanges:
            if not mx.exchange:
                continue  # null MX (RFC 7505) names no host
            found = await self._ask(self._addresses, mx.exchange, void=False)
            if any(ip_matches(self.ip, a, mechanism.cidr4, mechanism.cidr6) for a in found):
                return True
        return False

    async def _validated_names(self, *, limits: bool = True) -> list[str]:
        """§5.5: PTR names of the client whose forward lookup leads back to
        it. DNS errors here mean no names, never temperror. Raises PermError
        for a void PTR lookup over the limit (unless ``limits`` is off)."""
        answer = await client_names(self.resolver, self.ip)
        if answer is None:
            return []
        self._note(answer)
        if limits and not answer.records:
            self._void(f"PTR {self.ip}")
        validated: list[str] = []
        for name in answer.records[:MAX_PTR_NAMES]:
            try:
                forward = await self._addresses(name)
            except (DNSTemporaryError, DNSPermanentError):
                continue
            self._note(forward)
            if any(ip_matches(self.ip, a, 32, 128) for a in forward.records):
                validated.append(name)
        return validated

    async def _validated_name(self, domain: str, *, limits: bool = True) -> str:
        """The %{p} value: the validated name equal to ``domain``, else one
        below it, else any, else "unknown" (§7.3)."""
        names = await self._validated_names(limits=limits)
        domain = domain.lower()
        for name in names:
            if name == domain:
                return name
        for name in names:
            if name.endswith("." + domain):
                return name
        return names[0] if names else "unknown"

    # -- names, macros, explanations ----------------------------------------

    async def _target(self, spec: MacroString, domain: str) -> str | None:
        validated = "unknown"
        if spec.uses_p:
            self._count("%{p}")  # its PTR lookup counts like a ptr term (§4.6.4)
            validated = await self._validated_name(domain)
        return target_name(expand(spec, self._context(domain, validated)))

    async def _explain(self, spec: MacroString, domain: str) -> str | None:
        """§6.2: the expanded explanation, or None on any problem on the way
        (no limits apply: the result is already decided)."""
        validated = "unknown"
        if spec.uses_p:
            validated = await self._validated_name(domain, limits=False)
        name = target_name(expand(spec, self._context(domain, validated)))
        if name is None:
            return None
        try:
            answer = await self.resolver.txt(name)
            if len(answer.records) != 1:
                return None
            text = parse_explanation(answer.records[0])
            if text.uses_p:
                validated = await self._validated_name(domain, limits=False)
            return expand(text, self._context(domain, validated))
        except (DNSTemporaryError, DNSPermanentError, PermError):
            return None

    def _context(self, domain: str, validated: str) -> MacroContext:
        return MacroContext(
            sender=self.sender,
            domain=domain,
            ip=self.ip,
            helo=self.helo,
            receiver=self.receiver,
            timestamp=int(time.time()),
            validated_name=validated,
        )

    # -- DNS and limits ---------------------------------------------------

    async def _addresses(self, name: str) -> Answer[str]:
        return await addresses(self.resolver, name, self.ip.version)

    async def _ask(
        self, lookup: Callable[[str], Awaitable[Answer[T]]], name: str, *, void: bool
    ) -> tuple[T, ...]:
        """Records of one lookup; NXDOMAIN, NODATA and a name the resolver
        refuses are all "no records" (§5). Raises DNSTemporaryError, and
        PermError when a void lookup goes over the limit."""
        try:
            answer = await lookup(name)
        except DNSPermanentError:
            records: tuple[T, ...] = ()
        else:
            self._note(answer)
            records = answer.records
        if void and not records:
            self._void(name)
        return records

    def _note(self, answer: Answer[T]) -> None:
        self.ttl = answer.ttl if self.ttl is None else min(self.ttl, answer.ttl)

    def _count(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise PermError(f"more than {MAX_LOOKUPS} DNS lookups (the 11th: {term})")

    def _void(self, name: str) -> None:
        self.void_lookups += 1
        if self.void_lookups > MAX_VOID_LOOKUPS:
            raise PermError(f"more than {MAX_VOID_LOOKUPS} void DNS lookups (the 3rd: {name})")
