"""The PostgreSQL store's returned messages (mailer.feedback): work inside
one transaction; events are appended last, as everywhere in this store."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store import rows as typed
from mailer.store.models import (
    AccountOutcome,
    AccountPause,
    FeedbackResult,
    Inbound,
    NewInbound,
    new_ids,
)
from mailer.store.postgres import events as pg_events
from mailer.store.postgres import sql as q
from mailer.store.rules import CUSTOMER_ENVELOPE_PREFIX

Conn = psycopg.AsyncConnection[DictRow]


async def put(conn: Conn, messages: Sequence[NewInbound], now: float) -> list[str]:
    ids = new_ids(len(messages))
    for inbound_id, message in zip(ids, messages, strict=True):
        await _put(conn, inbound_id, message, now)
    return ids


async def _put(conn: Conn, inbound_id: str, message: NewInbound, now: float) -> None:
    await conn.execute(
        q.INSERT_INBOUND,
        (
            inbound_id,
            now,
            message.mail_from,
            Jsonb(list(message.recipients)),
            message.raw,
            len(message.raw),
            message.tls,
            message.peer,
        ),
    )


def inbound(row: DictRow) -> Inbound:
    return typed.inbound(row, recipients=row["recipients"])


async def finish(conn: Conn, key: int, inbound_id: str, result: FeedbackResult, now: float) -> bool:
    """Apply ``result`` and mark the message processed, unless it already
    was (then nothing changes and False is returned). Raises NotFound."""
    cur = await conn.execute(q.LOCK_INBOUND, (inbound_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound("inbound message", inbound_id)
    if row["processed_at"] is not None:
        return False
    batch = typed.FeedbackRows()
    for effect in result.effects:
        cur = await conn.execute(q.SELECT_SEND_STATE, (effect.send_id,))
        send = await cur.fetchone()
        if send is not None:
            batch.add(send, effect, now)
    async with conn.cursor() as many:
        if batch.bounce:
            await many.executemany(q.BOUNCE_DELIVERED, batch.bounce)
        if batch.suppress:
            await many.executemany(q.UPSERT_SUPPRESSION, batch.suppress)
    await conn.execute(
        q.FINISH_INBOUND,
        (
            now,
            result.kind,
            result.layout,
            result.send_id,
            result.matched_by,
            result.problem,
            result.report,
            inbound_id,
        ),
    )
    await pg_events.append(conn, key, batch.events)
    return True


# the circuit breaker -------------------------------------------------------


async def account_window(
    conn: Conn, account: str, since: float, limit: int
) -> list[AccountOutcome]:
    cur = await conn.execute(
        q.ACCOUNT_WINDOW, (account, since, CUSTOMER_ENVELOPE_PREFIX + "%", limit)
    )
    return [
        AccountOutcome(r["at"], bool(r["hard_bounce"]), bool(r["complaint"]))
        for r in await cur.fetchall()
    ]


async def pause(conn: Conn, key: int, account: str, now: float, detail: str | None) -> int:
    await conn.execute(q.UPSERT_PAUSE, (account, now, detail))
    cur = await conn.execute(q.PAUSE_SENDS, (now, account))
    rows = await cur.fetchall()
    await pg_events.append(
        conn,
        key,
        [
            typed.event_row(
                r["id"], r["distribution_id"], now, State.HELD, Reason.ACCOUNT_PAUSED, detail=detail
            )
            for r in rows
        ],
    )
    return len(rows)


async def release(conn: Conn, key: int, account: str, now: float) -> int:
    """Raises NotFound when the account is not paused."""
    cur = await conn.execute(q.UNPAUSE, (now, account))
    if cur.rowcount == 0:
        raise NotFound("paused account", account)
    cur = await conn.execute(q.RELEASE_PAUSED_SENDS, (now, now, account))
    rows = await cur.fetchall()
    await pg_events.append(
        conn,
        key,
        [
            typed.event_row(r["id"], r["distribution_id"], now, State.QUEUED, Reason.RELEASED)
            for r in rows
        ],
    )
    return len(rows)


def account_pause(row: DictRow) -> AccountPause:
    return AccountPause(row["account"], row["paused_at"], row["released_at"], row["detail"])
