"""The PostgreSQL store's returned messages (mailer.feedback): work inside
one transaction; events are appended last, as everywhere in this store."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from mailer.errors import NotFound
from mailer.store import rows as typed
from mailer.store.models import FeedbackResult, Inbound, NewInbound, new_ids
from mailer.store.postgres import events as pg_events
from mailer.store.postgres import sql as q

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
