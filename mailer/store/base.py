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
    Hold,
    HoldKind,
    Idempotency,
    IdempotencyRecord,
    NewDistribution,
    NewSend,
    Outcome,
    Pruned,
    QueueSummary,
    ReplayBatch,
    ReplayPlan,
    Send,
    SendFilter,
    Stats,
    Suppression,
)

SCHEMA_VERSION = 3


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
        idempotency: Idempotency | None = None,
    ) -> tuple[str, list[str]]:
        """Store a distribution and its sends in one transaction; returns the
        distribution id and the send ids (in input order). Durable on
        return.

        With ``idempotency`` the key is recorded in the same transaction.
        When the account has used the key before, nothing is stored and the
        ids recorded with the key are returned: the caller compares body
        hashes through :meth:`idempotent`.
        """
        ...

    async def idempotent(self, account: str, key: str) -> IdempotencyRecord | None:
        """The record of an enqueue with this account's key, if any."""
        ...

    async def cancel(self, distribution_id: str, *, now: float) -> int:
        """Cancel the distribution's sends that are not yet sent (queued,
        deferred, held), each with a ``cancelled`` event; leased sends are
        left to their worker. Returns how many were cancelled. Raises
        NotFound for an unknown distribution."""
        ...

    async def flush(self, *, now: float, domain: str | None = None) -> int:
        """Make the deferred sends (only those to ``domain`` if given) due
        now, as ``postqueue -f`` does; their state, reason and attempt count
        stay. Returns how many were moved forward."""
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

    async def renew(
        self, owner: str, send_ids: Sequence[str], *, lease_seconds: float, now: float
    ) -> int:
        """Extend ``owner``'s leases of ``send_ids`` to ``now + lease_seconds``
        (sends waiting in a live worker must not fall to another one);
        returns how many it still held."""
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

    async def prune(self, *, before: float, limit: int) -> Pruned:
        """Delete up to ``limit`` finished sends (delivered, bounced, failed,
        suppressed, cancelled) last changed before ``before``, with their
        attempts and their events from before ``before``; then up to
        ``limit`` events from before ``before`` whose send is gone. One
        transaction. Suppressions, holds and distributions stay; event
        sequence numbers are never reused, so a feed cursor keeps its
        meaning."""
        ...

    async def queue_depth(self) -> dict[State, int]:
        """The unfinished sends (queued, held, sending, deferred) per state,
        counted from a partial index of them alone, so the cost does not
        grow with the finished history. States with none are left out."""
        ...

    async def suppress(
        self, account: str, address: str, reason: Reason, *, now: float, detail: str | None = None
    ) -> None: ...

    async def unsubscribe(
        self,
        account: str,
        address: str,
        *,
        now: float,
        send_id: str | None = None,
        detail: str | None = None,
    ) -> bool:
        """Suppress ``address`` for ``account`` with reason
        ``suppressed-unsubscribe`` and, when ``send_id`` names a send of that
        account to that address, record a ``suppressed-unsubscribe`` event
        on it (its state unchanged). Returns False, changing nothing, when
        the address was already unsubscribed."""
        ...

    async def unsuppress(self, account: str, address: str) -> bool: ...

    async def suppressions(self, account: str | None = None) -> list[Suppression]: ...

    # operator tools -----------------------------------------------------

    async def suppress_many(self, entries: Sequence[Suppression]) -> int:
        """Add or replace every entry (addresses lower-cased) in one
        transaction: all or nothing. Returns how many were written."""
        ...

    async def hold(self, kind: HoldKind, value: str, *, now: float, note: str | None = None) -> int:
        """Hold a recipient domain or a distribution: record the hold and move
        its queued and deferred sends to ``held`` (an event each). Sends
        being delivered finish, but an outcome that would queue or defer them
        again holds them instead; new sends to a held domain start held.
        Returns how many sends were moved. Raises NotFound for an unknown
        distribution and ValidationError for an unknown kind."""
        ...

    async def release_hold(self, kind: HoldKind, value: str, *, now: float) -> int:
        """Delete the hold and queue its held sends (due now, a ``released``
        event each) unless another hold still covers them. Returns how many
        were queued. Raises NotFound when there is no such hold."""
        ...

    async def holds(self) -> list[Hold]: ...

    async def replay_plan(self, flt: SendFilter) -> ReplayPlan:
        """Count what :meth:`replay` would find; changes nothing. Raises
        ValidationError when ``flt`` names a state other than bounced or
        failed."""
        ...

    async def replay(
        self,
        flt: SendFilter,
        *,
        now: float,
        note: str | None = None,
        include_suppressed: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> ReplayBatch:
        """Requeue (due now, attempts kept, a ``replayed`` event with
        ``note``) the next ``limit`` bounced or failed sends matching
        ``flt`` with ids after ``after``, in one transaction. Suppressed
        addresses are skipped; with ``include_suppressed`` the account's
        suppression is deleted and the send requeued (the global list is
        never lifted). Page on with ``after=batch.last_id``.
        Raises ValidationError like :meth:`replay_plan`."""
        ...

    async def stats(self, *, now: float, minutes: int = 15, top: int = 10) -> Stats:
        """Counts per state, the ``top`` failure reasons and deferring
        destinations, events per minute over the last ``minutes``, holds."""
        ...

    async def suppression_for(self, account: str, address: str) -> list[Suppression]:
        """The entries that suppress ``address`` for ``account``: its own,
        then the global one (account '')."""
        ...
