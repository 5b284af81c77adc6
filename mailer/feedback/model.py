"""The typed values of the feedback wing: what a returned message says."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailer.reasons import Reason


class Kind(StrEnum):
    """What a returned message is, as a whole.

    ``delay`` covers every delivery status notification without a failed
    recipient (``delayed``, and the rare ``delivered``/``relayed``/
    ``expanded`` notices): each is an event, none changes a send.
    """

    BOUNCE = "bounce"
    DELAY = "delay"
    COMPLAINT = "complaint"
    AUTOREPLY = "autoreply"
    UNKNOWN = "unknown"


class Action(StrEnum):
    """RFC 3464 §2.3.3 action values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """One recipient block of a report.

    ``status`` is the RFC 3463 code (given, or derived from the reply code
    or from the layout's phrase table); ``reason`` its category in the
    shared vocabulary; ``suppress`` whether the address goes on the list
    under the same rule as a reply at SMTP time.
    """

    address: str
    action: Action
    status: str | None
    reply_code: int | None
    diagnostic: str | None
    remote_mta: str | None
    reason: Reason
    suppress: bool


@dataclass(frozen=True, slots=True)
class Report:
    """A parsed returned message. ``layout`` names the detector that
    understood it (``rfc3464``, ``arf``, ``rfc3834``, ``qmail``, …);
    ``envid`` the RFC 3461 ENVID of a DSN; ``problem`` why a message is
    ``unknown``."""

    kind: Kind
    layout: str
    recipients: tuple[RecipientResult, ...] = ()
    feedback_type: str | None = None
    original_message_id: str | None = None
    original_recipient: str | None = None
    feedback_id: str | None = None
    envid: str | None = None
    subject: str | None = None
    problem: str | None = None

    def as_json(self) -> dict[str, object]:
        """The public JSON shape (``mailer bounces parse --json``)."""
        return {
            "kind": self.kind.value,
            "layout": self.layout,
            "recipients": [
                {
                    "address": r.address,
                    "status": r.status,
                    "reply_code": r.reply_code,
                    "action": r.action.value,
                    "diagnostic": r.diagnostic,
                    "remote_mta": r.remote_mta,
                    "reason": r.reason.value,
                }
                for r in self.recipients
            ],
            "feedback_type": self.feedback_type,
            "original_message_id": self.original_message_id,
            "original_recipient": self.original_recipient,
            "feedback_id": self.feedback_id,
            "envid": self.envid,
            "problem": self.problem,
        }
