"""A sink message as the inbox pages show it (pure): its parts, its
attachments, its header fields, its unsubscribe header fields, the HTML
check, and the search over the list."""

from __future__ import annotations

import email.message
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailer.sink.checks import ONE_CLICK
from mailer.sink.record import SinkMessage
from mailer.sink.web.htmlcheck import HtmlReport, check_html

__all__ = ["Attachment", "MessageView", "attachment_bytes", "matches", "newest_first", "view"]

_URI = re.compile(r"<([^<>]*)>")


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    message: SinkMessage
    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    list_unsubscribe: tuple[str, ...]
    one_click: bool
    html_report: HtmlReport | None


def _content(part: email.message.MIMEPart | None) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken encoding
        return None
    return content if isinstance(content, str) else None


def _decoded(msg: email.message.EmailMessage, name: str, raw: object) -> str:
    """A header field's value with encoded words decoded; the raw text
    when it does not parse."""
    try:
        return str(msg.policy.header_fetch_parse(name, str(raw)))
    except (ValueError, TypeError, IndexError, AttributeError, LookupError):
        return str(raw)


def _attachments(msg: email.message.EmailMessage) -> list[email.message.MIMEPart]:
    try:
        return list(msg.iter_attachments())
    except (TypeError, ValueError, KeyError):  # not multipart, or a broken structure
        return []


def _payload_size(part: email.message.MIMEPart) -> int:
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def view(message: SinkMessage) -> MessageView:
    """Everything the message page shows about ``message``."""
    parsed = message.message
    headers = tuple((name, _decoded(parsed, name, value)) for name, value in parsed.raw_items())
    unsubscribe_values = [v for n, v in headers if n.lower() == "list-unsubscribe"]
    uris = tuple(uri.strip() for v in unsubscribe_values for uri in _URI.findall(v))
    one_click = any(
        n.lower() == "list-unsubscribe-post" and " ".join(v.split()) == ONE_CLICK
        for n, v in headers
    )
    html = _content(parsed.get_body(("html",)))
    attachments = tuple(
        Attachment(
            index,
            part.get_filename() or f"part-{index}",
            part.get_content_type(),
            _payload_size(part),
        )
        for index, part in enumerate(_attachments(parsed))
    )
    report = (
        None
        if html is None
        else check_html(html, message_bytes=len(message.data), list_unsubscribe=uris)
    )
    return MessageView(
        message=message,
        headers=headers,
        text=_content(parsed.get_body(("plain",))),
        html=html,
        attachments=attachments,
        list_unsubscribe=uris,
        one_click=one_click,
        html_report=report,
    )


def attachment_bytes(message: SinkMessage, index: int) -> tuple[Attachment, bytes] | None:
    """The ``index``-th attachment and its decoded bytes, or None."""
    parts = _attachments(message.message)
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    info = Attachment(
        index, part.get_filename() or f"part-{index}", part.get_content_type(), len(data)
    )
    return info, data


def matches(message: SinkMessage, query: str) -> bool:
    """Whether every word of ``query`` is in the sender, a recipient or
    the subject (case-insensitive)."""
    haystack = " ".join((message.mail_from, *message.rcpt_tos, message.subject)).casefold()
    return all(word in haystack for word in query.casefold().split())


def newest_first(
    messages: Iterable[SinkMessage], query: str = "", limit: int | None = None
) -> list[SinkMessage]:
    """The messages matching ``query``, newest first, at most ``limit``."""
    found: list[SinkMessage] = []
    for message in reversed(list(messages)):
        if limit is not None and len(found) >= limit:
            break
        if matches(message, query):
            found.append(message)
    return found
