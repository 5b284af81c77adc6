"""The SQLite store's returned messages (mailer.feedback): work inside one
transaction over a connection, no I/O of its own."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

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
from mailer.store.rules import CUSTOMER_ENVELOPE_PREFIX
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


# the circuit breaker -------------------------------------------------------


def account_window(
    conn: sqlite3.Connection, account: str, since: float, limit: int
) -> list[AccountOutcome]:
    rows = conn.execute(
        sql.ACCOUNT_WINDOW, (account, since, CUSTOMER_ENVELOPE_PREFIX + "%", limit)
    ).fetchall()
    return [AccountOutcome(r["at"], bool(r["hard_bounce"]), bool(r["complaint"])) for r in rows]


def pause(conn: sqlite3.Connection, account: str, now: float, detail: str | None) -> int:
    conn.execute(sql.UPSERT_PAUSE, (account, now, detail))
    rows = conn.execute(sql.PAUSE_SENDS, (now, account)).fetchall()
    events = [
        typed.event_row(
            r["id"], r["distribution_id"], now, State.HELD, Reason.ACCOUNT_PAUSED, detail=detail
        )
        for r in rows
    ]
    conn.executemany(sql.INSERT_EVENT, events)
    return len(rows)


def release(conn: sqlite3.Connection, account: str, now: float) -> int:
    """Raises NotFound when the account is not paused."""
    if conn.execute(sql.UNPAUSE, (now, account)).rowcount == 0:
        raise NotFound("paused account", account)
    rows = conn.execute(sql.RELEASE_PAUSED_SENDS, (now, now, account)).fetchall()
    events = [
        typed.event_row(r["id"], r["distribution_id"], now, State.QUEUED, Reason.RELEASED)
        for r in rows
    ]
    conn.executemany(sql.INSERT_EVENT, events)
    return len(rows)


def account_pause(row: typed.Row) -> AccountPause:
    return AccountPause(row["account"], row["paused_at"], row["released_at"], row["detail"])
