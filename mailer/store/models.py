"""The typed values that cross the store seam."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailer.reasons import Reason, State


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


@dataclass(frozen=True)
class NewSend:
    recipient: str
    name: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
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
    seq: int
    send_id: str
    distribution_id: str
    at: float
    state: State
    reason: Reason
    code: int | None = None
    enhanced: str | None = None
    text: str | None = None
    detail: str | None = None


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


@dataclass(frozen=True)
class QueueSummary:
    due: int
    in_flight: int
    waiting: int
    next_due: float | None
