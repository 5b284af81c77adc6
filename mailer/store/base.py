"""The store contract. Every backend (SQLite, PostgreSQL) implements it and
runs the same contract tests (tests/test_store_contract.py)."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

from mailer.reasons import Reason, State
from mailer.store.models import (
    Account,
    AccountChange,
    AccountOutcome,
    AccountPause,
    ApiKey,
    Attempt,
    CachedPolicy,
    Claimed,
    Distribution,
    Event,
    FeedbackResult,
    Hold,
    HoldKind,
    Idempotency,
    IdempotencyRecord,
    Inbound,
    NewDistribution,
    NewInbound,
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
from mailer.store.tlsrpt import TLSCount, TLSReportStore
from mailer.store.webhooks import WebhookStore


class Lifecycle(Protocol):
    """Opening and closing a backend."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class IntakeStore(Protocol):
    """What the enqueue path uses: durable enqueue with idempotency."""

    async def enqueue(
        self,
        distribution: NewDistribution,
        sends: Sequence[NewSend],
        *,
        hostname: str,
        now: float,
        idempotency: Idempotency | None = None,
        distribution_id: str | None = None,
    ) -> tuple[str, list[str]]:
        """Store a distribution (with id ``distribution_id``, or a new one)
        and its sends in one transaction; returns the distribution id and
        the send ids (in input order). Durable on return.

        With ``idempotency`` the key is recorded in the same transaction,
        and compared in it with what the account recorded before under that
        key (not yet stale): with the same body hash nothing is stored and
        the recorded ids are returned; with another, IdempotencyConflict is
        raised and nothing is stored. Two enqueues racing with one key end
        as one stored distribution and either its ids or the conflict.
        """
        ...

    async def idempotent(
        self, account: str, key: str, *, stale_before: float = float("-inf")
    ) -> IdempotencyRecord | None:
        """The record of an enqueue with this account's key, if any that was
        made at or after ``stale_before``."""
        ...


class QueueStore(Protocol):
    """What a worker uses: leases on due sends, outcomes, the queue's next due time."""

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[Claimed]:
        """Lease up to ``limit`` due sends to ``owner``: sends whose lease expired first, then
        due queued/deferred sends dealt fairly over the accounts with due
        mail and their distributions, best priority first, oldest due first
        within a distribution, within each account's rate cap
        (mailer.store.fair)."""
        ...

    async def complete(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        tls_counts: Sequence[TLSCount] = (),
    ) -> int:
        """Record outcomes of sends leased by ``owner`` in one transaction:
        state, attempt, event, suppression, and the TLS report counts of
        the sessions they went over (added whatever the leases). Outcomes for sends no longer
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

    async def summary(self, *, now: float) -> QueueSummary: ...

    async def distribution(self, distribution_id: str) -> Distribution: ...

    async def prune(
        self, *, before: float, limit: int, idempotency_before: float | None = None
    ) -> Pruned:
        """Delete up to ``limit`` finished sends (delivered, bounced, failed,
        suppressed, cancelled) last changed before ``before``, with their
        attempts and their events from before ``before``; then up to
        ``limit`` events from before ``before`` whose send is gone (an
        account's events among them), up to ``limit`` webhook delivery log
        entries from before ``before`` and, with ``idempotency_before``, up
        to ``limit`` idempotency records made before it (expired: a reuse of
        their key is a new request). One transaction. Suppressions, holds
        and distributions stay; event sequence numbers are never reused, so
        a feed cursor keeps its meaning."""
        ...


class FeedStore(Protocol):
    """What readers of sends and the event feed use."""

    async def send(self, send_id: str) -> Send: ...

    async def attempts(self, send_id: str) -> list[Attempt]: ...

    async def list_sends(
        self, flt: SendFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Send]:
        """Sends matching ``flt`` ordered by id, starting after id ``after``."""
        ...

    async def events(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        send_id: str | None = None,
        account: str | None = None,
    ) -> list[Event]:
        """Events after ``after`` in feed order, with the send's account and
        reference and the distribution's tags; only one send's or one
        account's when asked. An account's own events (``kind`` set, no
        send) are among the account's and the operator's, never a send's."""
        ...

    async def counts(self, distribution_id: str | None = None) -> dict[State, int]: ...

    async def queue_depth(self) -> dict[State, int]:
        """The unfinished sends (queued, held, sending, deferred) per state,
        counted from a partial index of them alone, so the cost does not
        grow with the finished history. States with none are left out."""
        ...


class OperatorStore(Protocol):
    """What operators and the unsubscribe link change: cancel, suppressions,
    holds, replays, statistics."""

    async def flush(self, *, now: float, domain: str | None = None) -> int:
        """Make the deferred sends (only those to ``domain`` if given) due
        now, as ``postqueue -f`` does; their state, reason and attempt count
        stay. Returns how many were moved forward."""
        ...

    async def cancel(self, distribution_id: str, *, now: float) -> int:
        """Cancel the distribution's sends that are not yet sent (queued,
        deferred, held), each with a ``cancelled`` event; leased sends are
        left to their worker. Returns how many were cancelled. Raises
        NotFound for an unknown distribution."""
        ...

    async def suppress(
        self,
        account: str,
        address: str,
        reason: Reason,
        *,
        now: float,
        detail: str | None = None,
        replace: bool = False,
    ) -> bool:
        """Put ``address`` on ``account``'s list. An entry already there
        gives way only to a stronger reason (complaint > unsubscribe >
        bounce, :mod:`mailer.store.rules`); otherwise it stays, reason, time
        and note, unless ``replace``. Returns whether the entry was written."""
        ...

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
        the address was already unsubscribed (or suppressed for a
        complaint)."""
        ...

    async def unsuppress(self, account: str, address: str) -> bool: ...

    async def suppressions(self, account: str | None = None) -> list[Suppression]: ...

    # operator tools -----------------------------------------------------

    async def suppress_many(self, entries: Sequence[Suppression], *, replace: bool = False) -> int:
        """Add every entry (addresses lower-cased) in one transaction: all
        or nothing. An entry already on the list gives way only to a
        stronger reason, as in :meth:`suppress`, unless ``replace``.
        Returns how many were written."""
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


class FeedbackStore(Protocol):
    """After the 250: returned messages kept raw and processed once, and the
    per-account circuit breaker."""

    async def inbound_put(self, messages: Sequence[NewInbound], *, now: float) -> list[str]:
        """Store returned messages as received, in one transaction (the
        listener commits the messages of concurrent sessions together);
        durable on return, so the listener answers 250 only then. Returns
        their ids in order."""
        ...

    async def inbound_pending(self, *, limit: int = 100) -> list[Inbound]:
        """Stored messages not yet processed, oldest first, with ``raw``."""
        ...

    async def inbound_get(self, inbound_id: str) -> Inbound:
        """One stored message with ``raw``. Raises NotFound."""
        ...

    async def inbound_list(
        self, *, unmatched: bool = False, limit: int = 100, after: str = ""
    ) -> list[Inbound]:
        """Stored messages by id after ``after`` (without ``raw``); with
        ``unmatched`` only processed ones that matched no send."""
        ...

    async def send_to(self, distribution_id: str, account: str, recipient: str) -> Send:
        """The latest send of ``distribution_id`` under ``account`` to
        ``recipient`` (case ignored), as a returned message's Feedback-ID
        and recipient name it. Raises NotFound."""
        ...

    async def inbound_done(self, inbound_id: str, result: FeedbackResult, *, now: float) -> bool:
        """In one transaction: apply ``result``'s effects (late bounce of a
        delivered send, suppression, an event each) and mark the message
        processed. A message already processed changes nothing and gives
        False, so processing twice never applies twice. Raises NotFound."""
        ...

    # the per-account circuit breaker (mailer.feedback.breaker) ---------------

    async def account_window(
        self, account: str, *, since: float, limit: int
    ) -> list[AccountOutcome]:
        """The account's delivered and bounced sends with our envelope
        created since ``since``, newest first, at most ``limit``."""
        ...

    async def pause_account(self, account: str, *, now: float, detail: str | None = None) -> int:
        """Record the account as paused and hold its queued and deferred
        sends (reason ``account-paused``, an event each); its new sends
        start held. Returns how many were held."""
        ...

    async def release_account(self, account: str, *, now: float) -> int:
        """Lift the pause: its paused sends are queued, due now (a
        ``released`` event each), and the release time is kept for the
        breaker's window. Returns how many were queued. Raises NotFound
        when the account is not paused."""
        ...

    async def active_accounts(self, *, since: float) -> list[str]:
        """Accounts with sends delivered or bounced since ``since``."""
        ...

    async def account_pauses(self) -> list[AccountPause]:
        """Every account the breaker has paused (or released)."""
        ...


class TransportStore(Protocol):
    """MTA-STS policies (RFC 8461), shared by every worker."""

    async def sts_policy(self, domain: str) -> CachedPolicy | None:
        """The cached policy of ``domain``, expired or not."""
        ...

    async def put_sts_policy(self, policy: CachedPolicy) -> None:
        """Add or replace the domain's cached policy."""
        ...

    async def drop_sts_policy(self, domain: str) -> bool:
        """Delete the domain's cached policy; False when there was none."""
        ...

    async def sts_policies_due(self, *, now: float, limit: int = 100) -> list[CachedPolicy]:
        """Cached policies three quarters or more through their max_age at
        ``now``, soonest expiry first: the ones to refresh."""
        ...


class AccountStore(Protocol):
    """Accounts, their API keys (by digest) and distributions per account."""

    async def add_account(self, account: Account) -> Account:
        """Record a new account. Raises ValidationError (field ``id``) when
        the id is taken."""
        ...

    async def account(self, account_id: str) -> Account:
        """Raises NotFound for an unknown id."""
        ...

    async def accounts(self) -> list[Account]: ...

    async def list_distributions(
        self, account: str | None = None, *, after: str = "", limit: int = 100
    ) -> list[Distribution]:
        """Distributions (one account's, or all) ordered by id, starting
        after id ``after``."""
        ...

    async def update_account(self, account_id: str, change: AccountChange) -> Account:
        """Apply ``change``; returns the account as it is now. Raises
        NotFound for an unknown id."""
        ...

    async def add_api_key(self, key: ApiKey, digest: str) -> None:
        """Record a key by the SHA-256 ``digest`` of its token (the token
        itself is never stored). Raises NotFound for an unknown account."""
        ...

    async def api_key(self, digest: str) -> ApiKey | None:
        """The key whose token has this digest, revoked or not."""
        ...

    async def api_keys(self, account: str | None = None) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, *, now: float) -> bool:
        """Revoke a key; False when there is no such live key."""
        ...


class Store(
    Lifecycle,
    IntakeStore,
    QueueStore,
    FeedStore,
    OperatorStore,
    FeedbackStore,
    TransportStore,
    AccountStore,
    Protocol,
):
    """A durable queue of sends: every role in one backend.

    Every method raises :class:`mailer.errors.StoreError` on backend
    failure; lookups by id raise :class:`mailer.errors.NotFound`.
    """

    @property
    def webhooks(self) -> WebhookStore:
        """Webhook endpoints, their cursors, fixed batches and delivery log."""
        ...

    @property
    def tlsrpt(self) -> TLSReportStore:
        """TLS reporting (RFC 8460): daily counts and report jobs."""
        ...
