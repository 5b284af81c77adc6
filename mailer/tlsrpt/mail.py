"""The report mail of RFC 8460 §5.3: a ``multipart/report`` with
``report-type="tlsrpt"``, a short human-readable part and the gzipped JSON
report as an ``application/tlsrpt+gzip`` attachment; the
``TLS-Report-Domain`` and ``TLS-Report-Submitter`` header fields, and
``TLS-Required: No`` (RFC 8689 §5) so that the report of a domain whose
TLS is broken can still reach it."""

from __future__ import annotations

import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage

from mailer.delivery.tls.report import MEDIA_TYPE
from mailer.errors import ValidationError
from mailer.message.signing import DEFAULT_SIGNED_HEADERS

__all__ = ["REPORT_SIGNED_HEADERS", "ReportMail", "compose"]

#: The report's own header fields are signed too: a receiver trusts the
#: domain and submitter they name only under the submitter's signature.
REPORT_SIGNED_HEADERS: tuple[bytes, ...] = (
    *DEFAULT_SIGNED_HEADERS,
    b"tls-report-domain",
    b"tls-report-submitter",
    b"tls-required",
)


@dataclass(frozen=True)
class ReportMail:
    from_address: str
    to_address: str
    domain: str
    submitter: str
    report_id: str
    filename: str
    body: bytes  # the gzipped JSON report


def _line(field: str, value: str) -> str:
    if any(c in value for c in "\r\n"):
        raise ValidationError(field, "CR or LF in a header value")
    return value


def compose(mail: ReportMail, *, now: float, message_id_domain: str) -> bytes:
    """The unsigned message, CRLF line ends. Raises ValidationError naming
    the field for a value with CR or LF."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = _line("from_address", mail.from_address)
    msg["To"] = _line("rua", mail.to_address)
    msg["Subject"] = (
        f"Report Domain: {_line('domain', mail.domain)} "
        f"Submitter: {_line('submitter', mail.submitter)} "
        f"Report-ID: <{_line('report_id', mail.report_id)}>"
    )
    msg["Date"] = email.utils.formatdate(now, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid("tlsrpt", domain=message_id_domain)
    msg["TLS-Report-Domain"] = mail.domain
    msg["TLS-Report-Submitter"] = mail.submitter
    msg["TLS-Required"] = "No"
    msg.set_content(
        f"This is an aggregate TLS report (RFC 8460) from {mail.submitter} for {mail.domain}.\n"
    )
    maintype, subtype = MEDIA_TYPE.split("/")
    msg.add_attachment(
        mail.body, maintype=maintype, subtype=subtype, filename=_line("filename", mail.filename)
    )
    # add_attachment made it multipart/mixed; the boundary stays
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()
