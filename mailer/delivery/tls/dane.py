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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from mailer.dns import TLSA

__all__ = [
    "PEER_CHAIN",
    "DaneMatch",
    "Selector",
    "TLSASet",
    "Usage",
    "association",
    "check",
    "presentation",
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
    empty) and ``rrset`` the RRset itself, as TLS reports name it."""

    name: str
    records: tuple[TLSA, ...]
    published: int
    rrset: tuple[TLSA, ...] = ()

    @classmethod
    def of(cls, name: str, records: Sequence[TLSA], *, chain: bool = PEER_CHAIN) -> TLSASet:
        kept = tuple(r for r in records if usable(r, chain=chain))
        return cls(name, kept, len(records), tuple(records))

    @property
    def usable(self) -> bool:
        return bool(self.records)


def presentation(tlsa: TLSASet) -> tuple[str, ...]:
    """The RRset in presentation format (RFC 6698 §2.3), one record a
    string, as RFC 8460 §4.4 wants a TLSA ``policy-string``: every record
    published, usable or not (the receiving domain debugs what it
    published, not what this client could use), in sorted order so that one
    RRset is one policy whatever order the resolver answered in."""
    owner = tlsa.name.rstrip(".") + "."
    return tuple(
        sorted(
            f"{owner} IN TLSA {r.usage} {r.selector} {r.mtype} {r.data.hex()}" for r in tlsa.rrset
        )
    )


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
    """The leaf is for ``host``, valid at ``now``, and issued, through the
    other certificates the server sent (each a valid CA certificate), by
    ``anchor``. The anchor's own dates are not checked: DANE made it one.

    Done here rather than by a general path validator: those hold private
    CAs to the public web's certificate profile, which DANE-TA does not."""
    try:
        trusted = x509.load_der_x509_certificate(anchor)
        current = x509.load_der_x509_certificate(leaf)
        others = [x509.load_der_x509_certificate(c) for c in chain[1:] if c != anchor]
    except ValueError:
        return False
    if not _valid_at(current, now) or not _names_match(current, host):
        return False
    for _ in range(len(others) + 1):
        if _issued_by(current, trusted):
            return True
        issuer = next((c for c in others if _issued_by(current, c)), None)
        if issuer is None or not _valid_at(issuer, now) or not _is_ca(issuer):
            return False
        others.remove(issuer)
        current = issuer
    return False


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _valid_at(certificate: x509.Certificate, now: datetime.datetime) -> bool:
    return certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _names_match(certificate: x509.Certificate, host: str) -> bool:
    """``host`` among the certificate's DNS names (the subject's common
    name when it has none); a wildcard stands for one leftmost label."""
    wanted = host.rstrip(".").lower()
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [
            str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    for name in names:
        name = name.rstrip(".").lower()
        if name == wanted:
            return True
        if name.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == name[2:]:
            return True
    return False


def _describe(record: TLSA) -> str:
    return f"{record.usage} {record.selector} {record.mtype}"
