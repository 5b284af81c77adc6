"""Discovery (RFC 8461 §3.1): does a domain publish an MTA-STS policy, and
under which id? One TXT lookup of ``_mta-sts.<domain>`` through the
service's resolver (which caches it for the record's TTL)."""

from __future__ import annotations

from dataclasses import dataclass

from mailer.delivery.tls.policy import parse_txt
from mailer.dns import Resolver
from mailer.errors import DNSError

__all__ = ["Discovery", "discover"]


@dataclass(frozen=True)
class Discovery:
    """``policy_id`` is the id of the one valid record, None when there is
    none; ``failed`` holds the DNS error when the lookup itself failed (then
    nothing is known and a cached policy stands)."""

    policy_id: str | None
    failed: str | None = None


async def discover(resolver: Resolver, domain: str) -> Discovery:
    """Never raises for DNS trouble: a failed lookup is a ``Discovery``
    with ``failed`` set."""
    try:
        answer = await resolver.txt(f"_mta-sts.{domain}")
    except DNSError as exc:
        return Discovery(None, failed=str(exc))
    return Discovery(parse_txt(answer.records))
