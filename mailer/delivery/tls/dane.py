"""DANE for SMTP (RFC 7672): which TLSA records can be used, and whether
the certificate a server presented matches them (pure).

Usable records are DANE-EE (usage 3: the server's own certificate or key,
its names and dates ignored) and DANE-TA (usage 2: a trust anchor in the
chain the server presents, with the MX name and the dates checked from
it). PKIX-TA and PKIX-EE (0, 1) are not for SMTP (§3.1.3). Selectors:
the full certificate (0) or its SubjectPublicKeyInfo (1); matching types:
the data itself (0), SHA-256 (1), SHA-512 (2).

DANE-TA needs the whole chain the server sent; the ssl module hands it out
only from Python 3.13 (``SSLObject.get_unverified_chain``). On an older
runtime a DANE-TA record is unusable, so a set of only such records means
TLS without authentication, as for any unusable set (§2.2).
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from mailer.dns import TLSA

__all__ = [
    "PEER_CHAIN",
    "DaneMatch",
    "Selector",
    "TLSASet",
    "Usage",
    "association",
    "check",
    "tlsa_name",
    "usable",
]

# whether this runtime can hand out the chain the server presented
PEER_CHAIN: bool = hasattr(ssl.SSLObject, "get_unverified_chain")


class Usage(IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    CERT = 0
    SPKI = 1


_DIGEST_SIZE = {1: 32, 2: 64}


def tlsa_name(host: str, port: int) -> str:
    """Where the TLSA records of an MX host are published."""
    return f"_{port}._tcp.{host.rstrip('.')}"


def usable(record: TLSA, *, chain: bool = PEER_CHAIN) -> bool:
    """Whether a record can take part in matching: a DANE usage (DANE-TA
    only when the peer chain is available), a known selector and matching
    type, and association data of the right length (§2.2: anything else is
    unusable, never an error)."""
    if record.usage == Usage.DANE_EE:
        pass
    elif record.usage != Usage.DANE_TA or not chain:
        return False
    if record.selector not in (Selector.CERT, Selector.SPKI):
        return False
    if record.mtype == 0:
        return bool(record.data)
    return _DIGEST_SIZE.get(record.mtype) == len(record.data)


@dataclass(frozen=True)
class TLSASet:
    """The usable records of a DNSSEC-secure TLSA RRset; ``published`` is
    how many records the RRset held (all unusable when ``records`` is
    empty)."""

    name: str
    records: tuple[TLSA, ...]
    published: int

    @classmethod
    def of(cls, name: str, records: Sequence[TLSA], *, chain: bool = PEER_CHAIN) -> TLSASet:
        kept = tuple(r for r in records if usable(r, chain=chain))
        return cls(name, kept, len(records))

    @property
    def usable(self) -> bool:
        return bool(self.records)


def association(der: bytes, selector: int, mtype: int) -> bytes:
    """The association data of a certificate (DER) for a selector and a
    matching type. Raises ValueError for a certificate that cannot be
    parsed or an unknown selector or matching type."""
    if selector == Selector.CERT:
        selected = der
    elif selector == Selector.SPKI:
        certificate = x509.load_der_x509_certificate(der)
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    else:
        raise ValueError(f"unknown TLSA selector {selector}")
    if mtype == 0:
        return selected
    if mtype == 1:
        return hashlib.sha256(selected).digest()
    if mtype == 2:
        return hashlib.sha512(selected).digest()
    raise ValueError(f"unknown TLSA matching type {mtype}")


def _matches(record: TLSA, der: bytes) -> bool:
    try:
        return association(der, record.selector, record.mtype) == record.data
    except ValueError:
        return False


@dataclass(frozen=True)
class DaneMatch:
    """The outcome of matching: ``matched`` and, when not, why (for the
    attempt's text)."""

    matched: bool
    text: str


def check(
    tlsa: TLSASet,
    leaf: bytes | None,
    chain: Sequence[bytes] | None,
    host: str,
    now: datetime.datetime,
) -> DaneMatch:
    """Whether the server's certificate ``leaf`` (DER) satisfies the usable
    records of ``tlsa``: a DANE-EE record matching the leaf, or a DANE-TA
    record matching a certificate of ``chain`` (the server's chain, leaf
    first) from which the leaf verifies for ``host`` at ``now``."""
    if leaf is None:
        return DaneMatch(False, "the server presented no certificate")
    for record in tlsa.records:
        if record.usage == Usage.DANE_EE and _matches(record, leaf):
            return DaneMatch(True, f"DANE-EE {_describe(record)}")
    anchors = [r for r in tlsa.records if r.usage == Usage.DANE_TA]
    if anchors and chain:
        for issuer in chain[1:]:
            for record in anchors:
                if _matches(record, issuer) and _chains_to(leaf, chain, issuer, host, now):
                    return DaneMatch(True, f"DANE-TA {_describe(record)}")
    kinds = ", ".join(sorted({_describe(r) for r in tlsa.records}))
    text = f"certificate matches none of the TLSA records at {tlsa.name} ({kinds})"
    return DaneMatch(False, text)


def _chains_to(
    leaf: bytes, chain: Sequence[bytes], anchor: bytes, host: str, now: datetime.datetime
) -> bool:
    """The leaf verifies for ``host`` up to ``anchor`` (as a trust anchor)
    through the other certificates the server sent."""
    try:
        trusted = x509.load_der_x509_certificate(anchor)
        certificate = x509.load_der_x509_certificate(leaf)
        intermediates = [x509.load_der_x509_certificate(c) for c in chain[1:] if c != anchor]
        verifier = (
            PolicyBuilder()
            .store(Store([trusted]))
            .time(now)
            .build_server_verifier(x509.DNSName(host.rstrip(".")))
        )
        verifier.verify(certificate, intermediates)
    except (ValueError, VerificationError):
        return False
    return True


def _describe(record: TLSA) -> str:
    return f"{record.usage} {record.selector} {record.mtype}"
