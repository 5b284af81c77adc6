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


class Reason(StrEnum):
    DELIVERED = "delivered"
    QUEUED = "queued"
    TLS_UNAVAILABLE = "tls-unavailable"
    TLS_HANDSHAKE = "tls-handshake"
    CERTIFICATE = "certificate"
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
    CANCELLED = "cancelled"
    REPLAYED = "replayed"
    HELD = "held"
    RELEASED = "released"
    LEASE_EXPIRED = "lease-expired"
