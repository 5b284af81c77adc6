"""The shared store: PostgreSQL through psycopg 3 and a connection pool.

Several worker processes, on several hosts, share one queue. A claim takes
rows with ``SELECT … FOR UPDATE SKIP LOCKED`` and leases them; a batch of
outcomes is one transaction. Event inserts come last in every transaction,
under a lock that keeps the feed gap-free (mailer.store.postgres.events).
Migrations and scratch schemas: mailer.store.postgres.schema; operator tools:
mailer.store.postgres.ops. psycopg exceptions are translated here into
StoreError.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from mailer.errors import IdempotencyConflict, NotFound, StoreError, ValidationError
from mailer.reasons import Reason, State
from mailer.store import rows as typed
from mailer.store import rules
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
    new_id,
    new_ids,
)
from mailer.store.postgres import accounts as pg_accounts
from mailer.store.postgres import events as pg_events
from mailer.store.postgres import feedback as pg_feedback
from mailer.store.postgres import ops as pg_ops
from mailer.store.postgres import rows as pg_rows
from mailer.store.postgres import sql as q
from mailer.store.postgres.schema import create_schema, describe, drop_schema, migrate, with_schema
from mailer.store.postgres.tlsrpt import PostgresTLSReports
from mailer.store.postgres.tlsrpt import add_counts as add_tls_counts
from mailer.store.postgres.webhooks import PostgresWebhooks
from mailer.store.rules import send_filter
from mailer.store.tlsrpt import TLSCount

Conn = psycopg.AsyncConnection[DictRow]


class PostgresStore:
    """:class:`mailer.store.base.Store` over a PostgreSQL database.

    ``dsn`` is a libpq URL; ``options=-csearch_path=…`` in it picks the
    schema (which must exist; default ``public``). :meth:`open` opens the
    pool, waiting up to ``connect_timeout`` seconds for the server, and
    brings the schema up to date; :meth:`close` closes the pool.
    """

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 8, connect_timeout: float = 10.0
    ) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._key = 0  # the schema's advisory-lock key, known once migrated
        self.webhooks = PostgresWebhooks(self)
        self.tlsrpt = PostgresTLSReports(self)

    def __repr__(self) -> str:
        return f"PostgresStore({describe(self.dsn)})"

    # lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Raises StoreError when the server cannot be reached in time or
        the schema is unusable."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            connection_class=psycopg.AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            # a connection the server dropped (restart, failover) is replaced
            # before use instead of failing the next operation
            check=AsyncConnectionPool.check_connection,
            name="mailer-store",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreError(f"postgres {describe(self.dsn)}: not reachable: {exc}") from exc
        self._pool = pool
        try:
            async with self._tx() as conn:
                self._key = await migrate(conn, self.dsn)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """A pooled connection in autocommit mode: each statement commits."""
        if self._pool is None:
            raise StoreError("store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreError(f"postgres {describe(self.dsn)}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _tx(self, *, snapshot: bool = False) -> AsyncIterator[Conn]:
        """One transaction; with ``snapshot`` a read-only consistent view."""
        async with self._conn() as conn, conn.transaction():
            if snapshot:
                await conn.execute(q.READ_SNAPSHOT)
            yield conn

    async def _all(self, query: str, params: Any = None) -> list[DictRow]:
        async with self._conn() as conn:
            return await _all(conn, query, params)

    # enqueue ---------------------------------------------------------------

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
        dist_id = distribution_id or new_id()
        due = distribution.send_at if distribution.send_at is not None else now
        ids = new_ids(len(sends))
        account = distribution.account
        rows = typed.new_sends_json(ids, sends, hostname=hostname)
        async with self._tx() as conn:
            if idempotency is not None:
                record = (account, idempotency.key, idempotency.body_hash, dist_id, ids)
                # A racing insert of the same key waits here for the other
                # transaction; once it commits, nothing is inserted and the
                # SELECT (a fresh snapshot under READ COMMITTED) sees its row.
                # An expired row is taken over in the same statement.
                inserted = await _all(
                    conn,
                    q.INSERT_IDEMPOTENCY,
                    (*record, idempotency.data, now, max(idempotency.stale_before, -1e300)),
                )
                if not inserted:
                    [first] = await _all(conn, q.SELECT_IDEMPOTENCY, (account, idempotency.key))
                    if first["body_hash"] != idempotency.body_hash:
                        raise IdempotencyConflict(idempotency.key)
                    return first["distribution_id"], list(first["send_ids"])
            await conn.execute(
                q.INSERT_DISTRIBUTION, pg_rows.distribution_row(dist_id, distribution, now)
            )
            batch = {"distribution": dist_id, "account": account, "due": due, "now": now}
            await conn.execute(pg_accounts.ENSURE_ACCOUNT, batch)
            await conn.execute(
                pg_accounts.SET_PRIORITY, {**batch, "priority": distribution.priority}
            )
            await conn.execute(q.INSERT_SENDS_JSON, {**batch, "rows": rows})
            held = await pg_ops.hold_new_sends(conn, self._key, dist_id, now)
            await pg_events.lock(conn, self._key)
            await conn.execute(q.INSERT_QUEUED_EVENTS, batch)
            await pg_events.append(conn, self._key, held)
        return dist_id, ids

    async def idempotent(
        self, account: str, key: str, *, stale_before: float = float("-inf")
    ) -> IdempotencyRecord | None:
        rows = await self._all(q.SELECT_IDEMPOTENCY, (account, key))
        if not rows or rows[0]["created_at"] < stale_before:
            return None
        return typed.idempotency_record(rows[0])

    async def distribution(self, distribution_id: str) -> Distribution:
        rows = await self._all(q.SELECT_DISTRIBUTION, (distribution_id,))
        if not rows:
            raise NotFound("distribution", distribution_id)
        return typed.distribution(rows[0])

    # the worker's side ------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[Claimed]:
        params = {"owner": owner, "until": now + lease_seconds, "now": now, "limit": limit}
        async with self._tx() as conn:
            expired = sorted(await _all(conn, q.CLAIM_EXPIRED, params), key=_claim_order)
            due: list[DictRow] = []
            if len(expired) < limit:
                due = await pg_accounts.claim_due(
                    conn, owner, limit - len(expired), until=now + lease_seconds, now=now
                )
            rows = [(r, Reason.LEASE_EXPIRED) for r in expired] + [(r, Reason.QUEUED) for r in due]
            await pg_events.append(
                conn,
                self._key,
                [
                    typed.event_row(
                        r["id"], r["distribution_id"], now, State.SENDING, why, detail=owner
                    )
                    for r, why in rows
                ],
            )
        return [
            Claimed(typed.send(r), Reason(r["suppressed"]) if r["suppressed"] else None)
            for r, _ in rows
        ]

    async def complete(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        tls_counts: Sequence[TLSCount] = (),
    ) -> int:
        # the first outcome per send counts, as if recorded one after another
        first: dict[str, Outcome] = {}
        for outcome in outcomes:
            first.setdefault(outcome.send_id, outcome)
        async with self._tx() as conn:
            leased = await _all(conn, q.LEASED_SENDS, (list(first), owner))
            held = await pg_ops.held_values(conn) if leased else set()
            batch = typed.OutcomeRows()
            for row in leased:
                outcome = first[row["id"]]
                batch.add(
                    row,
                    rules.unless_held(outcome, row["domain"], row["distribution_id"], held),
                    now,
                )
            if batch.finish:
                await conn.execute(q.FINISH_SENDS, pg_rows.columns(batch.finish))
            if batch.attempts:
                await conn.execute(q.INSERT_ATTEMPTS, pg_rows.columns(batch.attempts))
            if batch.suppress:
                async with conn.cursor() as cur:
                    await cur.executemany(q.UPSERT_SUPPRESSION, batch.suppress)
            await pg_events.append(conn, self._key, batch.events)
            await add_tls_counts(conn, tls_counts)
        return len(leased)

    async def renew(
        self, owner: str, send_ids: Sequence[str], *, lease_seconds: float, now: float
    ) -> int:
        async with self._tx() as conn:
            cur = await conn.execute(
                q.RENEW, {"until": now + lease_seconds, "ids": list(send_ids), "owner": owner}
            )
            return cur.rowcount

    async def release(self, owner: str, send_ids: Sequence[str], *, now: float) -> int:
        async with self._tx() as conn:
            ids = list(send_ids)
            cur = await conn.execute(q.RELEASE, {"now": now, "ids": ids, "owner": owner})
            count = cur.rowcount
            await pg_events.append(conn, self._key, await pg_ops.hold_if_held(conn, ids, now))
        return count

    async def cancel(self, distribution_id: str, *, now: float) -> int:
        async with self._tx() as conn:
            if not await _all(conn, q.SELECT_DISTRIBUTION, (distribution_id,)):
                raise NotFound("distribution", distribution_id)
            rows = await _all(conn, q.CANCEL_DISTRIBUTION, (now, distribution_id))
            cancelled = State.CANCELLED, Reason.CANCELLED
            events = [typed.event_row(r["id"], distribution_id, now, *cancelled) for r in rows]
            await pg_events.append(conn, self._key, events)
        return len(rows)

    async def flush(self, *, now: float, domain: str | None = None) -> int:
        domain = rules.hold_value("domain", domain) if domain is not None else None
        async with self._tx() as conn:
            cursor = await conn.execute(q.FLUSH_DEFERRED, (now, now, domain, domain))
            return cursor.rowcount

    # reading ---------------------------------------------------------------

    async def send(self, send_id: str) -> Send:
        rows = await self._all(q.SELECT_SEND, (send_id,))
        if not rows:
            raise NotFound("send", send_id)
        return typed.send(rows[0])

    async def send_to(self, distribution_id: str, account: str, recipient: str) -> Send:
        rows = await self._all(
            q.SELECT_SEND_OF_DISTRIBUTION_TO, (distribution_id, recipient.lower(), account)
        )
        if not rows:
            raise NotFound("send", f"{distribution_id} to {recipient}")
        return typed.send(rows[0])

    async def attempts(self, send_id: str) -> list[Attempt]:
        return [typed.attempt(r) for r in await self._all(q.SELECT_ATTEMPTS, (send_id,))]

    async def list_sends(
        self, flt: SendFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Send]:
        where, params = send_filter(flt, after, placeholder="%s")
        query = f"SELECT * FROM sends {where} ORDER BY id LIMIT %s"
        return [typed.send(r) for r in await self._all(query, (*params, limit))]

    async def events(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        send_id: str | None = None,
        account: str | None = None,
    ) -> list[Event]:
        # one query per combination, so that each has a plan of its own
        query = {
            (False, False): q.SELECT_EVENTS,
            (False, True): q.SELECT_SEND_EVENTS,
            (True, False): q.SELECT_ACCOUNT_EVENTS,
            (True, True): q.SELECT_ACCOUNT_SEND_EVENTS,
        }[(account is not None, send_id is not None)]
        params = {"after": after, "limit": limit, "send": send_id, "account": account}
        return [typed.event(r) for r in await self._all(query, params)]

    async def counts(self, distribution_id: str | None = None) -> dict[State, int]:
        if distribution_id is None:
            rows = await self._all(q.COUNT_STATES)
        else:
            rows = await self._all(q.COUNT_DISTRIBUTION_STATES, (distribution_id,))
        return {State(r["state"]): r["n"] for r in rows}

    async def prune(
        self, *, before: float, limit: int, idempotency_before: float | None = None
    ) -> Pruned:
        params = {"before": before, "limit": limit}
        async with self._tx() as conn:
            [row] = await _all(conn, q.PRUNE, params)
            orphans = await conn.execute(q.PRUNE_ORPHAN_EVENTS, params)
            deliveries = await conn.execute(q.PRUNE_DELIVERIES, params)
            keys = 0
            if idempotency_before is not None:
                expired = {"before": idempotency_before, "limit": limit}
                keys = (await conn.execute(q.PRUNE_IDEMPOTENCY, expired)).rowcount
            return Pruned(
                row["sends"],
                row["attempts"],
                row["events"] + orphans.rowcount,
                deliveries.rowcount,
                keys,
            )

    async def queue_depth(self) -> dict[State, int]:
        return {State(r["state"]): r["n"] for r in await self._all(q.QUEUE_DEPTH)}

    async def summary(self, *, now: float) -> QueueSummary:
        [row] = await self._all(q.SUMMARY, {"now": now})
        return QueueSummary(row["due"], row["in_flight"], row["waiting"], row["next_due"])

    # suppression -----------------------------------------------------------

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
        query = q.REPLACE_SUPPRESSION if replace else q.UPSERT_SUPPRESSION
        async with self._conn() as conn:
            params = (account, address.lower(), reason.value, now, detail)
            cur = await conn.execute(query, params)
            return cur.rowcount > 0

    async def unsubscribe(
        self,
        account: str,
        address: str,
        *,
        now: float,
        send_id: str | None = None,
        detail: str | None = None,
    ) -> bool:
        async with self._tx() as conn:
            return await pg_ops.unsubscribe(
                conn, self._key, account, address, now=now, send_id=send_id, detail=detail
            )

    async def unsuppress(self, account: str, address: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(q.DELETE_SUPPRESSION, (account, address.lower()))
            return cur.rowcount > 0

    async def suppressions(self, account: str | None = None) -> list[Suppression]:
        if account is None:
            rows = await self._all(q.SELECT_SUPPRESSIONS)
        else:
            rows = await self._all(q.SELECT_ACCOUNT_SUPPRESSIONS, (account,))
        return [typed.suppression(r) for r in rows]

    async def suppression_for(self, account: str, address: str) -> list[Suppression]:
        rows = await self._all(q.SUPPRESSIONS_FOR, (address.lower(), account))
        return [typed.suppression(r) for r in rows]

    # operator tools (mailer.store.postgres.ops) ------------------------------------

    async def suppress_many(self, entries: Sequence[Suppression], *, replace: bool = False) -> int:
        async with self._tx() as conn:
            return await pg_ops.suppress_many(conn, entries, replace=replace)

    async def hold(self, kind: HoldKind, value: str, *, now: float, note: str | None = None) -> int:
        async with self._tx() as conn:
            return await pg_ops.hold(conn, self._key, kind, value, now=now, note=note)

    async def release_hold(self, kind: HoldKind, value: str, *, now: float) -> int:
        async with self._tx() as conn:
            return await pg_ops.release_hold(conn, self._key, kind, value, now=now)

    async def holds(self) -> list[Hold]:
        async with self._conn() as conn:
            return await pg_ops.holds(conn)

    async def replay_plan(self, flt: SendFilter) -> ReplayPlan:
        async with self._conn() as conn:
            return await pg_ops.replay_plan(conn, flt)

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
        async with self._tx() as conn:
            return await pg_ops.replay(
                conn,
                self._key,
                flt,
                now=now,
                note=note,
                include_suppressed=include_suppressed,
                after=after,
                limit=limit,
            )

    async def stats(self, *, now: float, minutes: int = 15, top: int = 10) -> Stats:
        async with self._tx(snapshot=True) as conn:
            return await pg_ops.stats(conn, now=now, minutes=minutes, top=top)

    # after the 250 (mailer.store.postgres.feedback) -------------------------

    async def inbound_put(self, messages: Sequence[NewInbound], *, now: float) -> list[str]:
        async with self._tx() as conn:
            return await pg_feedback.put(conn, messages, now)

    async def inbound_pending(self, *, limit: int = 100) -> list[Inbound]:
        rows = await self._all(q.SELECT_PENDING_INBOUND, (limit,))
        return [pg_feedback.inbound(r) for r in rows]

    async def inbound_get(self, inbound_id: str) -> Inbound:
        rows = await self._all(q.SELECT_INBOUND, (inbound_id,))
        if not rows:
            raise NotFound("inbound message", inbound_id)
        return pg_feedback.inbound(rows[0])

    async def inbound_list(
        self, *, unmatched: bool = False, limit: int = 100, after: str = ""
    ) -> list[Inbound]:
        query = q.LIST_UNMATCHED_INBOUND if unmatched else q.LIST_INBOUND
        return [pg_feedback.inbound(r) for r in await self._all(query, (after, limit))]

    async def inbound_done(self, inbound_id: str, result: FeedbackResult, *, now: float) -> bool:
        async with self._tx() as conn:
            return await pg_feedback.finish(conn, self._key, inbound_id, result, now)

    async def account_window(
        self, account: str, *, since: float, limit: int
    ) -> list[AccountOutcome]:
        async with self._conn() as conn:
            return await pg_feedback.account_window(conn, account, since, limit)

    async def pause_account(self, account: str, *, now: float, detail: str | None = None) -> int:
        async with self._tx() as conn:
            return await pg_feedback.pause(conn, self._key, account, now, detail)

    async def release_account(self, account: str, *, now: float) -> int:
        async with self._tx() as conn:
            return await pg_feedback.release(conn, self._key, account, now)

    async def active_accounts(self, *, since: float) -> list[str]:
        return [r["account"] for r in await self._all(q.ACTIVE_ACCOUNTS, (since,))]

    async def account_pauses(self) -> list[AccountPause]:
        return [pg_feedback.account_pause(r) for r in await self._all(q.SELECT_PAUSES)]

    # MTA-STS policies ---------------------------------------------------------

    async def sts_policy(self, domain: str) -> CachedPolicy | None:
        rows = await self._all(q.SELECT_STS_POLICY, (domain,))
        return typed.cached_policy(rows[0]) if rows else None

    async def put_sts_policy(self, policy: CachedPolicy) -> None:
        async with self._conn() as conn:
            await conn.execute(q.UPSERT_STS_POLICY, typed.cached_policy_row(policy))

    async def drop_sts_policy(self, domain: str) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(q.DELETE_STS_POLICY, (domain,))
            return cur.rowcount > 0

    async def sts_policies_due(self, *, now: float, limit: int = 100) -> list[CachedPolicy]:
        rows = await self._all(q.STS_POLICIES_DUE, (now, limit))
        return [typed.cached_policy(r) for r in rows]

    # accounts and API keys -------------------------------------------------

    async def add_account(self, account: Account) -> Account:
        params = (
            account.id,
            account.name,
            account.language,
            account.rate_cap,
            account.priority,
            account.created_at,
        )
        if not await self._all(pg_accounts.INSERT_ACCOUNT, params):
            raise ValidationError("id", f"account {account.id!r} exists already")
        return account

    async def account(self, account_id: str) -> Account:
        rows = await self._all(pg_accounts.SELECT_ACCOUNT, (account_id,))
        if not rows:
            raise NotFound("account", account_id)
        return typed.account(rows[0])

    async def list_distributions(
        self, account: str | None = None, *, after: str = "", limit: int = 100
    ) -> list[Distribution]:
        if account is None:
            rows = await self._all(pg_accounts.LIST_DISTRIBUTIONS, (after, limit))
        else:
            rows = await self._all(pg_accounts.LIST_ACCOUNT_DISTRIBUTIONS, (account, after, limit))
        return [typed.distribution(r) for r in rows]

    async def accounts(self) -> list[Account]:
        return [typed.account(r) for r in await self._all(pg_accounts.SELECT_ACCOUNTS)]

    async def update_account(self, account_id: str, change: AccountChange) -> Account:
        rows = await self._all(
            pg_accounts.UPDATE_ACCOUNT, pg_accounts.change_params(account_id, change)
        )
        if not rows:
            raise NotFound("account", account_id)
        return typed.account(rows[0])

    async def add_api_key(self, key: ApiKey, digest: str) -> None:
        async with self._tx() as conn:
            if not await _all(conn, pg_accounts.SELECT_ACCOUNT, (key.account,)):
                raise NotFound("account", key.account)
            params = (key.id, digest, key.account, key.operator, key.name, key.created_at)
            await conn.execute(pg_accounts.INSERT_KEY, params)

    async def api_key(self, digest: str) -> ApiKey | None:
        rows = await self._all(pg_accounts.SELECT_KEY_BY_DIGEST, (digest,))
        return typed.api_key(rows[0]) if rows else None

    async def api_keys(self, account: str | None = None) -> list[ApiKey]:
        if account is None:
            rows = await self._all(pg_accounts.SELECT_KEYS)
        else:
            rows = await self._all(pg_accounts.SELECT_ACCOUNT_KEYS, (account,))
        return [typed.api_key(r) for r in rows]

    async def revoke_api_key(self, key_id: str, *, now: float) -> bool:
        async with self._conn() as conn:
            cur = await conn.execute(pg_accounts.REVOKE_KEY, (now, key_id))
            return cur.rowcount > 0


async def _all(conn: Conn, query: str, params: Any = None) -> list[DictRow]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


def _claim_order(row: DictRow) -> tuple[float, str]:
    return (row["ord"], row["id"])


__all__ = ["PostgresStore", "create_schema", "drop_schema", "with_schema"]
