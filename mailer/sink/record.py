"""The one record of a message the sink accepted: its envelope, bytes and
TLS session as the SMTP server saw them, and, once the developer sink has
checked it, what a receiver would tell about it (DKIM per signature, the
header checks, SPF and DMARC). The recording sink (``Sink``) keeps the
first half only: its messages have no ``id`` and no findings."""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
from dataclasses import dataclass
from functools import cached_property

from mailer.sink.auth import DmarcVerdict, SpfVerdict
from mailer.sink.checks import HeaderCheck, parse_message
from mailer.sink.verify import DkimResult

__all__ = ["SinkMessage"]


@dataclass(frozen=True)
class SinkMessage:
    """One message the sink accepted, with what it found out about it
    (empty findings when it was not checked)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls_version: str | None
    peer: str
    received_at: float
    tls_cipher: str | None = None
    id: str = ""
    dkim: tuple[DkimResult, ...] = ()
    checks: tuple[HeaderCheck, ...] = ()
    spf: SpfVerdict | None = None
    dmarc: DmarcVerdict | None = None

    @property
    def message(self) -> email.message.EmailMessage:
        """The message parsed with ``email.policy.default``; CRLF line ends
        become ``\\n`` so decoded text compares like Python strings."""
        return parse_message(self.data)

    @cached_property
    def subject(self) -> str:
        """The decoded Subject ("" when there is none or it cannot be
        read); only the header section is parsed, once."""
        head = self.data.replace(b"\r\n", b"\n").partition(b"\n\n")[0]
        parsed = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
        try:
            value = parsed["Subject"]
        except (ValueError, TypeError, IndexError, AttributeError):
            return ""
        return "" if value is None else str(value)

    @property
    def dkim_pass(self) -> bool:
        """Signed, and every signature verifies."""
        return bool(self.dkim) and all(result.ok for result in self.dkim)

    @property
    def checks_ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def check(self, name: str) -> HeaderCheck:
        """The header check called ``name``. Raises KeyError for an unknown name."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)
