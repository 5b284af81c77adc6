"""Builds the RFC 5322 bytes of one message, ready for DKIM and SMTP DATA.

This runs once per message on the hot path, so headers and parts are
assembled directly as bytes with the C encoders (binascii)
instead of through ``email.message.EmailMessage`` and its generator, which
costs some 30 times more. Line endings are CRLF throughout, no line exceeds
998 octets, and header lines stay within 78 characters where the content
allows.

Bodies: ASCII text that is valid 7bit goes as is; anything else is base64.
Quoted-printable would be a little shorter and readable for Latin-script
text, but binascii's encoder costs several times as much as base64
(docs/performance.md), and the service's
own tools decode what they show. Base64 text with charset utf-8 is not held
against a message by SpamAssassin (MIME_BASE64_TEXT only fires without a
charset or for us-ascii).

Non-ASCII header text is written as RFC 2047 encoded-words (UTF-8, "Q" or
"B", whichever is shorter, each word at most 75 characters and never
splitting a character); ASCII text that a reader could misparse (leading or
trailing blanks, ``=?``) is encoded too, so every value round-trips exactly.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
import re
import secrets
from collections.abc import Sequence
from datetime import datetime

from mailer.errors import ValidationError
from mailer.message.addresses import Address, check_header_value, normalise_display_name
from mailer.message.templates import Rendered

__all__ = ["build_message"]

_CRLF = "\r\n"
# MIME boundaries: a keyed BLAKE2b of a counter is as unpredictable as fresh
# random bits to whoever writes a template, and needs no getrandom() system
# call, which gives up the GIL, per message: on the event loop's thread every
# GIL release can mean waiting for the signing and store threads.
_BOUNDARY_KEY = secrets.token_bytes(32)
_BOUNDARY_COUNT = itertools.count()


def _boundary_bits() -> str:
    counter = next(_BOUNDARY_COUNT).to_bytes(8, "big")
    return hashlib.blake2b(counter, key=_BOUNDARY_KEY, digest_size=16).hexdigest()


_IDEAL_LINE = 78
_MAX_LINE = 998
_MAX_WORD = 75  # RFC 2047 limit for one encoded-word
_B_PREFIX, _Q_PREFIX, _SUFFIX = "=?utf-8?b?", "=?utf-8?q?", "?="
_WORD_OVERHEAD = len(_B_PREFIX) + len(_SUFFIX)
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}"
_ADDR_SPEC = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_DOMAIN}\Z")
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>\Z")
# A display name made of atoms separated by single spaces needs no quoting.
_PLAIN_PHRASE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*\Z")
# Printable ASCII with single interior blanks: safe as unstructured text.
_PLAIN_TEXT = re.compile(r"[!-~]+(?:[ \t][!-~]+)*\Z")
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")
# What may stay in 7bit data: NUL and the other controls may not. Deleting
# these with bytes.translate and finding nothing left is the fast check.
_SEVEN_BIT_TEXT = bytes(range(0x20, 0x7F)) + b"\t\r\n"
_BEFORE_BLANK = re.compile(r"(?=[ \t])")
_URL_FORBIDDEN = re.compile(r"[\s<>,\"]")
# The service's own link in development (`mailer serve --dev`) is plain HTTP
# on this machine: a browser here opens it, no one else can.
_LOOPBACK_HTTP = re.compile(r"http://(?:localhost|127\.\d+\.\d+\.\d+|\[::1\])[:/]", re.I)

# Q-encoding restricted to the characters RFC 2047 §5(3) allows in a phrase,
# so the same words serve display names and unstructured headers.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_BYTE = tuple(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256))
_Q_LEN = bytes(map(len, _Q_BYTE))

_RESERVED_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)


def _encoded_words(text: str, first_room: int) -> list[str]:
    """``text`` as UTF-8 encoded-words, "B" or "Q" whichever is shorter, the
    first at most ``first_room`` characters long, the others at most 75;
    a word always holds at least one whole character."""
    data = text.encode("utf-8")
    q = "".join(map(_Q_BYTE.__getitem__, data))
    b_len = (len(data) + 2) // 3 * 4
    if b_len < len(q):
        if b_len + _WORD_OVERHEAD <= first_room:
            return [f"{_B_PREFIX}{base64.b64encode(data).decode('ascii')}{_SUFFIX}"]
        return _split_words(text, first_room, b=True)
    if len(q) + _WORD_OVERHEAD <= first_room:
        return [f"{_Q_PREFIX}{q}{_SUFFIX}"]
    return _split_words(text, first_room, b=False)


def _split_words(text: str, first_room: int, *, b: bool) -> list[str]:
    # Cut the UTF-8 octets greedily, each word as long as its room allows,
    # only ever between characters (a continuation octet is 10xxxxxx); the
    # sizes come from C-level passes, not a Python step per character.
    data = text.encode("utf-8")
    size = len(data)
    # encoded length of data[:i] for "Q"; for "B" it follows from the octets
    ends = None if b else [0, *itertools.accumulate(map(_Q_LEN.__getitem__, data))]
    words: list[str] = []
    room = first_room - _WORD_OVERHEAD
    start = 0
    while start < size:
        if ends is None:
            end = min(start + room // 4 * 3, size)
        else:
            end = bisect.bisect_right(ends, ends[start] + room, lo=start) - 1
        while start < end < size and data[end] & 0xC0 == 0x80:
            end -= 1
        if end <= start:  # not even one character fits: it gets a word of its own
            end = start + 1
            while end < size and data[end] & 0xC0 == 0x80:
                end += 1
        chunk = data[start:end]
        if b:
            words.append(f"{_B_PREFIX}{base64.b64encode(chunk).decode('ascii')}{_SUFFIX}")
        else:
            words.append(f"{_Q_PREFIX}{''.join(map(_Q_BYTE.__getitem__, chunk))}{_SUFFIX}")
        start = end
        room = _MAX_WORD - _WORD_OVERHEAD
    return words


def _fold_words(words: Sequence[str], first_room: int) -> str:
    """Join blank-separated words, breaking lines before a blank so that
    unfolding (removing the CRLFs) restores the original exactly."""
    lines: list[str] = []
    line = ""
    room = first_room
    for word in words:
        if line and len(line) + len(word) > room:
            lines.append(line)
            line, room = "", _IDEAL_LINE
        line += word
    lines.append(line)
    return _CRLF.join(lines)


def _format_date(date: datetime) -> str:
    """RFC 5322 date-time; what email.utils.format_datetime writes, at a
    fraction of its cost."""
    offset = date.utcoffset()
    assert offset is not None  # checked by the caller
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return (
        f"{_DAYS[date.weekday()]}, {date.day:02d} {_MONTHS[date.month - 1]} {date.year:04d} "
        f"{date.hour:02d}:{date.minute:02d}:{date.second:02d} {sign}{hours:02d}{minutes:02d}"
    )


def _unstructured(name: str, field: str, value: str) -> str:
    """One ``Name: value`` header line (folded), ``value`` checked."""
    check_header_value(field, value)
    first_room = _IDEAL_LINE - len(name) - 2
    if value == "" or (
        value.isascii() and "=?" not in value and _PLAIN_TEXT.match(value) is not None
    ):
        # Fold at blanks: each fold point keeps its blank on the next line.
        pieces = _BEFORE_BLANK.split(value)
        if max(map(len, pieces)) + len(name) + 2 <= _MAX_LINE:
            return f"{name}: {_fold_words(pieces, first_room)}"
    words = _encoded_words(value, first_room)
    return f"{name}: {(_CRLF + ' ').join(words)}"


def _mailbox(name: str, field: str, address: Address) -> str:
    """``Name: display-name <addr>`` with the display name as atoms, a
    quoted-string or an encoded-word, whichever it needs."""
    check_header_value(f"{field}.name", address.name)
    addr = address.address
    if not _ADDR_SPEC.match(addr):
        raise ValidationError(
            f"{field}.address", "not an ASCII address local@domain (use parse_address)"
        )
    display = normalise_display_name(address.name)
    if not display:
        return f"{name}: {addr}"
    if "=?" in display or not display.isascii():
        # One encoded-word for the whole name, even past RFC 2047's 75
        # characters: readers disagree about the blank between two adjacent
        # encoded-words in a phrase (RFC 2047 drops it, Python's parser keeps
        # it), so only an unsplit word reads back the same everywhere. Only a
        # name too long for one header line is split.
        room = _MAX_LINE - len(name) - len(addr) - 6
        phrase = (_CRLF + " ").join(_encoded_words(display, room))
    elif _PLAIN_PHRASE.match(display):
        phrase = display
    else:
        escaped = display.replace("\\", "\\\\").replace('"', '\\"')
        phrase = f'"{escaped}"'
    last_line = phrase.rpartition(_CRLF)[2]
    head = 0 if _CRLF in phrase else len(name) + 2
    sep = " " if head + len(last_line) + len(addr) + 3 <= _IDEAL_LINE else _CRLF + " "
    return f"{name}: {phrase}{sep}<{addr}>"


def _list_unsubscribe(urls: Sequence[str]) -> tuple[str, bool]:
    """The List-Unsubscribe header line, and whether its first URL is a web
    URL that can take the one-click POST. Raises ValidationError naming
    ``list_unsubscribe[i]``."""
    entries: list[str] = []
    for index, url in enumerate(urls):
        field = f"list_unsubscribe[{index}]"
        check_header_value(field, url)
        lowered = url.lower()
        if not lowered.startswith(("https://", "mailto:")) and not _LOOPBACK_HTTP.match(url):
            raise ValidationError(field, "must be an https: or mailto: URL")
        if _URL_FORBIDDEN.search(url) or len(url) + 4 > _MAX_LINE:
            raise ValidationError(field, "contains blanks, '<', '>', ',' or '\"', or is too long")
        entries.append(f"<{url}>")
    first_room = _IDEAL_LINE - len("List-Unsubscribe: ")
    words = [entries[0]] + [f" {entry}" for entry in entries[1:]]
    # The comma stays on the line before the fold so each URL starts a line.
    folded = _fold_words([f"{w}," for w in words[:-1]] + words[-1:], first_room)
    return f"List-Unsubscribe: {folded}", not urls[0].lower().startswith("mailto:")


def _extra_header(index: int, name: str, value: str) -> str:
    field = f"extra_headers[{index}]"
    if not _HEADER_NAME.match(name):
        raise ValidationError(field, f"invalid header name {name!r}")
    if name.lower() in _RESERVED_HEADERS:
        raise ValidationError(field, f"{name} is set by the composer, not as an extra header")
    return _unstructured(name, f"{field}.{name}", value)


def _base64_lines(data: bytes) -> bytes:
    # One C call for the whole body, then 76-character lines: several times
    # faster than base64.encodebytes, which loops over 57-octet chunks.
    encoded = binascii.b2a_base64(data, newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    lines.append(b"")
    return b"\r\n".join(lines)


def _encode_body(text: str, *, delimited: bool) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF lines).

    ``delimited``: a multipart delimiter follows, whose leading CRLF ends
    the body, so the body itself need not end with one.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("utf-8")
    data = raw.replace(b"\n", b"\r\n")
    if (
        raw.isascii()
        and (delimited or not data or data.endswith(b"\r\n"))
        and not data.translate(None, _SEVEN_BIT_TEXT)
        and max(map(len, data.split(b"\r\n"))) <= _MAX_LINE
    ):
        # Already valid 7bit: no encoding is cheapest and most readable.
        return "7bit", data
    return "base64", _base64_lines(data)


def _text_part(subtype: str, text: str, *, delimited: bool) -> bytes:
    cte, body = _encode_body(text, delimited=delimited)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    )
    return head.encode("ascii") + body


def build_message(
    rendered: Rendered,
    *,
    from_: Address,
    to: Address,
    reply_to: Address | None,
    message_id: str,
    date: datetime,
    list_unsubscribe: Sequence[str] = (),
    one_click: bool = True,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The complete message as bytes with CRLF line endings.

    multipart/alternative (text/plain, then text/html) when there is HTML,
    a single text/plain part otherwise. ``List-Unsubscribe-Post:
    List-Unsubscribe=One-Click`` (RFC 8058) is added when ``one_click`` and
    the first of ``list_unsubscribe`` is a web URL (the caller puts the
    one-click URL first, and only one that takes the POST).

    Raises ValidationError naming the field ("subject", "from.name",
    "to.address", "reply_to.name", "message_id", "date",
    "list_unsubscribe[i]", "extra_headers[i]...") for a value that cannot
    go into a header, e.g. one containing CR/LF.
    """
    if not _MESSAGE_ID.match(message_id):
        raise ValidationError("message_id", "must look like <id@domain>")
    if date.tzinfo is None or date.utcoffset() is None:
        raise ValidationError("date", "must be timezone-aware")
    headers = [_mailbox("From", "from", from_), _mailbox("To", "to", to)]
    if reply_to is not None:
        headers.append(_mailbox("Reply-To", "reply_to", reply_to))
    headers.append(_unstructured("Subject", "subject", rendered.subject))
    headers.append(f"Date: {_format_date(date)}")
    headers.append(f"Message-ID: {message_id}")
    headers.append("MIME-Version: 1.0")
    if list_unsubscribe:
        header, https = _list_unsubscribe(list_unsubscribe)
        headers.append(header)
        if https and one_click:
            headers.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    headers.extend(_extra_header(i, name, value) for i, (name, value) in enumerate(extra_headers))
    if rendered.html is None:
        head = _CRLF.join(headers) + _CRLF
        return head.encode("ascii") + _text_part("plain", rendered.text, delimited=False)
    # "=_" cannot occur in base64 output; a 7bit part could only contain the
    # delimiter by guessing 128 secret pseudo-random bits.
    boundary = f"=_{_boundary_bits()}"
    headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
    head = _CRLF.join(headers) + _CRLF + _CRLF
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            head.encode("ascii"),
            delimiter[2:],
            _text_part("plain", rendered.text, delimited=True),
            delimiter,
            _text_part("html", rendered.html, delimited=True),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
