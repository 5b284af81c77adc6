"""The store contract. Every backend (SQLite, PostgreSQL) implements it and
runs the same contract tests (tests/test_store_contract.py)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    Claimed,
    Distribution,
    Event,
    NewDistribution,
    NewSend,
    Outcome,
    QueueSummary,
    Send,
    SendFilter,
    Suppression,
)

SCHEMA_VERSION = 1


class Store(Protocol):
    """A durable queue of sends.

    Every method raises :class:`mailer.errors.StoreError` on backend
    failure; lookups by id raise :class:`mailer.errors.NotFound`.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def enqueue(
        self,
        distribution: NewDistribution,
        sends: Sequence[NewSend],
        *,
        hostname: str,
        now: float,
    ) -> tuple[str, list[str]]:
        """Store a distribution and its sends in one transaction; returns the
        distribution id and the send ids (in input order). Durable on
        return."""
        ...

    async def distribution(self, distribution_id: str) -> Distribution: ...

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[Claimed]:
        """Lease up to ``limit`` due sends (queued/deferred and due, or
        sending with an expired lease) to ``owner``, oldest due first."""
        ...

    async def complete(self, owner: str, outcomes: Sequence[Outcome], *, now: float) -> int:
        """Record outcomes of sends leased by ``owner`` in one transaction:
        state, attempt, event, suppression. Outcomes for sends no longer
        leased by ``owner`` are ignored; returns how many were recorded."""
        ...

    async def release(self, owner: str, send_ids: Sequence[str], *, now: float) -> int:
        """Give leased sends back (due now) without an attempt."""
        ...

    async def send(self, send_id: str) -> Send: ...

    async def attempts(self, send_id: str) -> list[Attempt]: ...

    async def list_sends(
        self, flt: SendFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Send]:
        """Sends matching ``flt`` ordered by id, starting after id ``after``."""
        ...

    async def events(
        self, *, after: int = 0, limit: int = 100, send_id: str | None = None
    ) -> list[Event]: ...

    async def counts(self, distribution_id: str | None = None) -> dict[State, int]: ...

    async def summary(self, *, now: float) -> QueueSummary: ...

    async def suppress(
        self, account: str, address: str, reason: Reason, *, now: float, detail: str | None = None
    ) -> None: ...

    async def unsuppress(self, account: str, address: str) -> bool: ...

    async def suppressions(self, account: str | None = None) -> list[Suppression]: ...
