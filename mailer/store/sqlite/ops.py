"""The SQLite store's work inside a transaction: outcomes, holds and the
event rows they write (pure over a connection; no I/O of their own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from mailer.reasons import Reason, State
from mailer.store.models import Outcome
from mailer.store.rows import OutcomeRows, Row, event_row
from mailer.store.sqlite import sql

T = TypeVar("T")


def suppressions_of(
    conn: sqlite3.Connection, leased: list[sqlite3.Row]
) -> dict[tuple[str, str], str]:
    """The suppression reasons of the leased sends' addresses by (account,
    address), global entries under account '': one query per 500 sends."""
    keys = sorted({row["rcpt_key"] for row in leased})
    found: dict[tuple[str, str], str] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        query = f"SELECT account, address, reason FROM suppressions WHERE address IN ({marks})"
        for entry in conn.execute(query, chunk):
            found[(entry["account"], entry["address"])] = entry["reason"]
    return found


def record_outcomes(
    conn: sqlite3.Connection, recorded: Sequence[tuple[Row, Outcome]], now: float
) -> None:
    """Each (leased send, outcome): its attempt, the send's new state and
    the event saying so, and where asked the suppression. One executemany
    per table for the whole batch: a statement per row gave the GIL back
    to the event loop and waited for it again four times an outcome."""
    batch = OutcomeRows()
    for row, outcome in recorded:
        batch.add(row, outcome, now)
    conn.executemany(sql.INSERT_ATTEMPT, batch.attempts)
    conn.executemany(sql.FINISH_SEND, batch.finish)
    conn.executemany(sql.INSERT_EVENT, batch.events)
    conn.executemany(sql.UPSERT_SUPPRESSION, batch.suppress)


def snapshot(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Reads in one read transaction: a consistent view that takes no write
    lock and writes nothing."""
    conn.execute("BEGIN")
    try:
        return fn(conn)
    finally:
        conn.execute("COMMIT")


def hold_new_sends(conn: sqlite3.Connection, distribution_id: str, now: float) -> None:
    rows = conn.execute(sql.HOLD_NEW_SENDS, (distribution_id,)).fetchall()
    conn.executemany(
        sql.INSERT_EVENT,
        [
            event_row(
                r["id"], distribution_id, now, State.HELD, Reason.HELD, detail="domain is held"
            )
            for r in rows
        ],
    )
    # the circuit breaker paused the account (mailer.feedback.breaker)
    paused = conn.execute(sql.HOLD_NEW_SENDS_PAUSED, (distribution_id,)).fetchall()
    conn.executemany(
        sql.INSERT_EVENT,
        [
            event_row(r["id"], distribution_id, now, State.HELD, Reason.ACCOUNT_PAUSED)
            for r in paused
        ],
    )


def held_values(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    """Every hold as (kind, value): a handful of rows, read once per batch."""
    return {(row["kind"], row["value"]) for row in conn.execute(sql.SELECT_HOLDS)}


def hold_if_held(conn: sqlite3.Connection, send_ids: Sequence[str], now: float) -> int:
    """Hold those of ``send_ids`` that are queued although a hold covers
    them (given back by a worker, replayed); returns how many."""
    if not send_ids or conn.execute(sql.ANY_HOLD).fetchone() is None:
        return 0
    events = [
        event_row(r["id"], r["distribution_id"], now, State.HELD, Reason.HELD)
        for send_id in send_ids
        for r in conn.execute(sql.HOLD_IF_HELD, (now, send_id)).fetchall()
    ]
    conn.executemany(sql.INSERT_EVENT, events)
    return len(events)
