"""Reading returned messages with the stdlib ``email`` package.

The ``compat32`` policy on purpose: it never raises on a malformed header
when one is read (the ``default`` policy's header objects can), it keeps
undecodable bytes as surrogate escapes instead of failing, and it is the
faster of the two. Everything here is pure and raises nothing.
"""

from __future__ import annotations

import email.feedparser
import re
from collections.abc import Iterator
from email.message import Message
from email.parser import BytesParser, Parser
from email.policy import compat32
from typing import Any


class _Part(Message):
    """A message part that works its content type out once: the parsers
    ask each part for it over and over (every walk looking for a report,
    status or original part), and each answer scans the headers anew.
    Whatever can change it forgets it."""

    _content_type: str | None = None

    def get_content_type(self) -> str:
        if self._content_type is None:
            self._content_type = super().get_content_type()
        return self._content_type

    def set_raw(self, name: str, value: Any) -> None:
        self._content_type = None
        super().set_raw(name, value)

    def __setitem__(self, name: str, val: Any) -> None:
        self._content_type = None
        super().__setitem__(name, val)

    def __delitem__(self, name: str) -> None:
        self._content_type = None
        super().__delitem__(name)

    def replace_header(self, _name: str, _value: Any) -> None:
        self._content_type = None
        super().replace_header(_name, _value)

    def set_default_type(self, ctype: str) -> None:
        self._content_type = None
        super().set_default_type(ctype)


# the parser's own header-line and newline patterns (absent from the type
# stubs): the header block must end exactly where the parser would end it
_HEADER_LINE: re.Pattern[str] = email.feedparser.headerRE  # type: ignore[attr-defined]
_NEWLINE: re.Pattern[str] = email.feedparser.NLCRE  # type: ignore[attr-defined]
# The header block as the parser reads it: lines its header-line pattern
# takes, ended where str.splitlines ends them (the parser splits its input
# so; of those line boundaries only these survive the ASCII decoding, which
# makes every byte above 0x7f a surrogate escape).
_HEADER_BLOCK = re.compile(
    "(?:"
    + _HEADER_LINE.pattern.removeprefix("^")
    + r"[^\n\r\x0b\x0c\x1c\x1d\x1e]*(?:\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e]))*"
)

_PARSER = BytesParser(_Part, policy=compat32)
_HEAD_ONLY = Parser(_Part, policy=compat32)
_COMPOSITE = re.compile(
    rb"^content-type:[ \t]*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE
)
_MESSAGE_ID = re.compile(r"^\s*Message-I[dD]\s*:\s*(<[^<>\s]+>)", re.MULTILINE)
_HEADER = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*:\s*(.*)$", re.MULTILINE)


def load(raw: bytes) -> Message:
    """The message tree of ``raw``. Most plain-text bounces are a single
    part: their body is kept as it stands instead of being fed through the
    MIME parser line by line (half the parse time); multipart and message
    types get the full parse."""
    if _COMPOSITE.search(raw, 0, _header_end(raw)):
        # the full parse is right for any message (a single part comes out
        # as the header-only one would), so this guess needs to be cheap,
        # not exact: it spares a composite message parsing its header twice
        return _PARSER.parsebytes(raw)
    head = _head(raw)
    if head.get_content_maintype() in ("multipart", "message"):
        return _PARSER.parsebytes(raw)
    return head


def _header_end(raw: bytes) -> int:
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    return min(ends) if ends else len(raw)


def _head(raw: bytes) -> Message:
    """The header block of ``raw`` parsed, the body after it set as the
    payload unparsed: what the parser's ``headersonly`` mode gives, without
    reading the body through it line by line. The block ends where the
    parser's own rules end it (its header-line and newline patterns, the
    same line splitting); a message whose headers run into a line that is
    neither is left to the parser, which records that defect."""
    text = raw.decode("ascii", errors="surrogateescape")
    offset = _HEADER_BLOCK.match(text).end()  # type: ignore[union-attr]  # "" at least
    # the parser ends the block at a line that is only a newline
    separator = _NEWLINE.match(text, offset)
    if separator is not None:
        head = _HEAD_ONLY.parsestr(text[:offset], headersonly=True)
        head.set_payload(text[separator.end() :])
        return head
    return _PARSER.parsebytes(raw, headersonly=True)


def header(msg: Message, name: str) -> str | None:
    """One header as text with folding undone, or None."""
    value = msg.get(name)
    if value is None:
        return None
    text = str(value)
    return " ".join(text.split()) or None


def text_of(part: Message) -> str:
    """A leaf part's text: transfer encoding undone, charset decoded with
    replacement (a wrong or unknown charset must not lose the rest)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def walk(msg: Message) -> Iterator[Message]:
    """Every part, depth first, including the root."""
    yield from msg.walk()


def first_text(msg: Message) -> str:
    """The human-readable text of a message: its first ``text/plain``
    part outside any attached message, else the first text part, else the
    body as it stands."""
    fallback: str | None = None
    for part in _own_parts(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain":
            return text_of(part)
        if fallback is None and part.get_content_maintype() == "text":
            fallback = _strip_tags(text_of(part))
    if fallback is not None:
        return fallback
    return "" if msg.is_multipart() else text_of(msg)


def _own_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts of ``msg`` that are not inside an attached message."""
    if msg.is_multipart():
        payload = msg.get_payload()
        if isinstance(payload, list):
            for sub in payload:
                if isinstance(sub, Message) and sub.get_content_type() not in (
                    "message/rfc822",
                    "text/rfc822-headers",
                    "message/delivery-status",
                    "message/feedback-report",
                ):
                    yield from _own_parts(sub)
    else:
        yield msg


def _strip_tags(html: str) -> str:
    return re.sub(r"<[^>]*>", " ", html)


def original_headers(msg: Message) -> dict[str, str]:
    """Headers of the returned original (``message/rfc822`` or
    ``text/rfc822-headers`` part, or a ``message/rfc822-headers`` one),
    lower-cased names; the first occurrence of each wins."""
    for part in walk(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return {
                    k.lower(): " ".join(str(v).split()) for k, v in reversed(payload[0].items())
                }
        if ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            return headers_in_text(text_of(part))
    return {}


def headers_in_text(text: str) -> dict[str, str]:
    """``Name: value`` lines of a header block quoted as text (folded
    lines joined), lower-cased names, first occurrence wins."""
    unfolded = re.sub(r"\r?\n[ \t]+", " ", text)
    found: dict[str, str] = {}
    for match in _HEADER.finditer(unfolded):
        found.setdefault(match.group(1).lower(), match.group(2).strip())
    return found


def message_id_in_text(text: str) -> str | None:
    """The first ``Message-ID: <…>`` line of a quoted original in a text."""
    match = _MESSAGE_ID.search(text)
    return match.group(1) if match else None
