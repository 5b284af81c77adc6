"""Validation of the values that end up in message headers.

Every address and display name passes through here at the door so that
nothing downstream (compose, identity, SMTP envelope) has to wonder whether a
value could inject a header or needs SMTPUTF8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import email_validator
from email_validator import EmailNotValidError, validate_email

from mailer.errors import ValidationError

__all__ = ["Address", "check_header_value", "normalise_display_name", "parse_address"]

# C0 controls except HTAB, plus DEL. CR and LF are reported separately because
# they are the header-injection vector and deserve the explicit reason.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BLANKS = re.compile(r"[ \t]+")
# Long enough for any real name, short enough that the name always fits one
# unsplit encoded-word on one header line (see mailer.message.compose).
MAX_DISPLAY_NAME = 128
# RFC 5321 §4.5.3.1.1: octets of a local part
MAX_LOCAL_PART = 64


@dataclass(frozen=True, slots=True)
class Address:
    """A validated mailbox.

    ``address`` is ``local@domain`` with the domain lower-cased and in its
    ASCII (IDNA) form, ready for SMTP and headers without SMTPUTF8. ``name``
    is the display name (any Unicode; compose encodes it).
    """

    address: str
    name: str = ""

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def local(self) -> str:
        return self.address.rpartition("@")[0]


def check_header_value(field: str, value: str) -> str:
    """Return ``value`` unchanged if it may go into a header.

    Raises ValidationError(field, ...) for CR or LF (header injection) and
    for any other C0 control character, NUL or DEL (HTAB is allowed).
    """
    match = _CONTROL.search(value)
    if match is None:
        return value
    char = match.group()
    if char in "\r\n":
        raise ValidationError(field, "contains CR/LF (header injection)")
    raise ValidationError(field, f"contains control character U+{ord(char):04X}")


def normalise_display_name(name: str) -> str:
    """``name`` with runs of blanks and tabs made one space, and no blanks at
    either end.

    Readers disagree on blanks inside RFC 2047 encoded display names (Python's
    parser, for one, collapses them), so only this form reads back the same
    everywhere. Raises nothing.
    """
    if "\t" not in name and "  " not in name and name[:1] != " " and name[-1:] != " ":
        return name
    return _BLANKS.sub(" ", name).strip(" ")


def parse_address(
    field: str, value: str, name: str = "", *, name_field: str | None = None
) -> Address:
    """Validate an address (syntax only, no DNS) and a display name.

    The domain may be internationalised; it is stored in its ASCII form.
    A non-ASCII local part is refused because it needs SMTPUTF8, which this
    service does not negotiate. ``*.test`` domains (RFC 6761) are admitted:
    development set-ups and the test kit route them to loopback, and in
    production DNS answers NXDOMAIN and the send bounces visibly.

    The display name is returned normalised (normalise_display_name).

    Raises ValidationError(field, reason) for a bad address (a local part
    longer than 64 octets included) and ValidationError(name_field, reason)
    (default ``f"{field}.name"``) for a bad display name.
    """
    name_field = name_field or f"{field}.name"
    check_header_value(field, value)
    check_header_value(name_field, name)
    name = normalise_display_name(name)
    if len(name) > MAX_DISPLAY_NAME:
        raise ValidationError(name_field, f"longer than {MAX_DISPLAY_NAME} characters")
    candidate = value.strip(" \t")
    if not candidate:
        raise ValidationError(field, "empty address")
    local_part = candidate.rpartition("@")[0]
    if len(local_part.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValidationError(
            field, f"local part longer than {MAX_LOCAL_PART} characters (RFC 5321)"
        )
    fast = _plain_address(candidate)
    if fast is not None:
        return Address(fast, name)
    local, at, _ = candidate.rpartition("@")
    if at and not local.isascii():
        raise ValidationError(
            field,
            "non-ASCII local part needs SMTPUTF8, which this service does not use",
        )
    try:
        valid = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=False,
            test_environment=True,
        )
    except EmailNotValidError as exc:
        raise ValidationError(field, str(exc)) from exc
    if valid.ascii_email is None:  # pragma: no cover - excluded by allow_smtputf8=False
        raise ValidationError(field, "address has no ASCII form")
    return Address(valid.ascii_email, name)


# The common case, a dot-atom local part at an ASCII host name, checked
# without email-validator's general machinery (which costs tens of
# microseconds an address: too much for 10,000 recipients a request).
# Everything else goes to email-validator, which stays the authority: this
# pattern accepts a strict subset of what it accepts, with the same
# normalised result (tests/test_addresses.py compares the two).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN = re.compile(
    rf"(?P<local>{_ATEXT}+(?:\.{_ATEXT}+)*)@(?P<domain>(?:{_LABEL}\.)+[a-z]{{2,63}})",
    re.ASCII,
)
_SPECIAL_USE = tuple(
    "." + name for name in email_validator.SPECIAL_USE_DOMAIN_NAMES if name != "test"
)


def _plain_address(candidate: str) -> str | None:
    """``candidate`` normalised when it is a plain address, else None (then
    the full validation decides). Pure."""
    local, _, domain = candidate.rpartition("@")
    domain = domain.lower()
    match = _PLAIN.fullmatch(f"{local}@{domain}")
    if match is None or len(local) > 64 or len(domain) > 253 or len(candidate) > 254:
        return None
    if ("." + domain).endswith(_SPECIAL_USE) or "--" in domain:
        return None
    return f"{local}@{domain}"
