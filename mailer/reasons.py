"""One vocabulary of states and reason categories for API, CLI, metrics
and events (docs/design.md, "States and reasons")."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    HELD = "held"
    SENDING = "sending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {State.DELIVERED, State.BOUNCED, State.FAILED, State.SUPPRESSED, State.CANCELLED}
)


class AccountEventKind(StrEnum):
    """Events of an account rather than of one send (no send id, no state):
    their type in the feed, ``<object>.<what happened>`` as webhook types
    are named."""

    # an endpoint stopped getting events: its receiver answered 410, or it
    # failed for ``webhooks.max_age``
    WEBHOOK_DISABLED = "webhook.disabled"


class Reason(StrEnum):
    DELIVERED = "delivered"
    QUEUED = "queued"
    TLS_UNAVAILABLE = "tls-unavailable"
    TLS_HANDSHAKE = "tls-handshake"
    CERTIFICATE = "certificate"
    MTA_STS_MISMATCH = "mta-sts-mismatch"
    # the certificate matched none of the MX host's usable TLSA records (RFC 7672)
    DANE = "dane"
    MAILBOX_UNKNOWN = "mailbox-unknown"
    MAILBOX_FULL = "mailbox-full"
    DOMAIN_UNKNOWN = "domain-unknown"
    POLICY_BLOCK = "policy-block"
    SPAM_BLOCK = "spam-block"
    THROTTLED = "throttled"
    DNS = "dns"
    CONNECTION = "connection"
    PROTOCOL = "protocol"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    EXPIRED = "expired"
    SUPPRESSED_BOUNCE = "suppressed-bounce"
    SUPPRESSED_UNSUBSCRIBE = "suppressed-unsubscribe"
    SUPPRESSED_COMPLAINT = "suppressed-complaint"
    ACCOUNT_PAUSED = "account-paused"
    CANCELLED = "cancelled"
    REPLAYED = "replayed"
    HELD = "held"
    RELEASED = "released"
    LEASE_EXPIRED = "lease-expired"
    # after the 250 (mailer.feedback): events that leave the send's state as it is
    COMPLAINED = "complained"
    FEEDBACK = "feedback"  # a feedback report that is no complaint (not-spam, auth-failure, …)
    DELAYED = "delayed"  # a DSN with Action: delayed
    NOTIFIED = "notified"  # a DSN with Action: delivered, relayed or expanded
    AUTO_REPLY = "auto-reply"
    # a worker's own fault (an exception nothing expected), never the destination's
    INTERNAL = "internal"
    # a template that cannot be rendered within its resource limits
    TEMPLATE = "template"
