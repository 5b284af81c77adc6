"""The DNS side of the SPF check: an SPF record and everything it includes
(:func:`walk_domain`, :func:`walk_record`), to count the DNS lookups a full
evaluation needs (RFC 7208 §4.6.4) and find void ones; and ``check_host``
for each of our IPs, saying how it is authorised (:func:`authorisations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailer.dns import Resolver
from mailer.errors import DNSPermanentError, DNSTemporaryError
from mailer.identity.check_host import (
    MAX_LOOKUPS,
    SPFOutcome,
    addresses,
    check_host,
    client_names,
    tested_terms,
)
from mailer.identity.spf_record import (
    LOOKUP_KINDS,
    IPAddress,
    MacroString,
    Mechanism,
    PermError,
    Record,
    SPFResult,
    is_spf_record,
    normalise_ip,
    parse_record,
    target_name,
)

__all__ = [
    "How",
    "IPAuthorisation",
    "SPFNode",
    "authorisations",
    "how_authorised",
    "walk_domain",
    "walk_record",
]

How = Literal["include", "ip", "other", "no"]


@dataclass(frozen=True)
class SPFNode:
    """One SPF record and the records it includes or redirects to.

    ``error`` says why a record could not be used (none, several, syntax,
    lookup failure); ``own_lookups`` counts this record's terms that cost a
    DNS lookup (RFC 7208 §4.6.4), ``void`` the terms whose lookup found
    nothing. ``truncated`` marks a walk stopped for depth (an include loop).
    """

    domain: str
    texts: tuple[str, ...]
    record: Record | None
    error: str | None
    own_lookups: int
    void: tuple[str, ...]
    children: tuple[SPFNode, ...]
    truncated: bool = False

    @property
    def lookups(self) -> int:
        """Lookups a full evaluation (no mechanism matching) needs."""
        return self.own_lookups + sum(child.lookups for child in self.children)

    @property
    def void_lookups(self) -> int:
        return len(self.void) + sum(child.void_lookups for child in self.children)

    @property
    def nested_errors(self) -> list[str]:
        """Errors of included/redirected records (each a permerror)."""
        found: list[str] = []
        for child in self.children:
            if child.error is not None:
                found.append(child.error)
            found.extend(child.nested_errors)
        return found

    def includes(self, name: str) -> bool:
        """Whether ``name`` is included anywhere in the tree."""
        return any(c.domain == name or c.includes(name) for c in self.children)


def _static_name(spec: MacroString | None, domain: str) -> str | None:
    """The target of a domain-spec without macros (None when it has some)."""
    if spec is None:
        return domain
    if not all(isinstance(token, str) for token in spec.tokens):
        return None
    return target_name("".join(str(token) for token in spec.tokens))


async def walk_domain(resolver: Resolver, domain: str, ip: str, *, depth: int = 0) -> SPFNode:
    """Fetch ``domain``'s SPF record and walk it for the client ``ip`` (what
    ``a`` and ``ptr`` terms look up depends on it).

    Raises DNSTemporaryError when the TXT lookup of ``domain`` itself fails
    at the top (``depth`` 0); deeper failures are recorded in the node.
    """
    try:
        answer = await resolver.txt(domain)
    except DNSPermanentError as exc:
        return _broken(domain, (), f"{domain}: {exc.reason}")
    except DNSTemporaryError as exc:
        if depth == 0:
            raise
        return _broken(domain, (), f"lookup of {domain} failed: {exc.reason}")
    texts = tuple(text for text in answer.records if is_spf_record(text))
    if not texts:
        reason = "does not exist" if answer.nxdomain else "has no SPF record"
        return _broken(domain, texts, f"{domain} {reason}")
    if len(texts) > 1:
        return _broken(domain, texts, f"{domain} publishes {len(texts)} SPF records")
    return await walk_record(resolver, domain, texts[0], ip, depth=depth)


def _broken(domain: str, texts: tuple[str, ...], error: str) -> SPFNode:
    return SPFNode(domain, texts, None, error, 0, (), ())


async def walk_record(
    resolver: Resolver, domain: str, text: str, ip: str, *, depth: int = 0
) -> SPFNode:
    """Walk the SPF record ``text`` as if published at ``domain``: count the
    lookups an evaluation that matches no mechanism makes, find void ones,
    and walk what it includes (targets written with macros count but cannot
    be followed), for the client ``ip``. The terms tested and the lookups
    they make are ``check_host``'s own (:func:`tested_terms`,
    :func:`addresses`, :func:`client_names`). Raises ValidationError for an
    ``ip`` that is no IP address, never for DNS."""
    try:
        record = parse_record(text)
    except PermError as exc:
        return _broken(domain, (text,), f"syntax error in the SPF record of {domain}: {exc.reason}")
    if depth > MAX_LOOKUPS:
        return SPFNode(domain, (text,), record, None, 0, (), (), truncated=True)
    own = 0
    void: list[str] = []
    children: list[SPFNode] = []
    client = normalise_ip(ip)
    mechanisms, redirect = tested_terms(record)
    for mechanism in mechanisms:
        if mechanism.kind not in LOOKUP_KINDS:
            continue
        own += 1
        target = _static_name(mechanism.domain_spec, domain)
        if target is None:
            continue
        if mechanism.kind == "include":
            children.append(await walk_domain(resolver, target, ip, depth=depth + 1))
        elif await _is_void(resolver, mechanism, target, client):
            void.append(mechanism.text)
    if redirect is not None:
        own += 1
        target = _static_name(redirect, domain)
        if target is not None:
            children.append(await walk_domain(resolver, target, ip, depth=depth + 1))
    return SPFNode(domain, (text,), record, None, own, tuple(void), tuple(children))


async def _is_void(
    resolver: Resolver, mechanism: Mechanism, target: str, client: IPAddress
) -> bool:
    """Whether the lookup of an a/mx/exists/ptr term finds nothing (§4.6.4);
    unanswered lookups are not counted as void."""
    if mechanism.kind == "ptr":
        names = await client_names(resolver, client)
        return names is not None and not names.records
    try:
        if mechanism.kind == "mx":
            return not (await resolver.mx(target)).records
        if mechanism.kind == "a":
            return not (await addresses(resolver, target, client.version)).records
        return not (await resolver.a(target)).records  # exists: always A (§5.7)
    except DNSPermanentError:
        return True
    except DNSTemporaryError:
        return False


@dataclass(frozen=True)
class IPAuthorisation:
    """How one of our IPs fares under the domain's SPF policy."""

    ip: str
    result: SPFResult
    how: How
    mechanism: str | None
    explanation: str


def how_authorised(outcome: SPFOutcome, region_include: str) -> How:
    """``include`` when the region's include decided a pass, ``ip`` for an
    ip4:/ip6: entry, ``other`` for any other passing mechanism, ``no``."""
    if outcome.result is not SPFResult.PASS or outcome.mechanism is None:
        return "no"
    term = outcome.mechanism.lower().lstrip("+")
    if term == f"include:{region_include.lower()}":
        return "include"
    if term.startswith(("ip4:", "ip6:")):
        return "ip"
    return "other"


async def authorisations(
    resolver: Resolver, domain: str, ips: Sequence[str], region_include: str
) -> list[IPAuthorisation]:
    """``check_host`` for each IP, sending as ``postmaster@domain``."""
    found: list[IPAuthorisation] = []
    for ip in ips:
        outcome = await check_host(resolver, ip, domain, f"postmaster@{domain}")
        found.append(
            IPAuthorisation(
                ip,
                outcome.result,
                how_authorised(outcome, region_include),
                outcome.mechanism,
                outcome.explanation,
            )
        )
    return found
