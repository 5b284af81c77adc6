"""Webhook endpoints in the store: their typed values, the protocol both
backends implement (``store.webhooks``), and the SQL they share.

An endpoint belongs to an account and has its own cursor into the event
feed (the last ``seq`` it has been sent, or skipped as not wanted). The
next batch is *fixed* in the store before it is sent: its webhook-id and
body stay the same across retries until a 2xx moves the cursor past it.
A worker serves an endpoint under a lease, so one endpoint's batches go
out one at a time, in feed order.

The shared SQL uses ``%s`` placeholders (psycopg); SQLite runs it through
:func:`qmark`. Booleans are integers and lists JSON text in both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mailer.reasons import AccountEventKind
from mailer.store.models import Event
from mailer.store.rows import FEED_COLUMNS, account_event_row

Action = Literal["advance", "retry", "disable"]

# builds the fixed (webhook-id, body) of a batch from its events
BuildBatch = Callable[[Sequence[Event]], tuple[str, bytes]]


@dataclass(frozen=True)
class NewEndpoint:
    account: str
    url: str
    secret: str
    event_types: tuple[str, ...] = ()  # empty: every event
    description: str | None = None


@dataclass(frozen=True)
class EndpointPatch:
    url: str | None = None
    event_types: tuple[str, ...] | None = None
    description: str | None = None
    # True re-enables a disabled endpoint and forgets its failures
    enabled: bool | None = None


@dataclass(frozen=True)
class Endpoint:
    id: str
    account: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    secret: str
    previous_secret: str | None
    previous_until: float | None
    enabled: bool
    disabled_reason: str | None
    cursor: int
    failures: int
    failing_since: float | None
    next_attempt_at: float
    created_at: float
    updated_at: float

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a request is signed with: the current one, and the
        one it replaced while the rotation overlap lasts."""
        if self.previous_secret and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True)
class Batch:
    endpoint_id: str
    id: str  # the webhook-id, the same on every retry
    first_seq: int
    last_seq: int
    events: int
    body: bytes
    created_at: float


@dataclass(frozen=True)
class Result:
    """The end of one delivery attempt of a batch, as the store records it."""

    batch: Batch
    action: Action
    status: int | None
    latency: float
    excerpt: str
    error: str | None = None
    # retry: when to try again
    next_attempt_at: float | None = None
    # disable: why
    disabled_reason: str | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    endpoint_id: str
    webhook_id: str
    first_seq: int
    last_seq: int
    events: int
    at: float
    status: int | None
    latency: float
    outcome: str
    excerpt: str
    error: str | None


class WebhookStore(Protocol):
    """Endpoints, their cursors, fixed batches and delivery log.

    ``account=None`` is the operator's view (every account); with an
    account, another account's endpoint is NotFound. Every method raises
    StoreError on backend failure.
    """

    async def create(self, endpoint: NewEndpoint, *, now: float) -> Endpoint:
        """Store an endpoint, its cursor at the end of the feed (it gets
        the events from now on)."""
        ...

    async def get(self, endpoint_id: str, *, account: str | None = None) -> Endpoint:
        """Raises NotFound."""
        ...

    async def endpoints(self, *, account: str | None = None) -> list[Endpoint]: ...

    async def update(
        self, endpoint_id: str, patch: EndpointPatch, *, account: str | None, now: float
    ) -> Endpoint:
        """Raises NotFound."""
        ...

    async def delete(self, endpoint_id: str, *, account: str | None = None) -> None:
        """Delete the endpoint, its batch and its log. Raises NotFound."""
        ...

    async def rotate(
        self,
        endpoint_id: str,
        secret: str,
        *,
        account: str | None,
        previous_until: float,
        now: float,
    ) -> Endpoint:
        """Make ``secret`` the signing secret; the old one signs beside it
        until ``previous_until``. Raises NotFound."""
        ...

    async def rewind(
        self, endpoint_id: str, cursor: int, *, account: str | None, now: float
    ) -> Endpoint:
        """Replay: set the cursor (events after it are sent again), drop
        the fixed batch, make the endpoint due now. Raises NotFound."""
        ...

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[Endpoint]:
        """Lease up to ``limit`` enabled endpoints that are due and not
        leased by a live worker, the longest-waiting first."""
        ...

    async def form_batch(
        self, owner: str, endpoint_id: str, *, limit: int, build: BuildBatch, now: float
    ) -> Batch | None:
        """The endpoint's fixed batch; if it has none, fix one from the next
        ``limit`` wanted events after its cursor with ``build``. With no
        wanted event the cursor moves past the unwanted ones and the result
        is None. None also when ``owner`` no longer holds the lease."""
        ...

    async def record(self, owner: str, result: Result, *, lease_seconds: float, now: float) -> bool:
        """Log the attempt and act on it (advance: cursor past the batch,
        batch dropped, failures cleared; retry: count the failure, due at
        ``next_attempt_at``; disable). Renews the lease. False, changing
        nothing, when ``owner`` no longer holds the endpoint."""
        ...

    async def release(self, owner: str, endpoint_id: str, *, due: float) -> None:
        """Give the endpoint up, due again at ``due``."""
        ...

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        account: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[DeliveryRecord]:
        """The attempts, newest first. Raises NotFound for the endpoint."""
        ...


# rows ---------------------------------------------------------------------

Row = Any


def _json_list(value: Any) -> tuple[str, ...]:
    return tuple(json.loads(value) if isinstance(value, str) else value)


def endpoint(row: Row) -> Endpoint:
    return Endpoint(
        id=row["id"],
        account=row["account"],
        url=row["url"],
        description=row["description"],
        event_types=_json_list(row["event_types"]),
        secret=row["secret"],
        previous_secret=row["previous_secret"],
        previous_until=row["previous_until"],
        enabled=bool(row["enabled"]),
        disabled_reason=row["disabled_reason"],
        cursor=row["cursor"],
        failures=row["failures"],
        failing_since=row["failing_since"],
        next_attempt_at=row["next_attempt_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def batch(row: Row) -> Batch:
    body = row["body"]
    return Batch(
        endpoint_id=row["endpoint_id"],
        id=row["id"],
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        events=row["events"],
        body=body.encode() if isinstance(body, str) else bytes(body),
        created_at=row["created_at"],
    )


def delivery(row: Row) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        webhook_id=row["webhook_id"],
        first_seq=row["first_seq"],
        last_seq=row["last_seq"],
        events=row["events"],
        at=row["at"],
        status=row["status"],
        latency=row["latency"],
        outcome=row["outcome"],
        excerpt=row["excerpt"],
        error=row["error"],
    )


def types_json(types: Sequence[str]) -> str:
    return json.dumps(list(types))


def qmark(query: str) -> str:
    """The shared SQL with SQLite's placeholders."""
    return query.replace("%s", "?")


# SQL shared by both backends ------------------------------------------------------

INSERT_ENDPOINT = """
INSERT INTO webhook_endpoints (id, account, url, description, event_types, secret, enabled,
    cursor, failures, next_attempt_at, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, 1, (SELECT coalesce(max(seq), 0) FROM events), 0, %s, %s, %s)
RETURNING *
"""
SELECT_ENDPOINT = "SELECT * FROM webhook_endpoints WHERE id = %s"
SELECT_ENDPOINTS = "SELECT * FROM webhook_endpoints ORDER BY id"
SELECT_ACCOUNT_ENDPOINTS = "SELECT * FROM webhook_endpoints WHERE account = %s ORDER BY id"
# Params: url, types, description, enabled (null: unchanged), enabled, now, id.
UPDATE_ENDPOINT = """
UPDATE webhook_endpoints SET url = coalesce(%s, url), event_types = coalesce(%s, event_types),
    description = coalesce(%s, description), enabled = coalesce(%s, enabled),
    disabled_reason = CASE WHEN %s = 1 THEN NULL ELSE disabled_reason END,
    updated_at = %s
WHERE id = %s RETURNING *
"""
# Re-enabling starts the batch's retries over. Params: now, now, id.
REVIVE_ENDPOINT = """
UPDATE webhook_endpoints SET failures = 0, failing_since = NULL, next_attempt_at = %s,
    updated_at = %s
WHERE id = %s
"""
DELETE_DELIVERIES = "DELETE FROM webhook_deliveries WHERE endpoint_id = %s"
DELETE_BATCH = "DELETE FROM webhook_batches WHERE endpoint_id = %s"
DELETE_ENDPOINT = "DELETE FROM webhook_endpoints WHERE id = %s"
# Params: secret, previous until, now, id.
ROTATE_SECRET = """
UPDATE webhook_endpoints SET previous_secret = secret, secret = %s, previous_until = %s,
    updated_at = %s
WHERE id = %s RETURNING *
"""
# Params: cursor, now, now, id.
REWIND = """
UPDATE webhook_endpoints SET cursor = %s, failures = 0, failing_since = NULL,
    next_attempt_at = %s, updated_at = %s
WHERE id = %s RETURNING *
"""
# Params: id, owner, now.
LEASED_ENDPOINT = """
SELECT * FROM webhook_endpoints
WHERE id = %s AND lease_owner = %s AND lease_until >= %s AND enabled = 1
"""
SELECT_BATCH = "SELECT * FROM webhook_batches WHERE endpoint_id = %s"
INSERT_BATCH = """
INSERT INTO webhook_batches (endpoint_id, id, first_seq, last_seq, events, body, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""
# The end of the next window of the feed after the cursor (the cursor when
# the feed has nothing after it). Params: cursor, cursor, window. It is read
# first: every seq up to it is committed (the feed is gap-free), so a later
# statement of the transaction sees all of them, and the cursor may skip to
# it when none is wanted. (Under PostgreSQL's READ COMMITTED each statement
# has its own snapshot: a window end read after the events could pass over
# events committed in between.)
WINDOW_END = """
SELECT coalesce(max(seq), %s) AS high
FROM (SELECT seq FROM events WHERE seq > %s ORDER BY seq LIMIT %s) w
"""
# The account's wanted events ({states}: an IN list, or TRUE for all) in
# the window, in feed order. Params: cursor, window end, window, *states,
# account, limit. The window is taken by the primary key in order, so
# neither database reads past it whatever its planner thinks of the account
# filter (PostgreSQL otherwise scans the feed to the end).
# An account's own events (no send) count as the account's.
PENDING_EVENTS = f"""
SELECT {FEED_COLUMNS} FROM (
    SELECT * FROM events WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s
) e
LEFT JOIN sends s ON s.id = e.send_id
LEFT JOIN distributions d ON d.id = e.distribution_id
WHERE {{states}} AND coalesce(e.account, s.account) = %s
ORDER BY e.seq LIMIT %s
"""
# Feed entries looked at per query (the account is looked up for each), and
# windows per call: an account with few events in a busy feed moves its
# cursor up to WINDOW * WINDOWS per look.
WINDOW = 400
WINDOWS = 25
# Params: cursor, now, id.
SKIP_TO = "UPDATE webhook_endpoints SET cursor = %s, updated_at = %s WHERE id = %s"
INSERT_DELIVERY = """
INSERT INTO webhook_deliveries (endpoint_id, webhook_id, first_seq, last_seq, events, at,
    status, latency, outcome, excerpt, error)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
# Params: last seq, lease until, now, id.
ADVANCE = """
UPDATE webhook_endpoints SET cursor = %s, failures = 0, failing_since = NULL,
    lease_until = %s, updated_at = %s
WHERE id = %s
"""
# Params: next attempt, now (failing since), lease until, now, id.
RETRY = """
UPDATE webhook_endpoints SET failures = failures + 1, next_attempt_at = %s,
    failing_since = coalesce(failing_since, %s), lease_until = %s, updated_at = %s
WHERE id = %s
"""
# Params: reason, now, id.
DISABLE = """
UPDATE webhook_endpoints SET enabled = 0, disabled_reason = %s, lease_owner = NULL,
    lease_until = NULL, updated_at = %s
WHERE id = %s
"""
# Params: due, id, owner.
RELEASE = """
UPDATE webhook_endpoints SET next_attempt_at = %s, lease_owner = NULL, lease_until = NULL
WHERE id = %s AND lease_owner = %s
"""
SELECT_DELIVERIES = """
SELECT * FROM webhook_deliveries WHERE endpoint_id = %s AND id < %s ORDER BY id DESC LIMIT %s
"""


# An account event, last in its transaction (after the endpoint's change).
# Params: rows.account_event_row.
INSERT_ACCOUNT_EVENT = """
INSERT INTO events (at, account, kind, detail, data) VALUES (%s, %s, %s, %s, %s)
"""


def states_clause(types: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The ``{states}`` condition of PENDING_EVENTS and its parameters:
    ``types`` as stored, a send's state or an account event's kind."""
    if not types:
        return "TRUE", ()
    return "coalesce(e.kind, e.state) IN (" + ", ".join(["%s"] * len(types)) + ")", tuple(types)


def disabled_reason_name(reason: str | None) -> str:
    """The short name of why an endpoint was disabled (``gone``,
    ``expired``): the words before the colon of its reason."""
    return (reason or "other").split(":")[0]


def disabled_event(endpoint: Endpoint, reason: str | None, now: float) -> tuple[object, ...]:
    """The parameters of INSERT_ACCOUNT_EVENT for ``endpoint`` disabled
    for ``reason``."""
    data = {"endpoint_id": endpoint.id, "reason": disabled_reason_name(reason)}
    return account_event_row(
        now, endpoint.account, AccountEventKind.WEBHOOK_DISABLED, data, detail=reason
    )


def delivery_params(result: Result, now: float) -> tuple[object, ...]:
    """The parameters of INSERT_DELIVERY for one attempt."""
    b = result.batch
    outcome = {"advance": "delivered", "retry": "failed", "disable": "disabled"}[result.action]
    return (
        b.endpoint_id,
        b.id,
        b.first_seq,
        b.last_seq,
        b.events,
        now,
        result.status,
        result.latency,
        outcome,
        result.excerpt,
        result.error,
    )
