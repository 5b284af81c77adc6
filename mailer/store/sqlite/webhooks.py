"""Webhook endpoints in the SQLite store (:class:`mailer.store.webhooks.WebhookStore`).

Every operation is one transaction on the store's thread, like the rest of
the SQLite store; the SQL is shared with PostgreSQL (mailer.store.webhooks).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from mailer.errors import NotFound
from mailer.store import rows as typed
from mailer.store import webhooks as w
from mailer.store.models import Event, new_id
from mailer.store.sqlite import sql

if TYPE_CHECKING:
    from mailer.store.sqlite.store import SQLiteStore

q = w.qmark


def _endpoint(conn: sqlite3.Connection, endpoint_id: str, account: str | None) -> sqlite3.Row:
    row = conn.execute(q(w.SELECT_ENDPOINT), (endpoint_id,)).fetchone()
    if row is None or (account is not None and row["account"] != account):
        raise NotFound("webhook", endpoint_id)
    return row  # type: ignore[no-any-return]


class SQLiteWebhooks:
    def __init__(self, store: SQLiteStore) -> None:
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

        def work(conn: sqlite3.Connection) -> w.Endpoint:
            return w.endpoint(conn.execute(q(w.INSERT_ENDPOINT), params).fetchone())

        return await self._store._run(self._store._tx, work)

    async def get(self, endpoint_id: str, *, account: str | None = None) -> w.Endpoint:
        return w.endpoint(await self._store._run(_endpoint, self._store.conn, endpoint_id, account))

    async def endpoints(self, *, account: str | None = None) -> list[w.Endpoint]:
        conn = self._store.conn
        if account is None:
            found = await self._store._run(lambda: conn.execute(q(w.SELECT_ENDPOINTS)).fetchall())
        else:
            query = q(w.SELECT_ACCOUNT_ENDPOINTS)
            found = await self._store._run(lambda: conn.execute(query, (account,)).fetchall())
        return [w.endpoint(row) for row in found]

    async def update(
        self, endpoint_id: str, patch: w.EndpointPatch, *, account: str | None, now: float
    ) -> w.Endpoint:
        types = None if patch.event_types is None else w.types_json(patch.event_types)
        enabled = None if patch.enabled is None else int(patch.enabled)

        def work(conn: sqlite3.Connection) -> w.Endpoint:
            before = _endpoint(conn, endpoint_id, account)
            params = (patch.url, types, patch.description, enabled, enabled, now, endpoint_id)
            row = conn.execute(q(w.UPDATE_ENDPOINT), params).fetchone()
            if patch.enabled and not before["enabled"]:
                conn.execute(q(w.REVIVE_ENDPOINT), (now, now, endpoint_id))
                row = conn.execute(q(w.SELECT_ENDPOINT), (endpoint_id,)).fetchone()
            return w.endpoint(row)

        return await self._store._run(self._store._tx, work)

    async def delete(self, endpoint_id: str, *, account: str | None = None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            _endpoint(conn, endpoint_id, account)
            for query in (w.DELETE_DELIVERIES, w.DELETE_BATCH, w.DELETE_ENDPOINT):
                conn.execute(q(query), (endpoint_id,))

        await self._store._run(self._store._tx, work)

    async def rotate(
        self,
        endpoint_id: str,
        secret: str,
        *,
        account: str | None,
        previous_until: float,
        now: float,
    ) -> w.Endpoint:
        def work(conn: sqlite3.Connection) -> w.Endpoint:
            _endpoint(conn, endpoint_id, account)
            params = (secret, previous_until, now, endpoint_id)
            return w.endpoint(conn.execute(q(w.ROTATE_SECRET), params).fetchone())

        return await self._store._run(self._store._tx, work)

    async def rewind(
        self, endpoint_id: str, cursor: int, *, account: str | None, now: float
    ) -> w.Endpoint:
        def work(conn: sqlite3.Connection) -> w.Endpoint:
            _endpoint(conn, endpoint_id, account)
            conn.execute(q(w.DELETE_BATCH), (endpoint_id,))
            params = (cursor, now, now, endpoint_id)
            return w.endpoint(conn.execute(q(w.REWIND), params).fetchone())

        return await self._store._run(self._store._tx, work)

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[w.Endpoint]:
        params = (owner, now + lease_seconds, now, now, limit)

        def work(conn: sqlite3.Connection) -> list[w.Endpoint]:
            found = conn.execute(sql.CLAIM_WEBHOOK_ENDPOINTS, params).fetchall()
            return sorted((w.endpoint(r) for r in found), key=lambda e: e.next_attempt_at)

        return await self._store._run(self._store._tx, work)

    async def form_batch(
        self, owner: str, endpoint_id: str, *, limit: int, build: w.BuildBatch, now: float
    ) -> w.Batch | None:
        def work(conn: sqlite3.Connection) -> w.Batch | None:
            row = conn.execute(q(w.LEASED_ENDPOINT), (endpoint_id, owner, now)).fetchone()
            if row is None:
                return None
            fixed = conn.execute(q(w.SELECT_BATCH), (endpoint_id,)).fetchone()
            if fixed is not None:
                return w.batch(fixed)
            endpoint = w.endpoint(row)
            states, state_params = w.states_clause(endpoint.event_types)
            query = q(w.PENDING_EVENTS.format(states=states))
            cursor = endpoint.cursor
            events: list[Event] = []
            for _ in range(w.WINDOWS):
                ends = (cursor, cursor, w.WINDOW)
                high = conn.execute(q(w.WINDOW_END), ends).fetchone()["high"]
                if high == cursor:
                    break
                params = (cursor, high, w.WINDOW, *state_params, endpoint.account, limit)
                events = [typed.event(r) for r in conn.execute(query, params)]
                if events:
                    break
                cursor = high
            if cursor > endpoint.cursor:
                conn.execute(q(w.SKIP_TO), (cursor, now, endpoint_id))
            if not events:
                return None
            batch_id, body = build(events)
            batch = w.Batch(
                endpoint_id, batch_id, events[0].seq, events[-1].seq, len(events), body, now
            )
            conn.execute(
                q(w.INSERT_BATCH),
                (
                    endpoint_id,
                    batch.id,
                    batch.first_seq,
                    batch.last_seq,
                    batch.events,
                    batch.body,
                    now,
                ),
            )
            return batch

        return await self._store._run(self._store._tx, work)

    async def record(
        self, owner: str, result: w.Result, *, lease_seconds: float, now: float
    ) -> bool:
        b = result.batch

        def work(conn: sqlite3.Connection) -> bool:
            held = conn.execute(q(w.LEASED_ENDPOINT), (b.endpoint_id, owner, now)).fetchone()
            fixed = conn.execute(q(w.SELECT_BATCH), (b.endpoint_id,)).fetchone()
            # a rewind while the batch was out has dropped it: log nothing
            if held is None or fixed is None or fixed["id"] != b.id:
                return False
            conn.execute(q(w.INSERT_DELIVERY), w.delivery_params(result, now))
            until = now + lease_seconds
            if result.action == "advance":
                conn.execute(q(w.DELETE_BATCH), (b.endpoint_id,))
                conn.execute(q(w.ADVANCE), (b.last_seq, until, now, b.endpoint_id))
            elif result.action == "retry":
                params = (result.next_attempt_at, now, until, now, b.endpoint_id)
                conn.execute(q(w.RETRY), params)
            else:
                conn.execute(q(w.DISABLE), (result.disabled_reason, now, b.endpoint_id))
                # in the account's feed, for its other endpoints and /v1/events
                event = w.disabled_event(w.endpoint(held), result.disabled_reason, now)
                conn.execute(q(w.INSERT_ACCOUNT_EVENT), event)
            return True

        return await self._store._run(self._store._tx, work)

    async def release(self, owner: str, endpoint_id: str, *, due: float) -> None:
        await self._store._run(
            self._store._tx,
            lambda conn: conn.execute(q(w.RELEASE), (due, endpoint_id, owner)),
        )

    async def deliveries(
        self,
        endpoint_id: str,
        *,
        account: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[w.DeliveryRecord]:
        def work(conn: sqlite3.Connection) -> list[w.DeliveryRecord]:
            _endpoint(conn, endpoint_id, account)
            params = (endpoint_id, before if before is not None else 2**62, limit)
            return [w.delivery(r) for r in conn.execute(q(w.SELECT_DELIVERIES), params)]

        return await self._store._run(self._store._tx, work)
