"""What a receiver looks at in a message's header, as pure functions over a
parsed message: Date, Message-ID, one-click unsubscribe (RFC 8058), a text
part, and From/Reply-To. Each returns a :class:`HeaderCheck`; none raises
for a malformed message (that is a failed check)."""

from __future__ import annotations

import email
import email.errors
import email.message
import email.policy
import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailer.errors import ValidationError
from mailer.message.keys import parse_dkim_record

__all__ = [
    "CHECKS",
    "HeaderCache",
    "HeaderCheck",
    "check_date",
    "check_from",
    "check_list_unsubscribe",
    "check_message_id",
    "check_text_part",
    "dkim_signed_headers",
    "parse_message",
    "run_checks",
]

ONE_CLICK = "List-Unsubscribe=One-Click"
_MSG_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_URI = re.compile(r"<([^<>]*)>")
# the service's own link in development: plain HTTP on this machine
_LOOPBACK_HTTP = re.compile(r"http://(?:localhost|127\.\d+\.\d+\.\d+|\[::1\])[:/]", re.I)
# What email.headerregistry may raise on a header it cannot make sense of.
_HEADER_ERRORS = (email.errors.MessageError, ValueError, TypeError, IndexError, AttributeError)


@dataclass(frozen=True)
class HeaderCheck:
    name: str
    ok: bool
    detail: str


class HeaderCache:
    """Header values parsed by ``email.policy.default``, shared by the
    messages one sink parses. The parser and ``get_content_type()`` ask
    for Content-Type again and again (a score of times for a multipart
    invitation), and each time the header registry parses it anew: most
    of the cost of the checks. Invitations repeat their parts' headers and
    their From, so one parse serves many messages. Header objects are
    immutable, so the same one can be handed out again. At most ``size``
    values are kept (all are dropped when it is full: the next messages
    refill it)."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._parsed: dict[tuple[str, str], Any] = {}

    def get(self, name: str, value: str, parse: Callable[[str, str], Any]) -> Any:
        """The header object for ``value``, made by ``parse`` once."""
        key = (name, value)
        found = self._parsed.get(key)
        if found is None:
            if len(self._parsed) >= self._size:
                self._parsed.clear()
            found = self._parsed[key] = parse(name, value)
        return found


class _ParseOnce(email.policy.EmailPolicy):
    """``email.policy.default`` whose header values come from a
    :class:`HeaderCache`."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        cache: HeaderCache = self.__dict__["_cache"]
        return cache.get(name, value, super().header_fetch_parse)


def parse_message(data: bytes, cache: HeaderCache | None = None) -> email.message.EmailMessage:
    """``data`` (CRLF or LF line ends) parsed with ``email.policy.default``
    (each header value parsed once per ``cache``; a cache of its own when
    None)."""
    policy = _ParseOnce()
    # policies are frozen; the cache is shared by the caller's messages
    object.__setattr__(policy, "_cache", HeaderCache() if cache is None else cache)
    # typeshed's EmailPolicy is generic, the class at run time is not
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy)  # type: ignore[arg-type]


def _raw(msg: email.message.Message, name: str) -> list[str]:
    """The unparsed values of header ``name``, unfolded and stripped."""
    wanted = name.lower()
    return [
        re.sub(r"\r?\n[ \t]", " ", str(value)).strip()
        for key, value in msg.raw_items()
        if key.lower() == wanted
    ]


def _one(msg: email.message.Message, name: str) -> tuple[str | None, str]:
    """The single value of ``name``, or None and why not."""
    values = _raw(msg, name)
    if not values:
        return None, f"no {name} header"
    if len(values) > 1:
        return None, f"{len(values)} {name} headers (RFC 5322 allows one)"
    return values[0], ""


def check_date(msg: email.message.Message) -> HeaderCheck:
    value, why = _one(msg, "Date")
    if value is None:
        return HeaderCheck("date", False, why)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return HeaderCheck("date", False, f"not an RFC 5322 date: {value!r}")
    if when.tzinfo is None:
        return HeaderCheck("date", False, f"no time zone: {value!r}")
    return HeaderCheck("date", True, value)


def check_message_id(msg: email.message.Message) -> HeaderCheck:
    value, why = _one(msg, "Message-ID")
    if value is None:
        return HeaderCheck("message-id", False, why)
    if not _MSG_ID.fullmatch(value):
        return HeaderCheck("message-id", False, f"not <left@right>: {value!r}")
    return HeaderCheck("message-id", True, value)


def dkim_signed_headers(msg: email.message.Message) -> list[set[str]]:
    """The lower-cased ``h=`` names of each DKIM-Signature, top first (a
    signature whose tag list does not parse counts as signing nothing)."""
    signed: list[set[str]] = []
    for value in _raw(msg, "DKIM-Signature"):
        try:
            tags = parse_dkim_record(value)
        except ValidationError:
            signed.append(set())
            continue
        signed.append({h.strip().lower() for h in tags.get("h", "").split(":") if h.strip()})
    return signed


def check_list_unsubscribe(msg: email.message.Message) -> HeaderCheck:
    """RFC 8058 one-click unsubscribe: one List-Unsubscribe with an HTTPS
    URI, List-Unsubscribe-Post: List-Unsubscribe=One-Click, and both under
    a DKIM signature (§4: receivers ignore them otherwise)."""
    value, why = _one(msg, "List-Unsubscribe")
    if value is None:
        return HeaderCheck("list-unsubscribe", False, why)
    uris = [uri.strip() for uri in _URI.findall(value)]
    https = [uri for uri in uris if uri.lower().startswith("https://")]
    dev = [uri for uri in uris if _LOOPBACK_HTTP.match(uri)]
    if len(https) + len(dev) > 1:
        # a receiver may POST to either: only one of them can be the one-click URL
        return HeaderCheck("list-unsubscribe", False, f"more than one web URI in {value!r}")
    if not https and not dev:
        return HeaderCheck("list-unsubscribe", False, f"no <https://…> URI in {value!r}")
    post, why = _one(msg, "List-Unsubscribe-Post")
    if post is None:
        return HeaderCheck("list-unsubscribe", False, f"{why}: one-click needs it")
    if post != ONE_CLICK:
        return HeaderCheck("list-unsubscribe", False, f"List-Unsubscribe-Post is {post!r}")
    wanted = {"list-unsubscribe", "list-unsubscribe-post"}
    if not any(wanted <= names for names in dkim_signed_headers(msg)):
        return HeaderCheck(
            "list-unsubscribe", False, "not covered by a DKIM signature's h= (RFC 8058 §4)"
        )
    if dev:
        # `mailer serve --dev` links to its own plain-HTTP API on this machine
        return HeaderCheck(
            "list-unsubscribe", True, f"one-click {dev[0]} (dev; https in production)"
        )
    return HeaderCheck("list-unsubscribe", True, f"one-click {https[0]}")


def check_text_part(msg: email.message.EmailMessage) -> HeaderCheck:
    try:
        part = msg.get_body(("plain",))
        text = part.get_content() if part is not None else None
    except (LookupError, *_HEADER_ERRORS) as exc:  # LookupError: unknown charset
        return HeaderCheck("text-part", False, f"text part cannot be decoded: {exc}")
    if not isinstance(text, str):
        return HeaderCheck("text-part", False, f"no text/plain part in {msg.get_content_type()}")
    if not text.strip():
        return HeaderCheck("text-part", False, "the text/plain part is empty")
    return HeaderCheck("text-part", True, f"{len(text)} characters")


def _addresses(msg: email.message.EmailMessage, name: str) -> tuple[list[str], str]:
    """The addr-specs of header ``name`` (which must appear at most once),
    or an empty list and why."""
    try:
        header = msg[name]
        addresses = list(getattr(header, "addresses", ()))
        defects = list(getattr(header, "defects", ()))
    except _HEADER_ERRORS as exc:
        return [], f"{name} does not parse: {exc}"
    if defects:
        return [], f"{name} is malformed: {defects[0]}"
    specs = [a.addr_spec for a in addresses if a.username and a.domain]
    if len(specs) != len(addresses):
        return [], f"{name} has an address without a domain"
    return specs, ""


def check_from(msg: email.message.EmailMessage) -> HeaderCheck:
    """One From with one mailbox; Reply-To, when present, valid too."""
    value, why = _one(msg, "From")
    if value is None:
        return HeaderCheck("from", False, why)
    senders, why = _addresses(msg, "From")
    if why:
        return HeaderCheck("from", False, why)
    if len(senders) != 1:
        return HeaderCheck("from", False, f"From has {len(senders)} mailboxes; use one")
    detail = f"From: {senders[0]}"
    reply_values = _raw(msg, "Reply-To")
    if len(reply_values) > 1:
        return HeaderCheck("from", False, f"{len(reply_values)} Reply-To headers")
    if reply_values:
        replies, why = _addresses(msg, "Reply-To")
        if why or not replies:
            return HeaderCheck("from", False, why or "Reply-To has no address")
        detail += f", Reply-To: {', '.join(replies)}"
    return HeaderCheck("from", True, detail)


CHECKS: tuple[Callable[[email.message.EmailMessage], HeaderCheck], ...] = (
    check_date,
    check_message_id,
    check_list_unsubscribe,
    check_text_part,
    check_from,
)


def run_checks(msg: email.message.EmailMessage) -> tuple[HeaderCheck, ...]:
    """Every check of :data:`CHECKS`, in order."""
    return tuple(check(msg) for check in CHECKS)
