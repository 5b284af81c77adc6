"""Returned messages made on purpose, for rehearsals: the developer sink's
``--bounce-after`` and ``--complain`` and the benchmark (pure).

A DSN as RFC 3464 shapes it (the original's headers returned, as with
``RET=HDRS``) and an ARF report as RFC 5965 shapes it, each from the bytes
of a message the sink accepted.
"""

from __future__ import annotations

from email.utils import formatdate, make_msgid

__all__ = ["build_arf", "build_dsn"]


def _headers_of(original: bytes) -> bytes:
    end = original.find(b"\r\n\r\n")
    if end < 0:
        end = original.find(b"\n\n")
    head = original if end < 0 else original[:end]
    return head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _envid(original: bytes) -> bytes | None:
    # the Message-ID's left part is the send id, which deliveries ask for
    # as ENVID; a receiving MTA echoes what it was given
    for line in _headers_of(original).split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            value = line.split(b":", 1)[1].strip().strip(b"<>")
            left = value.partition(b"@")[0]
            return left if left.isalnum() else None
    return None


def build_dsn(
    original: bytes,
    *,
    return_path: str,
    recipient: str,
    reporting_mta: str,
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 mailbox unknown",
    action: str = "failed",
) -> bytes:
    """A delivery status notification for ``original`` sent to
    ``recipient``, addressed to ``return_path``."""
    boundary = "dsn-" + make_msgid().strip("<>").replace("@", ".")
    envid = _envid(original)
    per_message = f"Reporting-MTA: dns; {reporting_mta}\r\n".encode()
    if envid is not None:
        per_message += b"Original-Envelope-Id: " + envid + b"\r\n"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{return_path}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Your message to <{recipient}> could not be delivered.",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
    ]
    block = [
        f"Final-Recipient: rfc822; {recipient}",
        f"Action: {action}",
        f"Status: {status}",
        f"Remote-MTA: dns; {reporting_mta}",
        f"Diagnostic-Code: smtp; {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    return (
        "\r\n".join(lines).encode()
        + b"\r\n"
        + per_message
        + b"\r\n"
        + "\r\n".join(block).encode()
        + b"\r\n"
        + _headers_of(original)
        + f"\r\n\r\n--{boundary}--\r\n".encode()
    )


def build_arf(
    original: bytes,
    *,
    to: str,
    recipient: str,
    reporter: str,
    feedback_type: str = "abuse",
) -> bytes:
    """An RFC 5965 feedback report about ``original`` (whole message
    attached), from a feedback loop at ``reporter`` to ``to``."""
    boundary = "arf-" + make_msgid().strip("<>").replace("@", ".")
    lines = [
        f"From: Feedback Loop <fbl@{reporter}>",
        f"To: <{to}>",
        "Subject: Abuse report",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {make_msgid(domain=reporter)}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="{boundary}"',
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "This is an email abuse report.",
        "",
        f"--{boundary}",
        "Content-Type: message/feedback-report",
        "",
        f"Feedback-Type: {feedback_type}",
        "User-Agent: mailer-rehearsal/1.0",
        "Version: 1",
        f"Original-Rcpt-To: <{recipient}>",
        "",
        f"--{boundary}",
        "Content-Type: message/rfc822",
        "",
    ]
    body = original.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return "\r\n".join(lines).encode() + b"\r\n" + body + f"\r\n--{boundary}--\r\n".encode()
