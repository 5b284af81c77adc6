"""Return paths that name their send (VERP) with a keyed MAC.

``b+<send id>.<mac>@<bounce domain>``: the MAC is the first 12 hex digits
of HMAC-SHA256(secret, send id), so a forged or mangled token is told
apart from a real one and never acts on a send. Hex and the ``+``/``.``
separators survive MTAs that lower-case or otherwise normalise local
parts; comparison ignores case.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import string
from dataclasses import dataclass

from mailer.errors import ValidationError

__all__ = [
    "FeedbackIdentity",
    "Token",
    "feedback_id",
    "make_return_path",
    "read_feedback_id",
    "read_return_path",
]

_MAC_HEX = 12
_LOCAL = re.compile(r"^[bB]\+([0-9A-Za-z]{8,64})\.([0-9A-Fa-f]+)$")


@dataclass(frozen=True)
class Token:
    """What a return-path address says: the send id it names and whether
    its MAC is ours (``valid``)."""

    send_id: str
    valid: bool


def _mac(secret: str, send_id: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), send_id.encode("ascii"), hashlib.sha256)
    return digest.hexdigest()[:_MAC_HEX]


def make_return_path(send_id: str, *, secret: str, domain: str) -> str:
    """The return path of one send. Raises ValidationError("send_id", …)
    for an id that cannot be a token, ("domain", …) for an empty domain."""
    if not re.fullmatch(r"[0-9A-Za-z]{8,64}", send_id):
        raise ValidationError("send_id", "not usable in a return path (8-64 letters or digits)")
    if not domain or any(c in domain for c in " @\r\n\t<>"):
        raise ValidationError("domain", "not a domain name")
    return f"b+{send_id}.{_mac(secret, send_id)}@{domain.lower()}"


def read_return_path(address: str, *, secret: str, domains: frozenset[str]) -> Token | None:
    """The token in ``address`` when it is a return path at one of
    ``domains`` (lower-case), else None. Pure; raises nothing."""
    local, sep, domain = address.strip().strip("<>").rpartition("@")
    if not sep or domain.lower() not in domains:
        return None
    match = _LOCAL.match(local)
    if match is None:
        return None
    send_id, mac = match.group(1), match.group(2).lower()
    # ids are lower-case hex from mailer.store.models.new_ids; an MTA that
    # upper-cased the local part still names the same send
    send_id = send_id.lower()
    return Token(send_id, hmac.compare_digest(mac, _mac(secret, send_id)))


def _part(value: str) -> str:
    # ids and names are nearly always printable without a colon: kept as
    # they are without a Python step per character, once per message
    if value.isprintable() and ":" not in value:
        return value
    return "".join(c for c in value.replace(":", "-") if c.isprintable() and c not in "\r\n")


def feedback_id(template: str, *, distribution: str, account: str, sender: str) -> str:
    """The ``Feedback-ID`` header value (Gmail's ``a:b:c:senderid``) from
    ``template`` with ``{distribution}``, ``{account}`` and ``{sender}``.
    A colon inside a part would shift the fields, so parts lose theirs;
    CR/LF never reaches the header. Raises ValidationError("feedback_id",
    …) for a template with unknown fields."""
    try:
        return template.format(
            distribution=_part(distribution), account=_part(account), sender=_part(sender)
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError("feedback_id", f"template {template!r}: {exc}") from exc


@dataclass(frozen=True)
class FeedbackIdentity:
    """What a returned ``Feedback-ID`` names: the distribution and account
    of the send (the recipient then picks the send)."""

    distribution: str
    account: str


def read_feedback_id(template: str, value: str, *, sender: str) -> FeedbackIdentity | None:
    """The distribution and account of ``value`` read back through
    ``template`` (the one :func:`feedback_id` wrote it with) and our
    ``sender`` id, or None: a template without ``{distribution}`` or
    ``{account}``, another sender's value, or text the template cannot
    have written. Pure; raises nothing.

    Only fields the template has become groups; every other character,
    the sender id included, must be there as written. The parts hold no
    colon (:func:`feedback_id` replaced theirs), so a group stops at one."""
    fields = {
        "distribution": "(?P<distribution>[^:]+?)",
        "account": "(?P<account>[^:]+?)",
        "sender": re.escape(_part(sender)),
    }
    pattern: list[str] = []
    for literal, name, spec, conversion in _FORMATTER.parse(template):
        pattern.append(re.escape(literal))
        if name is None:
            continue
        if name not in fields or spec or conversion:
            return None
        group = fields[name]
        if group.startswith("(?P<"):
            # a field the template repeats must say the same each time
            fields[name] = f"(?P={name})"
        pattern.append(group)
    if "(?P=distribution)" not in fields.values() or "(?P=account)" not in fields.values():
        return None
    match = re.fullmatch("".join(pattern), " ".join(value.split()))
    if match is None:
        return None
    return FeedbackIdentity(match.group("distribution"), match.group("account"))


_FORMATTER = string.Formatter()
