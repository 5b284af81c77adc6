"""The pure half of SPF (RFC 7208): record grammar, macros, address matching.

Nothing here touches the network; :mod:`mailer.identity.check_host` drives the DNS side of
``check_host()`` with these values. Every syntax problem raises
:class:`PermError`, which ``check_host()`` reports as ``permerror``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import quote

from mailer.errors import MailerError, ValidationError

__all__ = [
    "DOMAIN_LETTERS",
    "EXPLANATION_LETTERS",
    "LOOKUP_KINDS",
    "IPAddress",
    "Macro",
    "MacroContext",
    "MacroString",
    "Mechanism",
    "PermError",
    "Record",
    "SPFResult",
    "expand",
    "ip_matches",
    "is_spf_record",
    "is_valid_domain",
    "normalise_ip",
    "parse_domain_spec",
    "parse_explanation",
    "parse_macro_string",
    "parse_record",
    "target_name",
]

IPAddress = IPv4Address | IPv6Address


class SPFResult(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


class PermError(MailerError):
    """A record (or the evaluation of one) that RFC 7208 calls a permerror."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


QUALIFIERS = {
    "+": SPFResult.PASS,
    "-": SPFResult.FAIL,
    "~": SPFResult.SOFTFAIL,
    "?": SPFResult.NEUTRAL,
}
# §7.2: c, r and t make sense only in the text shown to a rejected sender.
DOMAIN_LETTERS = frozenset("slodipvh")
EXPLANATION_LETTERS = DOMAIN_LETTERS | frozenset("crt")
# §4.6.4: the terms that cost a DNS lookup and count toward the limit of 10.
LOOKUP_KINDS = frozenset({"include", "a", "mx", "ptr", "exists"})

_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9._-]*)=(.*)", re.DOTALL)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.DOTALL)
_A_MX_ARGS = re.compile(r"(?::(?P<domain>.*?))?(?P<c4>/[0-9]+)?(?P<c6>//[0-9]+)?", re.DOTALL)
_NET_ARGS = re.compile(r":(?P<addr>[^/]*)(?:/(?P<len>[^/]*))?")
_IP4 = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
)
_CIDR = re.compile(r"0|[1-9][0-9]*")
_TOPLABEL = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9]")
_LDH_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_DELIMITERS = frozenset(".-+,/_=")


# --- macros (§7) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Macro:
    """One ``%{...}`` expansion: letter, transformers and delimiters."""

    letter: str
    digits: int | None = None
    reverse: bool = False
    delimiters: str = ""
    escape: bool = False


@dataclass(frozen=True, slots=True)
class MacroString:
    """A parsed macro-string; literal pieces are plain strings."""

    text: str
    tokens: tuple[str | Macro, ...]

    @property
    def uses_p(self) -> bool:
        return any(isinstance(t, Macro) and t.letter == "p" for t in self.tokens)


def parse_macro_string(
    text: str, *, letters: frozenset[str] = DOMAIN_LETTERS, allow_space: bool = False
) -> MacroString:
    """Parse a macro-string (§7.1).

    Raises PermError for a ``%`` not followed by ``{``, ``%``, ``_`` or
    ``-``, an unterminated or malformed ``%{...}``, a letter outside
    ``letters``, a zero digit transformer, or a character outside the
    visible ASCII range (and space, unless ``allow_space``).
    """
    tokens: list[str | Macro] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "%":
            if not ("!" <= char <= "~" or (allow_space and char == " ")):
                raise PermError(f"invalid character {char!r} in {text!r}")
            literal.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in ("%", "_", "-"):
            literal.append({"%": "%", "_": " ", "-": "%20"}[nxt])
            i += 2
            continue
        if nxt != "{":
            raise PermError(f"invalid macro '%{nxt}' in {text!r}")
        end = text.find("}", i + 2)
        if end < 0:
            raise PermError(f"unterminated macro in {text!r}")
        if literal:
            tokens.append("".join(literal))
            literal = []
        tokens.append(_parse_macro(text[i + 2 : end], letters, text))
        i = end + 1
    if literal:
        tokens.append("".join(literal))
    return MacroString(text, tuple(tokens))


def _parse_macro(body: str, letters: frozenset[str], text: str) -> Macro:
    if not body or body[0].lower() not in letters:
        raise PermError(f"invalid macro letter in '%{{{body}}}' of {text!r}")
    rest = body[1:]
    digits_text = ""
    while rest and rest[0].isdigit() and rest[0].isascii():
        digits_text += rest[0]
        rest = rest[1:]
    reverse = rest[:1] in ("r", "R")
    if reverse:
        rest = rest[1:]
    if any(c not in _DELIMITERS for c in rest):
        raise PermError(f"invalid macro transformer in '%{{{body}}}' of {text!r}")
    digits = int(digits_text) if digits_text else None
    if digits == 0:
        raise PermError(f"zero digit transformer in '%{{{body}}}' of {text!r}")
    return Macro(body[0].lower(), digits, reverse, rest, body[0].isupper())


def parse_domain_spec(text: str) -> MacroString:
    """Parse a domain-spec: a macro-string ending in a macro or ``.toplabel``.

    Raises PermError if it is empty, not a valid macro-string, or ends in
    something other than a macro-expand or a dot and a valid top label.
    """
    if not text:
        raise PermError("empty domain-spec")
    spec = parse_macro_string(text)
    # Whether the text ends in a macro-expand is decided on the raw text: the
    # literal tokens merge %% / %_ / %- with their neighbours.
    if not _ends_with_macro(text):
        body = text[:-1] if text.endswith(".") else text
        head, dot, top = body.rpartition(".")
        if not dot or not head or _TOPLABEL.fullmatch(top) is None:
            raise PermError(f"domain-spec {text!r} does not end in a valid top label")
    return spec


def _ends_with_macro(text: str) -> bool:
    if text.endswith("}"):
        return True
    # "%%-" ends with a literal "-" while "%-" is a macro: count the run of %.
    if text[-1:] in ("%", "_", "-"):
        run = len(text[:-1]) - len(text[:-1].rstrip("%"))
        return run % 2 == 1
    return False


def parse_explanation(text: str) -> MacroString:
    """Parse an explanation TXT string (§6.2): macro-strings and spaces,
    where the c, r and t letters are also allowed. Raises PermError."""
    return parse_macro_string(text, letters=EXPLANATION_LETTERS, allow_space=True)


@dataclass(frozen=True, slots=True)
class MacroContext:
    """The values the macro letters stand for (§7.3)."""

    sender: str
    domain: str
    ip: IPAddress
    helo: str = "unknown"
    receiver: str = "unknown"
    timestamp: int = 0
    validated_name: str = "unknown"

    def value(self, letter: str) -> str:
        """The value of one (lower-case) macro letter. Raises PermError."""
        local, _, sender_domain = self.sender.rpartition("@")
        v4 = isinstance(self.ip, IPv4Address)
        values = {
            "s": self.sender,
            "l": local,
            "o": sender_domain,
            "d": self.domain,
            "i": str(self.ip) if v4 else ".".join(self.ip.exploded.replace(":", "")),
            "c": str(self.ip),
            "v": "in-addr" if v4 else "ip6",
            "h": self.helo,
            "p": self.validated_name,
            "r": self.receiver,
            "t": str(self.timestamp),
        }
        if letter not in values:
            raise PermError(f"invalid macro letter {letter!r}")
        return values[letter]


def expand(spec: MacroString, ctx: MacroContext) -> str:
    """Expand a parsed macro-string. Raises PermError for an unknown letter."""
    out: list[str] = []
    for token in spec.tokens:
        if isinstance(token, str):
            out.append(token)
            continue
        value = ctx.value(token.letter)
        if token.digits is not None or token.reverse or token.delimiters:
            parts = re.split("[" + re.escape(token.delimiters or ".") + "]", value)
            if token.reverse:
                parts.reverse()
            if token.digits is not None:
                parts = parts[-token.digits :]
            value = ".".join(parts)
        out.append(quote(value, safe="-._~") if token.escape else value)
    return "".join(out)


# --- records (§4.5, §4.6, §5, §6) ----------------------------------------


@dataclass(frozen=True, slots=True)
class Mechanism:
    """One directive. ``text`` is the term as written in the record."""

    qualifier: SPFResult
    kind: str
    text: str
    domain_spec: MacroString | None = None
    network: IPv4Network | IPv6Network | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True, slots=True)
class Record:
    text: str
    mechanisms: tuple[Mechanism, ...]
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    unknown_modifiers: tuple[tuple[str, MacroString], ...] = ()


def is_spf_record(text: str) -> bool:
    """True for a TXT string whose version section is exactly ``v=spf1``."""
    return _VERSION.match(text) is not None


def parse_record(text: str) -> Record:
    """Parse a whole SPF record; any syntax error anywhere raises PermError
    (§4.6: the record is not evaluated at all then)."""
    if not is_spf_record(text):
        raise PermError(f"not an SPF record: {text[:40]!r}")
    bad = next((c for c in text if not " " <= c <= "~"), None)
    if bad is not None:
        raise PermError(f"non-ASCII or control character U+{ord(bad):04X} in record")
    mechanisms: list[Mechanism] = []
    redirect: MacroString | None = None
    explanation: MacroString | None = None
    unknown: list[tuple[str, MacroString]] = []
    for term in text.split(" ")[1:]:
        if not term:
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is None:
            mechanisms.append(_parse_mechanism(term))
            continue
        name, value = modifier.group(1).lower(), modifier.group(2)
        if name == "redirect":
            if redirect is not None:
                raise PermError("redirect= appears more than once")
            redirect = parse_domain_spec(value)
        elif name == "exp":
            if explanation is not None:
                raise PermError("exp= appears more than once")
            explanation = parse_domain_spec(value)
        else:
            unknown.append((name, parse_macro_string(value, letters=EXPLANATION_LETTERS)))
    return Record(text, tuple(mechanisms), redirect, explanation, tuple(unknown))


def _parse_mechanism(term: str) -> Mechanism:
    match = _MECHANISM.fullmatch(term)
    if match is None:
        raise PermError(f"invalid term {term!r}")
    qualifier = QUALIFIERS[match.group(1) or "+"]
    kind, rest = match.group(2).lower(), match.group(3)
    if kind == "all":
        if rest:
            raise PermError(f"'all' takes no argument: {term!r}")
        return Mechanism(qualifier, kind, term)
    if kind in ("include", "exists"):
        if not rest.startswith(":"):
            raise PermError(f"{kind} needs ':domain': {term!r}")
        return Mechanism(qualifier, kind, term, parse_domain_spec(rest[1:]))
    if kind == "ptr":
        if rest and not rest.startswith(":"):
            raise PermError(f"invalid ptr argument: {term!r}")
        spec = parse_domain_spec(rest[1:]) if rest else None
        return Mechanism(qualifier, kind, term, spec)
    if kind in ("a", "mx"):
        args = _A_MX_ARGS.fullmatch(rest)
        if args is None:
            raise PermError(f"invalid {kind} argument: {term!r}")
        domain = args.group("domain")
        spec = parse_domain_spec(domain) if domain is not None else None
        cidr4 = _cidr(args.group("c4"), 1, 32, term)
        cidr6 = _cidr(args.group("c6"), 2, 128, term)
        return Mechanism(qualifier, kind, term, spec, None, cidr4, cidr6)
    if kind == "ip4":
        ip4 = _NET_ARGS.fullmatch(rest)
        if ip4 is None or _IP4.fullmatch(ip4.group("addr")) is None:
            raise PermError(f"invalid ip4 network: {term!r}")
        length = _cidr_value(ip4.group("len"), 32, term)
        network = IPv4Network(f"{ip4.group('addr')}/{length}", strict=False)
        return Mechanism(qualifier, kind, term, network=network)
    if kind == "ip6":
        ip6 = _NET_ARGS.fullmatch(rest)
        if ip6 is None or "%" in ip6.group("addr"):
            raise PermError(f"invalid ip6 network: {term!r}")
        try:
            address = IPv6Address(ip6.group("addr"))
        except ValueError as exc:
            raise PermError(f"invalid ip6 network: {term!r}") from exc
        length = _cidr_value(ip6.group("len"), 128, term)
        return Mechanism(qualifier, kind, term, network=IPv6Network(f"{address}/{length}", False))
    raise PermError(f"unknown mechanism {kind!r} in {term!r}")


def _cidr(group: str | None, skip: int, maximum: int, term: str) -> int:
    return maximum if group is None else _cidr_value(group[skip:], maximum, term)


def _cidr_value(text: str | None, maximum: int, term: str) -> int:
    if text is None:
        return maximum
    # Leading zeros are refused like in ip4-network itself (RFC 7208 ABNF).
    if _CIDR.fullmatch(text) is None or int(text) > maximum:
        raise PermError(f"invalid CIDR length /{text} in {term!r}")
    return int(text)


# --- names and addresses ---------------------------------------------------


def normalise_ip(text: str) -> IPAddress:
    """The client address; an IPv4-mapped IPv6 address becomes IPv4 (§5).

    Raises ValidationError("ip", ...) for something that is no IP address.
    """
    try:
        address = ip_address(text.strip())
    except ValueError as exc:
        raise ValidationError("ip", f"not an IP address: {text!r}") from exc
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_matches(ip: IPAddress, address: str, cidr4: int, cidr6: int) -> bool:
    """Whether ``ip`` lies in ``address``/cidr of its own family."""
    try:
        other = ip_address(address)
    except ValueError:
        return False
    if other.version != ip.version:
        return False
    prefix = cidr4 if ip.version == 4 else cidr6
    return ip in ip_network(f"{other}/{prefix}", strict=False)


def is_valid_domain(name: str) -> bool:
    """§4.3: a multi-label host name with labels of 1..63 letters, digits,
    hyphens or underscores, at most 253 characters (one trailing dot allowed)."""
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and len(labels) > 1
        and all(len(label) <= 63 and _LDH_LABEL.fullmatch(label) for label in labels)
    )


def target_name(expanded: str) -> str | None:
    """The query name for an expanded domain-spec, or None if no DNS query
    can be made from it (empty or over-long label).

    A trailing dot is dropped; a name over 253 characters loses labels on
    the left until it fits (§7.3).
    """
    name = expanded[:-1] if expanded.endswith(".") else expanded
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    labels = name.split(".")
    if not name or len(name) > 253 or any(not 0 < len(label) <= 63 for label in labels):
        return None
    return name
