"""The receiving-TLS probe: connect to one MX address on the SMTP port,
EHLO, is STARTTLS offered, does the handshake succeed, and what
certificate comes back.

It opens the delivery's own session (:func:`mailer.delivery.smtp.open_session`)
under the ``encrypt`` policy, so the certificate is read even when it would
not verify; name and expiry are then judged here with ``cryptography.x509``.
The stage a failed session reached and its error become fields of
:class:`MXProbe`; only cancellation propagates.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailer.config import TLSPolicy
from mailer.delivery.smtp import Session, open_session
from mailer.errors import DeliveryError, SMTPReplyError, TLSUnavailable

__all__ = [
    "PROBE_TIMEOUT",
    "CertificateInfo",
    "MXProbe",
    "describe_certificate",
    "host_for_sni",
    "name_matches",
    "probe_mx",
    "utcnow",
]

# The probe answers a person waiting at a terminal or an HTTP client.
PROBE_TIMEOUT = 20.0


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    days_left: int  # whole days, truncated toward zero (negative once expired)
    matches_host: bool
    self_signed: bool
    expired: bool
    not_yet_valid: bool


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 §6.4: case-insensitive, a ``*`` only as the whole leftmost
    label, standing for exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    first, dot, rest = host.partition(".")
    return bool(first) and bool(dot) and rest == pattern[2:] and "*" not in rest


def describe_certificate(der: bytes, host: str, now: datetime.datetime) -> CertificateInfo:
    """Subject, names, validity and name match of a DER certificate.

    Raises ValueError when ``der`` is not a certificate.
    """
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        # RFC 6125 §6.4.4: the CN counts only without a subjectAltName.
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    not_after = cert.not_valid_after_utc
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=tuple(names),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        days_left=int((not_after - now).total_seconds() / 86400),
        matches_host=_host_matches(names, host),
        self_signed=cert.issuer == cert.subject,
        expired=not_after < now,
        not_yet_valid=now < cert.not_valid_before_utc,
    )


def _host_matches(names: Sequence[str], host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(name_matches(name, host) for name in names)
    return any(name == str(address) for name in names)


@dataclass
class MXProbe:
    """What one MX address did; ``error`` names the step that failed."""

    host: str
    address: str | None
    port: int
    connected: bool = False
    greeting: str | None = None
    starttls_offered: bool | None = None
    handshake_ok: bool | None = None
    tls_version: str | None = None
    cipher: str | None = None
    certificate: CertificateInfo | None = None
    error: str | None = None
    extensions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        cert = self.certificate
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "connected": self.connected,
            "starttls": self.starttls_offered,
            "handshake": self.handshake_ok,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "certificate": None
            if cert is None
            else {
                "subject": cert.subject,
                "issuer": cert.issuer,
                "names": list(cert.names),
                "not_after": cert.not_after.isoformat(),
                "days_left": cert.days_left,
                "expired": cert.expired,
                "matches_host": cert.matches_host,
                "self_signed": cert.self_signed,
            },
            "error": self.error,
        }


async def probe_mx(
    host: str,
    address: str,
    port: int,
    *,
    helo: str,
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 - one bound for the whole probe
    now: datetime.datetime | None = None,
) -> MXProbe:
    """Connect, EHLO, STARTTLS and read the certificate of one MX address.

    Never raises for network, TLS or protocol trouble (see ``error``);
    cancellation propagates.
    """
    probe = MXProbe(host, address, port)
    try:
        async with asyncio.timeout(timeout):
            session = await open_session(
                host, address, port, helo=helo, policy=TLSPolicy.ENCRYPT, timeout=timeout
            )
            async with session:
                _read(probe, session, now or utcnow())
    except TimeoutError:
        probe.error = f"no answer within {timeout:g}s"
    except DeliveryError as exc:
        _failed(probe, exc)
    return probe


def _read(probe: MXProbe, session: Session, now: datetime.datetime) -> None:
    probe.connected = True
    probe.greeting = session.greeting
    probe.extensions = list(session.extensions)
    probe.starttls_offered = probe.handshake_ok = True
    probe.tls_version = session.tls.version or None
    probe.cipher = session.tls.cipher or None
    if session.tls.certificate:
        try:
            probe.certificate = describe_certificate(session.tls.certificate, probe.host, now)
        except ValueError as exc:
            probe.error = f"certificate cannot be read: {exc}"


def _failed(probe: MXProbe, exc: DeliveryError) -> None:
    """What a session that did not get ready tells about the host."""
    stage = exc.stage or "connect"
    # a server's reply as code and text; otherwise the error without the
    # "host [address]:port: " it starts with
    said = str(exc) if isinstance(exc, SMTPReplyError) else exc.text.partition(": ")[2]
    probe.connected = stage != "connect"
    if stage == "connect":
        probe.error = f"connect failed: {said}"
    elif stage == "greeting":
        refused = isinstance(exc, SMTPReplyError)
        probe.error = f"greeting refused: {said}" if refused else f"no SMTP greeting: {said}"
    elif stage == "ehlo":
        if isinstance(exc, TLSUnavailable):
            probe.starttls_offered = False  # not offered, or no ESMTP at all
        else:
            probe.error = f"EHLO refused: {said}"
    elif stage == "starttls":
        probe.starttls_offered, probe.handshake_ok = True, False
        probe.error = said if isinstance(exc, TLSUnavailable) else f"STARTTLS refused: {said}"
    elif stage == "tls":
        probe.starttls_offered, probe.handshake_ok = True, False
        probe.error = f"{said} (we require TLS 1.2 or newer)"
    else:
        probe.starttls_offered = probe.handshake_ok = True
        probe.error = f"after the TLS handshake: {said}"


def host_for_sni(host: str) -> str | None:
    """SNI carries host names only (RFC 6066 §3), never an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".")
    return None


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
