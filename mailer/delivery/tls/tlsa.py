"""The TLSA lookup of one MX host (RFC 7672 §2.2), through the resolver
seam: what DANE says about a connection before it is made.

DANE applies only to a host whose address records are DNSSEC-secure (the
AD bit of a trusted validating resolver) and whose TLSA RRset at
``_25._tcp.<host>`` is secure too. An insecure answer or none at all
leaves the host to MTA-STS and the configured level; a failed lookup
(SERVFAIL, which is also what a validating resolver answers for bogus
data) raises, and the host is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailer.delivery.tls.dane import TLSASet, tlsa_name
from mailer.dns import Resolver
from mailer.errors import DNSPermanentError

__all__ = ["DaneLookup", "DaneStatus", "lookup_tlsa"]


class DaneStatus(StrEnum):
    INSECURE = "no AD bit"  # the host's addresses (or its TLSA set) are not DNSSEC-secure
    NONE = "no tlsa"  # secure, and no TLSA records
    UNUSABLE = "tlsa unusable"  # secure TLSA records, none usable
    USABLE = "dane"


@dataclass(frozen=True)
class DaneLookup:
    status: DaneStatus
    tlsa: TLSASet | None = None


async def lookup_tlsa(
    resolver: Resolver, host: str, port: int, *, addresses_secure: bool
) -> DaneLookup:
    """What DANE says about ``host``:``port``. Raises DNSTemporaryError
    when the TLSA lookup failed or came back bogus."""
    if not addresses_secure:
        return DaneLookup(DaneStatus.INSECURE)
    name = tlsa_name(host, port)
    try:
        answer = await resolver.tlsa(name)
    except DNSPermanentError:
        return DaneLookup(DaneStatus.NONE)  # a name no TLSA can live at
    if not answer.secure:
        return DaneLookup(DaneStatus.INSECURE)
    if not answer.records:
        return DaneLookup(DaneStatus.NONE)
    tlsa = TLSASet.of(answer.name, answer.records)
    return DaneLookup(DaneStatus.USABLE if tlsa.usable else DaneStatus.UNUSABLE, tlsa)
