"""Webhook endpoints in the PostgreSQL store (:class:`mailer.store.webhooks.WebhookStore`).

Endpoints are claimed with ``FOR UPDATE SKIP LOCKED`` and leased, so with
several workers one endpoint is served by one of them at a time. The SQL is
shared with SQLite (mailer.store.webhooks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import DictRow

from mailer.errors import NotFound
from mailer.store import rows as typed
from mailer.store import webhooks as w
from mailer.store.models import Event, new_id
from mailer.store.postgres import events as pg_events
from mailer.store.postgres import sql as q

if TYPE_CHECKING:
    from mailer.store.postgres.store import PostgresStore

Conn = psycopg.AsyncConnection[DictRow]


async def _one(conn: Conn, query: str, params: Sequence[Any] | None = None) -> DictRow | None:
    cur = await conn.execute(query, params)
    row: DictRow | None = await cur.fetchone()
    return row


async def _endpoint(conn: Conn, endpoint_id: str, account: str | None) -> DictRow:
    row = await _one(conn, w.SELECT_ENDPOINT, (endpoint_id,))
    if row is None or (account is not None and row["account"] != account):
        raise NotFound("webhook", endpoint_id)
    return row


class PostgresWebhooks:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def create(self, endpoint: w.NewEndpoint, *, now: float) -> w.Endpoint:
        params = (
            new_id(),
            endpoint.account,
            endpoint.url,
            endpoint.description,
            w.types_json(endpoint.event_types),
            endpoint.secret,
            now,
            now,
            now,
        )
        async with self._store._tx() as conn:
            row = await _one(conn, w.INSERT_ENDPOINT, params)
        assert row is not None  # INSERT … RETURNING
        return w.endpoint(row)

    async def get(self, endpoint_id: str, *, account: str | None = None) -> w.Endpoint:
        async with self._store._conn() as conn:
            return w.endpoint(await _endpoint(conn, endpoint_id, account))

    async def endpoints(self, *, account: str | None = None) -> list[w.Endpoint]:
        if account is None:
            rows = await self._store._all(w.SELECT_ENDPOINTS)
        else:
            rows = await self._store._all(w.SELECT_ACCOUNT_ENDPOINTS, (account,))
        return [w.endpoint(r) for r in rows]

    async def update(
        self, endpoint_id: str, patch: w.EndpointPatch, *, account: str | None, now: float
    ) -> w.Endpoint:
        types = None if patch.event_types is None else w.types_json(patch.event_types)
        enabled = None if patch.enabled is None else int(patch.enabled)
        async with self._store._tx() as conn:
            before = await _endpoint(conn, endpoint_id, account)
            params = (patch.url, types, patch.description, enabled, enabled, now, endpoint_id)
            row = await _one(conn, w.UPDATE_ENDPOINT, params)
            if patch.enabled and not before["enabled"]:
                await conn.execute(w.REVIVE_ENDPOINT, (now, now, endpoint_id))
                row = await _one(conn, w.SELECT_ENDPOINT, (endpoint_id,))
        assert row is not None
        return w.endpoint(row)

    async def delete(self, endpoint_id: str, *, account: str | None = None) -> None:
        async with self._store._tx() as conn:
            await _endpoint(conn, endpoint_id, account)
            for query in (w.DELETE_DELIVERIES, w.DELETE_BATCH, w.DELETE_ENDPOINT):
                await conn.execute(query, (endpoint_id,))

    async def rotate(
        self,
        endpoint_id: str,
        secret: str,
        *,
        account: str | None,
        previous_until: float,
        now: float,
    ) -> w.Endpoint:
        async with self._store._tx() as conn:
            await _endpoint(conn, endpoint_id, account)
            row = await _one(conn, w.ROTATE_SECRET, (secret, previous_until, now, endpoint_id))
        assert row is not None
        return w.endpoint(row)

    async def rewind(
        self, endpoint_id: str, cursor: int, *, account: str | None, now: float
    ) -> w.Endpoint:
        async with self._store._tx() as conn:
            await _endpoint(conn, endpoint_id, account)
            await conn.execute(w.DELETE_BATCH, (endpoint_id,))
            row = await _one(conn, w.REWIND, (cursor, now, now, endpoint_id))
        assert row is not None
        return w.endpoint(row)

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[w.Endpoint]:
        params = (owner, now + lease_seconds, now, now, limit)
        async with self._store._tx() as conn:
            cur = await conn.execute(q.CLAIM_WEBHOOK_ENDPOINTS, params)
            rows = await cur.fetchall()
        return sorted((w.endpoint(r) for r in rows), key=lambda e: e.next_attempt_at)

    async def form_batch(
        self, owner: str, endpoint_id: str, *, limit: int, build: w.BuildBatch, now: float
    ) -> w.Batch | None:
        async with self._store._tx() as conn:
            row = await _one(conn, w.LEASED_ENDPOINT + " FOR UPDATE", (endpoint_id, owner, now))
            if row is None:
                return None
            fixed = await _one(conn, w.SELECT_BATCH, (endpoint_id,))
            if fixed is not None:
                return w.batch(fixed)
            endpoint = w.endpoint(row)
            states, state_params = w.states_clause(endpoint.event_types)
            query = w.PENDING_EVENTS.format(states=states)
            cursor = endpoint.cursor
            events: list[Event] = []
            for _ in range(w.WINDOWS):
                top = await _one(conn, w.WINDOW_END, (cursor, cursor, w.WINDOW))
                high = int(top["high"]) if top is not None else cursor
                if high == cursor:
                    break
                params = (cursor, high, w.WINDOW, *state_params, endpoint.account, limit)
                cur = await conn.execute(query, params)
                events = [typed.event(r) for r in await cur.fetchall()]
                if events:
                    break
                cursor = high
            if cursor > endpoint.cursor:
                await conn.execute(w.SKIP_TO, (cursor, now, endpoint_id))
            if not events:
                return None
            batch_id, body = build(events)
            batch = w.Batch(
                endpoint_id, batch_id, events[0].seq, events[-1].seq, len(events), body, now
            )
            await conn.execute(
                w.INSERT_BATCH,
                (endpoint_id, batch.id, batch.first_seq, batch.last_seq, batch.events, body, now),
            )
            return batch

    async def record(
        self, owner: str, result: w.Result, *, lease_seconds: float, now: float
    ) -> bool:
        b = result.batch
        async with self._store._tx() as conn:
            held = await _one(conn, w.LEASED_ENDPOINT + " FOR UPDATE", (b.endpoint_id, owner, now))
            fixed = await _one(conn, w.SELECT_BATCH, (b.endpoint_id,))
            # a rewind while the batch was out has dropped it: log nothing
            if held is None or fixed is None or fixed["id"] != b.id:
                return False
            await conn.execute(w.INSERT_DELIVERY, w.delivery_params(result, now))
            until = now + lease_seconds
            if result.action == "advance":
                await conn.execute(w.DELETE_BATCH, (b.endpoint_id,))
                await conn.execute(w.ADVANCE, (b.last_seq, until, now, b.endpoint_id))
            elif result.action == "retry":
                params = (result.next_attempt_at, now, until, now, b.endpoint_id)
                await conn.execute(w.RETRY, params)
            else:
                await conn.execute(w.DISABLE, (result.disabled_reason, now, b.endpoint_id))
                # in the account's feed, for its other endpoints and /v1/events;
                # under the feed's lock, as the transaction's last step
                event = w.disabled_event(w.endpoint(held), result.disabled_reason, now)
                await pg_events.lock(conn, self._store._key)
                await conn.execute(w.INSERT_ACCOUNT_EVENT, event)
            return True

    async def release(self, owner: str, endpoint_id: str, *, due: float) -> None:
        async with self._store._conn() as conn:
            await conn.execute(w.RELEASE, (due, endpoint_id, owner))

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        account: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[w.DeliveryRecord]:
        async with self._store._conn() as conn:
            await _endpoint(conn, endpoint_id, account)
            params = (endpoint_id, before if before is not None else 2**62, limit)
            cur = await conn.execute(w.SELECT_DELIVERIES, params)
            return [w.delivery(r) for r in await cur.fetchall()]
