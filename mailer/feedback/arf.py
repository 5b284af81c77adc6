"""RFC 5965 abuse reports (ARF), as the mailbox providers' feedback loops
send them (pure).

``multipart/report; report-type=feedback-report``: a human part, a
``message/feedback-report`` part (``Feedback-Type``, ``Original-Rcpt-To``,
…) and the original message or its headers. Most providers redact the
recipient in the original; ``Original-Rcpt-To`` is then the only place it
appears, and often not even there: the Message-ID is what matches.
"""

from __future__ import annotations

from email.message import Message

from mailer.feedback import mime
from mailer.feedback.model import Kind, Report

# Feedback types that are complaints about the mail: they suppress. The
# rest (not-spam, auth-failure as in DMARC failure reports, virus, other)
# are events only.
COMPLAINT_TYPES = frozenset({"abuse", "fraud"})


def is_arf(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() == "feedback-report"
        or _report_part(msg) is not None
    )


def parse_arf(msg: Message) -> Report:
    """The feedback report of ``msg``; ``unknown`` when the report part is
    missing or has no Feedback-Type."""
    part = _report_part(msg)
    if part is None:
        return Report(Kind.UNKNOWN, "arf", problem="no message/feedback-report part")
    fields = _fields(part)
    feedback_type = (fields.get("feedback-type") or "").strip().lower() or None
    if feedback_type is None:
        return Report(Kind.UNKNOWN, "arf", problem="feedback report without Feedback-Type")
    original = mime.original_headers(msg)
    recipient = _address(fields.get("original-rcpt-to")) or _address(original.get("to"))
    return Report(
        Kind.COMPLAINT,
        "arf",
        feedback_type=feedback_type,
        original_message_id=original.get("message-id"),
        original_recipient=recipient,
        feedback_id=original.get("feedback-id"),
        subject=mime.header(msg, "subject"),
    )


def _report_part(msg: Message) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def _fields(part: Message) -> dict[str, str]:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        fields: dict[str, str] = {}
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            for key, value in sub.items():
                fields.setdefault(key.lower(), " ".join(str(value).split()))
        return fields
    return mime.headers_in_text(mime.text_of(part))


def _address(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if "<" in value and ">" in value:
        value = value[value.index("<") + 1 : value.index(">")]
    value = value.strip()
    return value if "@" in value and "redacted" not in value.lower() else None
