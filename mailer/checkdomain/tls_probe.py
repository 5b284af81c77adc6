"""The receiving-TLS probe: connect to one MX address on the SMTP port,
EHLO, is STARTTLS offered, does the handshake succeed, and what
certificate comes back.

It speaks just enough SMTP over asyncio streams and upgrades with an
unverifying client context (the same TLS ≥ 1.2 context delivery uses under
the ``encrypt`` policy), so the certificate is read even when it would not
verify; name and expiry are then judged here with ``cryptography.x509``.
Socket, TLS and protocol failures become fields of :class:`MXProbe`; only
cancellation propagates.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from mailer.config import TLSPolicy
from mailer.delivery.smtp import build_tls_context

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
_MAX_REPLY_LINES = 100
_QUIT_TIMEOUT = 2.0


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


class _ProtocolError(Exception):
    """A reply the probe cannot read; stays inside this module."""


async def _reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    """One (possibly multi-line) SMTP reply: its code and the text lines."""
    lines: list[str] = []
    for _ in range(_MAX_REPLY_LINES):
        try:
            raw = await reader.readline()
        except ValueError as exc:  # a line over the stream's 64 KiB limit
            raise _ProtocolError("reply line too long") from exc
        if not raw:
            raise _ProtocolError("connection closed by the server")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise _ProtocolError(f"not an SMTP reply: {line[:80]!r}")
        lines.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), lines
    raise _ProtocolError(f"reply longer than {_MAX_REPLY_LINES} lines")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str
) -> tuple[int, list[str]]:
    writer.write(line.encode("ascii") + b"\r\n")
    await writer.drain()
    return await _reply(reader)


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
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            probe.connected = True
            await _converse(probe, reader, writer, helo, now or utcnow())
    except TimeoutError:
        probe.error = f"{_stage(probe)}: no answer within {timeout:g}s"
    except ssl.SSLError as exc:
        probe.handshake_ok = False
        probe.error = f"TLS handshake failed: {exc.reason or exc} (we require TLS 1.2 or newer)"
    except _ProtocolError as exc:
        probe.error = f"{_stage(probe)}: {exc}"
    except (OSError, asyncio.IncompleteReadError) as exc:
        text = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
        probe.error = f"{_stage(probe)}: {text}"
    finally:
        if writer is not None:
            # No close_notify dance: the probe has what it came for.
            writer.transport.abort()
    return probe


def _stage(probe: MXProbe) -> str:
    if not probe.connected:
        return "connect failed"
    if probe.handshake_ok:
        return "after the TLS handshake"
    if probe.starttls_offered:
        return "STARTTLS failed"
    return "SMTP conversation failed"


async def _converse(
    probe: MXProbe,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    helo: str,
    now: datetime.datetime,
) -> None:
    code, lines = await _reply(reader)
    probe.greeting = " ".join(lines)
    if code != 220:
        probe.error = f"greeting refused: {code} {probe.greeting}"
        return
    code, lines = await _command(reader, writer, f"EHLO {helo}")
    if code != 250:
        probe.starttls_offered = False
        probe.error = f"EHLO refused: {code} {' '.join(lines)}"
        return
    probe.extensions = [line.split(" ", 1)[0].upper() for line in lines[1:] if line]
    probe.starttls_offered = "STARTTLS" in probe.extensions
    if not probe.starttls_offered:
        await _quit(reader, writer)
        return
    code, lines = await _command(reader, writer, "STARTTLS")
    if code != 220:
        probe.handshake_ok = False
        probe.error = f"STARTTLS refused: {code} {' '.join(lines)}"
        return
    await writer.start_tls(
        build_tls_context(TLSPolicy.ENCRYPT), server_hostname=host_for_sni(probe.host)
    )
    probe.handshake_ok = True
    ssl_object = writer.get_extra_info("ssl_object")
    if isinstance(ssl_object, ssl.SSLObject):
        probe.tls_version = ssl_object.version()
        cipher = ssl_object.cipher()
        probe.cipher = cipher[0] if cipher else None
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            try:
                probe.certificate = describe_certificate(der, probe.host, now)
            except ValueError as exc:
                probe.error = f"certificate cannot be read: {exc}"
    await _quit(reader, writer)


async def _quit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A polite QUIT; whatever goes wrong with it says nothing about TLS."""
    try:
        async with asyncio.timeout(_QUIT_TIMEOUT):
            await _command(reader, writer, "QUIT")
    except (TimeoutError, OSError, asyncio.IncompleteReadError, _ProtocolError):
        pass


def host_for_sni(host: str) -> str | None:
    """SNI carries host names only (RFC 6066 §3), never an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.rstrip(".")
    return None


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
