"""From what a bounce quotes to a status and a reason (pure functions).

The order of evidence: an RFC 3463 status the report states; else one
found in the quoted remote reply; else one derived from the reply's
three-digit code; else, for a known plain-text layout only, its phrase
table. The reason and the suppression rule then come from
:func:`mailer.replycodes.classify`, the same rules as a reply at SMTP time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailer.feedback.model import Action, RecipientResult
from mailer.reasons import Reason
from mailer.replycodes import classify

# RFC 3463 status anywhere in a text (not inside a longer dotted number)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# A reply code where a reply starts: "550 ", "550-", "550 5.1.1", "smtp; 550"
_REPLY = re.compile(r"(?:^|[\s;:'(\[\"])([245][0-9][0-9])(?=[\s\-]|$)")

# The status a bare reply code stands for when a report gives nothing more
# specific (RFC 3463 §3 subjects for the codes RFC 5321 §4.2 ties to them).
_BY_CODE = {
    421: "4.3.0",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.2.2",
    550: "5.0.0",
    551: "5.1.6",
    552: "5.2.2",
    553: "5.1.3",
    554: "5.0.0",
    521: "5.3.2",
    556: "5.1.10",
}

Phrases = Sequence[tuple[re.Pattern[str], str]]


def find_status(text: str | None) -> str | None:
    """The first RFC 3463 status code in ``text``, or None."""
    if not text:
        return None
    match = _STATUS.search(text)
    return match.group(0) if match else None


def find_reply_code(text: str | None) -> int | None:
    """The first SMTP reply code (2xx/4xx/5xx) in ``text``, or None."""
    if not text:
        return None
    match = _REPLY.search(text)
    return int(match.group(1)) if match else None


def status_from_code(code: int) -> str:
    """An RFC 3463 status for a bare reply code: the code's class with the
    subject RFC 3463 gives it, ``X.0.0`` where it gives none."""
    return _BY_CODE.get(code, f"{code // 100}.0.0")


def from_phrases(text: str, phrases: Phrases) -> str | None:
    """The status of the first phrase of a layout's table found in ``text``."""
    for pattern, status in phrases:
        if pattern.search(text):
            return status
    return None


def recipient(
    address: str,
    action: Action,
    *,
    status: str | None = None,
    diagnostic: str | None = None,
    remote_mta: str | None = None,
    phrases: Phrases = (),
) -> RecipientResult:
    """One recipient block with status, reply code and reason filled in
    from whatever evidence there is (module docstring)."""
    diagnostic = _clean(diagnostic)
    reply_code = find_reply_code(diagnostic)
    if status is None or _STATUS.fullmatch(status) is None:
        status = find_status(diagnostic)
    if status is None and reply_code is not None:
        status = status_from_code(reply_code)
    if status is None and phrases and diagnostic:
        status = from_phrases(diagnostic, phrases)
    if status is None and action is Action.FAILED:
        # a failure that says nothing about why: permanent, no detail
        status = "5.0.0"
    reason, suppress = _reason(action, status, reply_code)
    return RecipientResult(
        address=address.strip().strip("<>").strip(),
        action=action,
        status=status,
        reply_code=reply_code,
        diagnostic=diagnostic,
        remote_mta=_clean(remote_mta),
        reason=reason,
        suppress=suppress,
    )


def _reason(action: Action, status: str | None, reply_code: int | None) -> tuple[Reason, bool]:
    if action in (Action.DELIVERED, Action.RELAYED, Action.EXPANDED):
        return Reason.NOTIFIED, False
    if status is None:
        return (Reason.DELAYED if action is Action.DELAYED else Reason.PERMANENT), False
    status_class = int(status[0])
    if action is Action.FAILED and status_class == 4:
        # a relay gave up on a transient error: final for us
        status = "5" + status[1:]
        status_class = 5
    code = reply_code if reply_code is not None and reply_code // 100 == status_class else None
    verdict = classify(code or (550 if status_class == 5 else 450), status)
    if action is Action.DELAYED:
        return verdict.reason, False
    return verdict.reason, verdict.suppress


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text[:1000] or None
