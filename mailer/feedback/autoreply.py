"""RFC 3834 automatic responses: vacation and out-of-office replies, in
German and English (pure).

RFC 3834 §5 asks responders to send ``Auto-Submitted: auto-replied``; many
(Exchange, older vacation programs) mark themselves with their own headers
instead (``X-Autoreply``, ``X-Autorespond``, ``Precedence: auto_reply``,
``X-Auto-Response-Suppress``) or only with a subject. A delivery status
notification carries ``Auto-Submitted`` too, so this test runs after the
bounce detectors.
"""

from __future__ import annotations

import re
from email.message import Message

from mailer.feedback import mime
from mailer.feedback.model import Kind, Report

_SUBJECT = re.compile(
    r"(out of (the )?office|abwesenheit|automatische antwort|auto(matic)?[- ]?reply|"
    r"autoreply|vacation|urlaub|on leave|away from (the|my) office|nicht im b(ü|ue)ro|"
    r"außer haus|ausser haus|abwesend|automatic response)",
    re.IGNORECASE,
)
_VENDOR_HEADERS = ("x-autoreply", "x-autorespond", "x-autoresponder")


def is_autoreply(msg: Message) -> bool:
    """Whether ``msg`` marks itself, or reads, as an automatic reply."""
    auto = (mime.header(msg, "auto-submitted") or "").lower()
    if auto.startswith("auto-replied"):
        return True
    if any(msg.get(name) is not None for name in _VENDOR_HEADERS):
        return True
    if (mime.header(msg, "precedence") or "").lower() == "auto_reply":
        return True
    subject = mime.header(msg, "subject") or ""
    return bool(_SUBJECT.search(subject))


def parse_autoreply(msg: Message) -> Report:
    """The auto-reply ``msg``: who answered, and to which message."""
    sender = mime.header(msg, "from") or ""
    address = sender[sender.find("<") + 1 : sender.rfind(">")] if "<" in sender else sender
    in_reply_to = mime.header(msg, "in-reply-to")
    references = (mime.header(msg, "references") or "").split()
    return Report(
        Kind.AUTOREPLY,
        "rfc3834",
        original_message_id=in_reply_to or (references[-1] if references else None),
        original_recipient=address.strip() or None,
        subject=mime.header(msg, "subject"),
    )
