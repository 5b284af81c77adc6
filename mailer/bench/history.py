"""``mailer bench --history N``: a store that has already delivered N
messages, to measure throughput against a long history in the same run as
against an empty store.

The history is written in a few set-based statements (a recursive CTE in
SQLite, ``generate_series`` in PostgreSQL) rather than through the enqueue
path: a million rows through the API would measure the API, not the engine
over a full store. Each history send is delivered, last changed an hour ago
(inside any retention period, so the workers keep it), with one attempt and
its queued and delivered events, spread over 100 recipient domains none of
the bench's messages go to.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time

from mailer.errors import ConfigError, StoreError
from mailer.store import open_store
from mailer.store.models import NewDistribution, NewSend

__all__ = ["fill_history"]

_SQLITE = (
    """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, variables,
    message_id, state, reason, due_at, attempts, created_at, updated_at, last_code)
SELECT printf('hist%024d', i), :dist, 'bench', printf('h%d@history%d.test', i, i % 100),
    printf('h%d@history%d.test', i, i % 100), printf('history%d.test', i % 100), '', '{}',
    printf('<hist%d@bench.test>', i), 'delivered', 'delivered', :at, 1, :at, :at, 250
FROM n
""",
    """
INSERT INTO attempts (send_id, number, started_at, finished_at, reason, code)
SELECT id, 1, :at, :at, 'delivered', 250 FROM sends WHERE id LIKE 'hist%'
""",
    """
INSERT INTO events (send_id, distribution_id, at, state, reason)
SELECT id, distribution_id, :at, 'queued', 'queued' FROM sends WHERE id LIKE 'hist%'
""",
    """
INSERT INTO events (send_id, distribution_id, at, state, reason, code)
SELECT id, distribution_id, :at, 'delivered', 'delivered', 250 FROM sends WHERE id LIKE 'hist%'
""",
)

_POSTGRES = (
    """
INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, variables,
    message_id, state, reason, due_at, attempts, created_at, updated_at, last_code)
SELECT 'hist' || lpad(i::text, 24, '0'), %(dist)s, 'bench',
    'h' || i || '@history' || i %% 100 || '.test', 'h' || i || '@history' || i %% 100 || '.test',
    'history' || i %% 100 || '.test', '', '{}'::jsonb, '<hist' || i || '@bench.test>',
    'delivered', 'delivered', %(at)s, 1, %(at)s, %(at)s, 250
FROM generate_series(1, %(count)s) AS i
""",
    """
INSERT INTO attempts (send_id, number, started_at, finished_at, reason, code)
SELECT id, 1, %(at)s, %(at)s, 'delivered', 250 FROM sends WHERE id LIKE 'hist%%'
""",
    """
INSERT INTO events (send_id, distribution_id, at, state, reason)
SELECT id, distribution_id, %(at)s, 'queued', 'queued' FROM sends WHERE id LIKE 'hist%%'
ORDER BY id
""",
    """
INSERT INTO events (send_id, distribution_id, at, state, reason, code)
SELECT id, distribution_id, %(at)s, 'delivered', 'delivered', 250 FROM sends
WHERE id LIKE 'hist%%' ORDER BY id
""",
)


async def fill_history(database: str, count: int) -> None:
    """Write ``count`` delivered sends into the store at ``database``
    (migrated first). Raises StoreError, ConfigError."""
    at = time.time() - 3600
    store = open_store(database)
    async with store:
        distribution = NewDistribution(
            account="bench",
            sender_address="history@bench.test",
            sender_name="History",
            subject="history",
            html="<p>history</p>",
            text=None,
        )
        # a real distribution (and one real send) through the store, so the
        # history refers to rows the store made itself
        dist, _ = await store.enqueue(
            distribution, [NewSend("seed@history0.test", "Seed", {})], hostname="bench.test", now=at
        )
        # finished too: the engines must find nothing of the history due
        await store.cancel(dist, now=at)
    params = {"dist": dist, "at": at, "count": count}
    if database.startswith(("postgres://", "postgresql://")):
        await _postgres(database, params)
    else:
        _sqlite(database, params)


def _sqlite(path: str, params: dict[str, object]) -> None:
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            with conn:
                for statement in _SQLITE:
                    conn.execute(statement, params)
            # A store that has lived with its history has long checkpointed
            # it into the database file; a fresh WAL of a million rows would
            # make every read of the measured run look through it.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise StoreError(f"bench history: {exc}") from exc


async def _postgres(url: str, params: dict[str, object]) -> None:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError("database", f"PostgreSQL needs the postgres extra: {exc}") from exc
    try:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for statement in _POSTGRES:
                await conn.execute(statement, params)
    except psycopg.Error as exc:
        raise StoreError(f"bench history: {exc}") from exc
