"""The typed values that cross the store seam."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, NamedTuple

from mailer.reasons import AccountEventKind, Reason, State


def new_ids(count: int) -> list[str]:
    """Ids that sort by creation time (ms), then by position in the batch,
    and are unguessable enough to appear in Message-IDs and URLs."""
    prefix = f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"
    return [f"{prefix}{index:06x}" for index in range(count)]


def new_id() -> str:
    return new_ids(1)[0]


@dataclass(frozen=True)
class NewDistribution:
    account: str
    sender_address: str
    sender_name: str
    subject: str
    html: str | None
    text: str | None
    unsubscribe_url: str | None = None
    send_at: float | None = None
    tags: tuple[str, ...] = ()
    # the distribution's own https unsubscribe_url accepts RFC 8058 one-click
    # POSTs, so it may stand in List-Unsubscribe instead of the service's
    unsubscribe_one_click: bool = False
    # language of what the service adds or shows ("de", "en"); None: English
    # in mail, the browser's choice on the unsubscribe page
    language: str | None = None
    # high, normal or bulk; None: the account's default priority
    priority: str | None = None


class NewSend(NamedTuple):
    # a NamedTuple rather than a frozen dataclass: made once per recipient
    # of every enqueue, and quicker to make (docs/performance.md)
    recipient: str
    name: str = ""
    variables: Mapping[str, str] = MappingProxyType({})
    reference: str | None = None


@dataclass(frozen=True)
class Distribution:
    id: str
    account: str
    sender_address: str
    sender_name: str
    subject: str
    html: str | None
    text: str | None
    unsubscribe_url: str | None
    send_at: float | None
    tags: tuple[str, ...]
    created_at: float
    unsubscribe_one_click: bool = False
    language: str | None = None
    priority: str = "normal"


@dataclass(frozen=True)
class Send:
    id: str
    distribution_id: str
    account: str
    recipient: str
    domain: str
    name: str
    variables: Mapping[str, str]
    reference: str | None
    message_id: str
    state: State
    reason: Reason
    due_at: float
    attempts: int
    created_at: float
    updated_at: float
    last_code: int | None = None
    last_enhanced: str | None = None
    last_text: str | None = None
    identity: str | None = None
    # when an operator last replayed it: its retry window starts again there
    replayed_at: float | None = None

    @property
    def retry_from(self) -> float:
        """Start of the retry window (``retry.max_age``): enqueue or the
        last replay."""
        return self.created_at if self.replayed_at is None else self.replayed_at


@dataclass(frozen=True)
class Claimed:
    """A send leased to a worker; ``suppressed`` holds the suppression
    reason when its address is on the list."""

    send: Send
    suppressed: Reason | None = None


@dataclass(frozen=True)
class Attempt:
    started_at: float
    finished_at: float
    reason: Reason
    mx_host: str | None = None
    address: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    # the TLS policy the attempt was made under: encrypt, verify,
    # mta-sts enforce, mta-sts testing
    tls_policy: str | None = None


@dataclass(frozen=True)
class CachedPolicy:
    """A receiving domain's MTA-STS policy as fetched (RFC 8461), shared by
    every worker through the store: valid until ``expires_at`` whatever
    DNS or the policy host say later, which is what stops a downgrade."""

    domain: str
    policy_id: str
    mode: str
    mx: tuple[str, ...]
    max_age: int
    fetched_at: float
    expires_at: float


@dataclass(frozen=True)
class Outcome:
    """What a worker reports for one leased send."""

    send_id: str
    state: State
    reason: Reason
    due_at: float | None = None
    attempt: Attempt | None = None
    suppress: Reason | None = None
    identity: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Event:
    """One entry of the feed: a send's change (``kind`` None; send,
    distribution, state and reason set) or an account's event (``kind``
    set, ``account`` set, no send: its particulars in ``data``)."""

    seq: int
    send_id: str | None
    distribution_id: str | None
    at: float
    state: State | None
    reason: Reason | None
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    detail: str | None = None
    # of the send and its distribution, for the platform to correlate
    account: str | None = None
    reference: str | None = None
    tags: tuple[str, ...] = ()
    kind: AccountEventKind | None = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Suppression:
    account: str
    address: str
    reason: Reason
    created_at: float
    detail: str | None = None


@dataclass(frozen=True)
class SendFilter:
    states: tuple[State, ...] = ()
    distribution_id: str | None = None
    domain: str | None = None
    reasons: tuple[Reason, ...] = ()
    since: float | None = None
    until: float | None = None
    account: str | None = None
    recipient: str | None = None
    send_id: str | None = None


@dataclass(frozen=True)
class QueueSummary:
    due: int
    in_flight: int
    waiting: int
    next_due: float | None


@dataclass(frozen=True)
class Idempotency:
    """An ``Idempotency-Key`` (unique per account) to record with an
    enqueue: the hash of the request it came with, and the caller's part of
    the response (``data``, JSON text) to return again on a retry. A key
    recorded before ``stale_before`` (a time) has expired: it is used anew
    as if it had never been."""

    key: str
    body_hash: str
    data: str = "{}"
    stale_before: float = float("-inf")


@dataclass(frozen=True)
class IdempotencyRecord:
    """What an enqueue with an idempotency key left behind."""

    account: str
    key: str
    body_hash: str
    distribution_id: str
    send_ids: tuple[str, ...]
    data: str
    created_at: float


# Operator tools: holds, replay, statistics --------------------------------

HoldKind = Literal["domain", "distribution"]
HOLD_KINDS: tuple[HoldKind, ...] = ("domain", "distribution")


@dataclass(frozen=True)
class Hold:
    """An operator's hold: sends to ``value`` (a recipient domain or a
    distribution id) get no attempts until it is released."""

    kind: HoldKind
    value: str
    created_at: float
    note: str | None = None


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay with a filter would find, changing nothing.

    ``matching`` bounced/failed sends match; of those, ``suppressed`` have
    an address on their account's list or the global list, and
    ``globally_suppressed`` on the global list (which replay never lifts).
    """

    matching: int
    suppressed: int
    globally_suppressed: int

    def replayable(self, include_suppressed: bool) -> int:
        skipped = self.globally_suppressed if include_suppressed else self.suppressed
        return self.matching - skipped


@dataclass(frozen=True)
class Pruned:
    """What one :meth:`Store.prune` batch removed."""

    sends: int
    attempts: int
    events: int
    deliveries: int = 0  # webhook delivery log entries
    idempotency: int = 0  # expired idempotency records

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.sends + other.sends,
            self.attempts + other.attempts,
            self.events + other.events,
            self.deliveries + other.deliveries,
            self.idempotency + other.idempotency,
        )

    def full(self, limit: int) -> bool:
        """Whether a kind of record filled its batch: more may be left."""
        return max(self.sends, self.deliveries, self.idempotency) >= limit


@dataclass(frozen=True)
class ReplayBatch:
    """One transaction of a replay. ``last_id`` is the keyset cursor for the
    next batch, None when the filter has no more sends after this one.
    ``unsuppressed`` counts account suppressions lifted (include_suppressed)
    and ``held`` the requeued sends that went straight to ``held``."""

    requeued: int
    skipped: int
    unsuppressed: int
    held: int
    last_id: str | None


@dataclass(frozen=True)
class ReasonCount:
    state: State
    reason: Reason
    count: int


@dataclass(frozen=True)
class DestinationCount:
    domain: str
    reason: Reason
    count: int


@dataclass(frozen=True)
class DomainStates:
    """One destination domain's sends, counted per state (states with none
    left out)."""

    domain: str
    total: int
    states: tuple[tuple[State, int], ...]


@dataclass(frozen=True)
class Throughput:
    """Events of one wall-clock minute (``minute``: its start, epoch s)."""

    minute: float
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    failed: int = 0
    suppressed: int = 0


@dataclass(frozen=True)
class Stats:
    counts: Mapping[State, int]
    failure_reasons: tuple[ReasonCount, ...]
    deferring: tuple[DestinationCount, ...]
    throughput: tuple[Throughput, ...]
    holds: tuple[Hold, ...]
    # the destination domains with the most sends, each per state
    domains: tuple[DomainStates, ...] = ()


# After the 250: returned messages and what they did -----------------------


@dataclass(frozen=True)
class NewInbound:
    """A message the inbound listener accepted, as received."""

    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    peer: str | None = None
    tls: bool = False


@dataclass(frozen=True)
class Inbound:
    """A stored returned message. ``processed_at`` is None until parsed
    and applied; then ``kind``, ``layout``, the matched ``send_id`` (None:
    unmatched), how it matched (``verp``, ``envid``, ``message-id``) and
    the parsed ``report`` (JSON text). ``raw`` is only loaded when asked."""

    id: str
    received_at: float
    mail_from: str
    recipients: tuple[str, ...]
    size: int
    tls: bool
    peer: str | None
    processed_at: float | None = None
    kind: str | None = None
    layout: str | None = None
    send_id: str | None = None
    matched_by: str | None = None
    problem: str | None = None
    report: str | None = None
    raw: bytes | None = None


@dataclass(frozen=True)
class FeedbackEffect:
    """One change a returned message makes to one send.

    Always an event with ``reason``; with ``bounce`` a ``delivered`` send
    becomes ``bounced``; with ``suppress`` the address (default: the
    send's recipient) goes on the send's account's list for that reason.
    """

    send_id: str
    reason: Reason
    bounce: bool = False
    suppress: Reason | None = None
    address: str | None = None
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class FeedbackResult:
    """What processing a stored returned message found and does."""

    kind: str
    layout: str
    report: str
    send_id: str | None = None
    matched_by: str | None = None
    problem: str | None = None
    effects: tuple[FeedbackEffect, ...] = ()


@dataclass(frozen=True)
class AccountOutcome:
    """One finished send of an account with our envelope, as the circuit
    breaker counts it (mailer.feedback.breaker)."""

    at: float
    hard_bounce: bool
    complaint: bool


@dataclass(frozen=True)
class AccountPause:
    """The circuit breaker's state of an account: paused since
    ``paused_at`` (None: not paused), last released at ``released_at``."""

    account: str
    paused_at: float | None
    released_at: float | None
    detail: str | None = None


# Accounts and API keys --------------------------------------------------

Language = Literal["de", "en"]
LANGUAGES: tuple[Language, ...] = ("de", "en")


@dataclass(frozen=True)
class Account:
    """A customer of the platform. ``rate_cap``: sends per minute across
    every worker (None: no cap); ``priority``: of its distributions that
    name none."""

    id: str
    name: str
    language: Language = "en"
    rate_cap: int | None = None
    priority: str = "normal"
    created_at: float = 0.0


@dataclass(frozen=True)
class AccountChange:
    """The fields of an account to change; None leaves one as it is,
    ``clear_rate_cap`` removes the cap."""

    name: str | None = None
    language: Language | None = None
    rate_cap: int | None = None
    clear_rate_cap: bool = False
    priority: str | None = None


@dataclass(frozen=True)
class ApiKey:
    """An API key as the store keeps it: the SHA-256 digest of the token,
    never the token. An ``operator`` key may act for every account."""

    id: str
    account: str
    operator: bool
    name: str | None
    created_at: float
    revoked_at: float | None = None
