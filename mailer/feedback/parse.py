"""One entry point: raw bytes of a returned message → :class:`Report`.

The order: ARF complaint, RFC 3464 notification, the plain-text layouts,
then RFC 3834 auto-reply (a DSN is ``Auto-Submitted`` too, so it must be
recognised as a bounce first). What none of them understands is
``unknown`` with a ``problem``: it is kept, never a crash.
"""

from __future__ import annotations

from email.errors import MessageError
from email.message import Message

from mailer.feedback import mime
from mailer.feedback.arf import is_arf, parse_arf
from mailer.feedback.autoreply import is_autoreply, parse_autoreply
from mailer.feedback.dsn import is_dsn, parse_dsn
from mailer.feedback.layouts import DETECTORS, fold
from mailer.feedback.model import Action, Kind, Report

__all__ = ["parse_message"]


def parse_message(raw: bytes) -> Report:
    """What ``raw`` says. Pure and total: malformed MIME, undecodable bytes
    and texts no detector knows all end as a Report, kind ``unknown`` when
    nothing could be understood. Raises nothing."""
    try:
        return _parse(raw)
    except (MessageError, LookupError, ValueError, TypeError, IndexError, AttributeError) as exc:
        # the stdlib parser is lenient, but a hostile message can still
        # reach an accessor that raises; the message is kept as unknown
        return Report(Kind.UNKNOWN, "none", problem=f"unreadable message: {exc!r}"[:300])


def _parse(raw: bytes) -> Report:
    msg = mime.load(raw)
    if is_arf(msg):
        return parse_arf(msg)
    if is_dsn(msg):
        report = parse_dsn(msg)
        if report.kind is not Kind.UNKNOWN:
            return report
    text = mime.first_text(msg)
    folded = fold(text)
    for detector in DETECTORS:
        if not detector.could_be(folded):
            continue
        recipients = detector.detect(text)
        if recipients is None:
            continue
        original = mime.original_headers(msg)
        message_id = original.get("message-id") or _quoted_message_id(msg, text)
        failed = any(r.action is Action.FAILED for r in recipients)
        return Report(
            Kind.BOUNCE if failed else Kind.DELAY,
            detector.name,
            recipients=recipients,
            original_message_id=message_id,
            feedback_id=original.get("feedback-id"),
            subject=mime.header(msg, "subject"),
        )
    if is_autoreply(msg):
        return parse_autoreply(msg)
    return Report(
        Kind.UNKNOWN,
        "none",
        original_message_id=mime.original_headers(msg).get("message-id"),
        subject=mime.header(msg, "subject"),
        problem="no known report or bounce layout",
    )


def _quoted_message_id(msg: Message, text: str) -> str | None:
    """A Message-ID line of the original quoted in the body (the layouts
    that paste the original below a marker line, or attach it as text)."""
    found = mime.message_id_in_text(text)
    if found is not None or not msg.is_multipart():
        return found
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            found = mime.message_id_in_text(mime.text_of(part))
            if found is not None:
                return found
    return None
