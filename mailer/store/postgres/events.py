"""Appending to the event feed of the PostgreSQL store.

The feed is read by ``seq``, so a page must never pass over a seq that is
still uncommitted: with concurrent writers seq 11 could commit before seq
10, and a reader that moved past 11 would never see 10. Every transaction
that writes events therefore takes one transaction-level advisory lock
right before its event inserts, as its last step: seqs are drawn and
committed in the same order (the lock is released only after the commit
is visible). The lock is held only for those inserts and the commit, never
while waiting for a row lock, so it cannot take part in a deadlock; it
serialises the tails of writing transactions, not their work.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import DictRow

from mailer.store.postgres import sql as q
from mailer.store.postgres.rows import columns

Conn = psycopg.AsyncConnection[DictRow]


async def lock(conn: Conn, key: int) -> None:
    """Take the event lock of the schema with advisory-lock ``key`` (the
    last step of the transaction before its event inserts)."""
    await conn.execute(q.ADVISORY_LOCK, (q.LOCK_EVENTS, key))


async def append(conn: Conn, key: int, rows: Sequence[tuple[object, ...]]) -> None:
    """Insert ``rows`` (from :func:`mailer.store.rows.event_row`) as the
    last step of a transaction."""
    if not rows:
        return
    await lock(conn, key)
    await conn.execute(q.INSERT_EVENTS, columns(rows))
