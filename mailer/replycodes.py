"""Classify SMTP replies from their codes (RFC 5321 reply codes, RFC 3463
enhanced status codes as registered with IANA under RFC 5248).

Pure functions: nothing here looks at the reply *text*; whether a failure is
transient or permanent, and which reason category it gets, comes from the
three-digit code and the enhanced ``class.subject.detail`` code only.

Choices where the registry leaves room (kept here so they are reviewed in one
place):

* Suppression only for ``5.1.1`` (bad destination mailbox) and ``5.1.6``
  (mailbox moved, no forwarding address): the only registered codes that say
  the address itself does not (any longer) exist. ``5.1.0``, ``5.1.3``,
  ``5.2.1`` and a bare ``550`` are ambiguous or about something else and
  never suppress.
* ``X.7.1`` ("delivery not authorized") is generic policy: ``policy-block``
  for 5xx. As ``4.7.1`` it is the conventional greylisting reply, so it is a
  plain ``temporary`` deferral, not a throttle.
* ``spam-block`` only for ``5.7.28`` ("mail flood detected: the message
  appears to be part of a flood of similar abusive messages"), the one
  registered code about the message stream's content/reputation. The
  authentication codes ``X.7.20``-``X.7.27`` (DKIM, SPF, reverse DNS, null MX
  sender) are sender set-up problems and stay ``policy-block``.
* Throttling: any ``421``, ``4.7.0`` (widely used for rate limits),
  ``4.7.28`` and ``4.4.5`` (mail system congestion).
* ``X.1.4`` (destination mailbox address ambiguous) is about the mailbox,
  not the domain: ``mailbox-unknown`` without suppression.
* A code whose enhanced code says nothing specific (``X.0.x``, unregistered
  details) falls back to the basic reply code.
* Without an enhanced code: ``550`` is ambiguous (mailbox, policy, relay) →
  ``permanent``; ``554`` → ``policy-block``; ``521``/``556`` (RFC 7504, host
  or domain does not accept mail) → ``domain-unknown``; ``552`` and ``452``
  → ``mailbox-full``; other 4xx → ``temporary``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailer.reasons import Reason

__all__ = ["ReplyClass", "classify", "parse_reply"]

# RFC 3463 §2: class "." subject "." detail, subject/detail 1-3 digits
# without leading zeros; it must be followed by white space or end the text.
_ENHANCED = re.compile(r"([245])\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})(?=\s|$)")


@dataclass(frozen=True, slots=True)
class ReplyClass:
    """What a reply means for the message that got it."""

    permanent: bool
    reason: Reason
    suppress: bool
    throttle: bool


def parse_reply(code: int, message: str) -> tuple[str | None, str]:
    """Split a leading enhanced status code off a reply text.

    ``parse_reply(550, "5.1.1 no such user")`` → ``("5.1.1", "no such user")``.
    The enhanced code is only accepted when its class digit equals the first
    digit of ``code`` (RFC 3463 §2); otherwise it stays part of the text.
    Continuation lines of a multi-line reply (joined with ``\\n``) that repeat
    the same enhanced code have it removed too. Raises nothing.
    """
    stripped = message.strip()
    match = _ENHANCED.match(stripped)
    if match is None or match.group(1) != str(code)[:1]:
        return None, stripped
    enhanced = match.group(0)
    lines = stripped[match.end() :].lstrip().split("\n")
    for i in range(1, len(lines)):
        line = lines[i].strip()
        if line == enhanced or line.startswith(enhanced + " "):
            lines[i] = line[len(enhanced) :].lstrip()
    return enhanced, "\n".join(lines)


def classify(code: int, enhanced: str | None) -> ReplyClass:
    """Turn a reply code and optional enhanced status code into a verdict.

    An enhanced code whose class does not match the reply's first digit, or
    that is not well formed, is ignored. Raises nothing.
    """
    if 200 <= code < 300:
        return ReplyClass(False, Reason.DELIVERED, False, False)
    reply_class = code // 100
    if reply_class not in (4, 5):
        # 1xx/3xx where a final reply belongs, or garbage: the dialogue broke.
        return ReplyClass(False, Reason.PROTOCOL, False, False)
    permanent = reply_class == 5
    reason = (
        Reason.THROTTLED
        if code == 421
        else _from_enhanced(reply_class, enhanced) or _from_code(code)
    )
    suppress = permanent and reason is Reason.MAILBOX_UNKNOWN and enhanced in _SUPPRESSING
    return ReplyClass(
        permanent=permanent,
        reason=reason,
        suppress=suppress,
        throttle=reason is Reason.THROTTLED,
    )


# Checked against the reason (not only the code) in classify(), so the set of
# suppressing codes stays a subset of mailbox-unknown.
_SUPPRESSING = frozenset({"5.1.1", "5.1.6"})

# (subject, detail) → reason, for both transient and permanent classes.
_DETAIL: dict[tuple[int, int], Reason] = {
    (1, 1): Reason.MAILBOX_UNKNOWN,  # bad destination mailbox address
    (1, 2): Reason.DOMAIN_UNKNOWN,  # bad destination system address
    (1, 3): Reason.MAILBOX_UNKNOWN,  # bad destination mailbox address syntax
    (1, 4): Reason.MAILBOX_UNKNOWN,  # destination mailbox address ambiguous
    (1, 6): Reason.MAILBOX_UNKNOWN,  # mailbox moved, no forwarding address
    (1, 7): Reason.POLICY_BLOCK,  # bad sender's mailbox address syntax
    (1, 8): Reason.POLICY_BLOCK,  # bad sender's system address
    (1, 10): Reason.DOMAIN_UNKNOWN,  # recipient address has null MX (RFC 7505)
    (2, 1): Reason.MAILBOX_UNKNOWN,  # mailbox disabled, not accepting messages
    (2, 2): Reason.MAILBOX_FULL,
    (2, 3): Reason.PROTOCOL,  # message length exceeds administrative limit
    (4, 1): Reason.CONNECTION,  # no answer from host
    (4, 2): Reason.CONNECTION,  # bad connection
    (4, 4): Reason.DOMAIN_UNKNOWN,  # unable to route
}

# Transient-only refinements of the table above.
_TRANSIENT_DETAIL: dict[tuple[int, int], Reason] = {
    (4, 5): Reason.THROTTLED,  # mail system congestion
    (7, 0): Reason.THROTTLED,  # "other security status": the usual rate-limit code
    (7, 1): Reason.TEMPORARY,  # greylisting
    (7, 28): Reason.THROTTLED,  # mail flood detected
}

_PERMANENT_DETAIL: dict[tuple[int, int], Reason] = {
    (7, 28): Reason.SPAM_BLOCK,
}


def _from_enhanced(reply_class: int, enhanced: str | None) -> Reason | None:
    if enhanced is None:
        return None
    match = _ENHANCED.fullmatch(enhanced)
    if match is None or int(match.group(1)) != reply_class:
        return None
    key = (int(match.group(2)), int(match.group(3)))
    by_class = _TRANSIENT_DETAIL if reply_class == 4 else _PERMANENT_DETAIL
    reason = by_class.get(key) or _DETAIL.get(key)
    if reason is not None:
        return reason
    subject = key[0]
    if subject in (3, 5, 6):  # mail system, protocol, content/media
        return Reason.PROTOCOL
    if subject == 7:
        return Reason.POLICY_BLOCK
    return None


def _from_code(code: int) -> Reason:
    if code in (452, 552):  # insufficient storage / exceeded storage allocation
        return Reason.MAILBOX_FULL
    if code in (521, 556):  # RFC 7504: host/domain does not accept mail
        return Reason.DOMAIN_UNKNOWN
    if code in (530, 554):  # access denied / transaction failed
        return Reason.POLICY_BLOCK
    if code in (500, 501, 502, 503, 504, 555):  # the server did not understand us
        return Reason.PROTOCOL
    return Reason.TEMPORARY if code < 500 else Reason.PERMANENT
