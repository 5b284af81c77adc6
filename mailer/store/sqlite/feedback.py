"""The SQLite store's returned messages (mailer.feedback): work inside one
transaction over a connection, no I/O of its own."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from mailer.errors import NotFound
from mailer.store import rows as typed
from mailer.store.models import FeedbackResult, Inbound, NewInbound, new_ids
from mailer.store.sqlite import sql


def put(conn: sqlite3.Connection, messages: Sequence[NewInbound], now: float) -> list[str]:
    ids = new_ids(len(messages))
    for inbound_id, message in zip(ids, messages, strict=True):
        _put(conn, inbound_id, message, now)
    return ids


def _put(conn: sqlite3.Connection, inbound_id: str, message: NewInbound, now: float) -> None:
    conn.execute(
        sql.INSERT_INBOUND,
        (
            inbound_id,
            now,
            message.mail_from,
            json.dumps(list(message.recipients)),
            message.raw,
            len(message.raw),
            int(message.tls),
            message.peer,
        ),
    )


def inbound(row: typed.Row) -> Inbound:
    return typed.inbound(row, recipients=json.loads(row["recipients"]))


def finish(conn: sqlite3.Connection, inbound_id: str, result: FeedbackResult, now: float) -> bool:
    """Apply ``result`` and mark the message processed, unless it already
    was (then nothing changes and False is returned). Raises NotFound."""
    row = conn.execute("SELECT processed_at FROM inbound WHERE id = ?", (inbound_id,)).fetchone()
    if row is None:
        raise NotFound("inbound message", inbound_id)
    if row["processed_at"] is not None:
        return False
    batch = typed.FeedbackRows()
    for effect in result.effects:
        send = conn.execute(sql.SELECT_SEND_STATE, (effect.send_id,)).fetchone()
        if send is not None:
            batch.add(send, effect, now)
    conn.executemany(sql.BOUNCE_DELIVERED, batch.bounce)
    conn.executemany(sql.UPSERT_SUPPRESSION, batch.suppress)
    conn.executemany(sql.INSERT_EVENT, batch.events)
    conn.execute(
        sql.FINISH_INBOUND,
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
    return True
