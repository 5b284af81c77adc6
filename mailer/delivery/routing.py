"""MX routing: which hosts to try, in which order, for a recipient domain.

RFC 5321 §5.1: MX hosts in preference order, hosts of equal preference
in random order (spreading load as the domain intends); no MX at all means
the domain itself is the implicit MX if it has an address. RFC 7505: a
null MX (exchange ``.``) says the domain accepts no mail, a permanent
failure; §3 forbids mixing it with other MX records, and such a set is
treated as null MX too rather than guessing which part was meant.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from mailer.dns import MX, Resolver, normalise_name
from mailer.errors import DNSPermanentError

__all__ = ["Route", "order_mx", "resolve_route"]

NULL_MX = "null MX: domain accepts no mail"


@dataclass(frozen=True)
class Route:
    """The hosts to try for ``domain`` (ASCII form), in order; ``implicit``
    when the domain had no MX and its own address stands in."""

    domain: str
    hosts: tuple[str, ...]
    implicit: bool


def order_mx(records: Sequence[MX], rng: random.Random, *, domain: str = "") -> list[str]:
    """Exchanges by ascending preference, equal preferences shuffled with
    ``rng``; a host listed twice keeps its best place.

    Raises DNSPermanentError (naming ``domain``) if the set contains the
    null MX.
    """
    if any(record.exchange == "" for record in records):
        raise DNSPermanentError(domain, NULL_MX)
    by_preference: dict[int, list[str]] = {}
    for record in records:
        by_preference.setdefault(record.preference, []).append(record.exchange)
    hosts: list[str] = []
    for preference in sorted(by_preference):
        group = sorted(set(by_preference[preference]))  # sorted: same seed, same order
        rng.shuffle(group)
        hosts.extend(host for host in group if host not in hosts)
    return hosts


async def resolve_route(
    resolver: Resolver, domain: str, *, rng: random.Random | None = None
) -> Route:
    """The route for mail to ``domain`` (Unicode or ASCII).

    Raises DNSPermanentError when the domain does not exist, publishes a
    null MX, or has neither MX nor address records (or is not a valid
    name); DNSTemporaryError when a lookup failed (SERVFAIL, timeout).
    """
    name = normalise_name(domain)
    answer = await resolver.mx(name)
    if answer.nxdomain:
        raise DNSPermanentError(name, "domain does not exist")
    if answer.records:
        hosts = order_mx(answer.records, rng or random.Random(), domain=name)
        return Route(name, tuple(hosts), implicit=False)
    try:
        await resolver.addresses(name)
    except DNSPermanentError as exc:
        raise DNSPermanentError(name, f"no MX and {exc.reason}") from exc
    return Route(name, (name,), implicit=True)
