"""Migration 11 on a store that already has a feed: every event keeps its
seq and fields, no seq is used twice after it, and each new row is a
send's event or an account's, never half of each (the CHECK)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from mailer.reasons import State
from mailer.store.models import Event, NewDistribution, NewSend
from mailer.store.postgres import sql as pg_sql
from mailer.store.postgres.store import PostgresStore
from mailer.store.sqlite import store as sqlite_module
from mailer.store.sqlite.store import SQLiteStore
from tests.backends import postgres_schema

DIST = NewDistribution("acme", "hr@acme.test", "HR", "Survey", None, "Hello")
PEOPLE = [NewSend(f"u{i}@dest.test") for i in range(3)]
COLUMNS = "SELECT seq, send_id, distribution_id, at, state, reason FROM events ORDER BY seq"
# a row that is neither a send's event nor an account's
HALF = "INSERT INTO events (at, state, reason) VALUES (1.0, 'queued', 'queued')"


def fields(event: Event) -> tuple[object, ...]:
    return (
        event.seq,
        event.send_id,
        event.distribution_id,
        event.at,
        event.state and event.state.value,
        event.reason and event.reason.value,
    )


async def test_sqlite_keeps_the_feed_and_its_counter_through_migration_11(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.sqlite3"
    before = sqlite_module.MIGRATIONS
    at = before.index(sqlite_module.sql.SCHEMA_V11)
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", before[:at])
    async with SQLiteStore(path) as store:
        _, ids = await store.enqueue(DIST, PEOPLE, hostname="h", now=5.0)
    with sqlite3.connect(path) as conn:
        old = conn.execute(COLUMNS).fetchall()
        # the newest event gone (as pruning or a crash test could leave it):
        # its seq must still never come again
        conn.execute("DELETE FROM events WHERE seq = 3")
    assert [row[1] for row in old] == ids
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", before)
    async with SQLiteStore(path) as store:
        assert [fields(e) for e in await store.events()] == old[:2]
        _, more = await store.enqueue(DIST, PEOPLE[:1], hostname="h", now=6.0)
        [new] = await store.events(after=2)
        assert (new.seq, new.send_id, new.state) == (4, more[0], State.QUEUED)
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        assert version == len(before)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(HALF)
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"events_send", "events_at", "webhook_deliveries_at"} <= indexes


async def test_postgres_keeps_the_feed_through_migration_11(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = pg_sql.MIGRATIONS
    at = before.index(pg_sql.SCHEMA_V11)
    async with postgres_schema() as url:
        monkeypatch.setattr(pg_sql, "MIGRATIONS", before[:at])
        async with PostgresStore(url) as store:
            _, ids = await store.enqueue(DIST, PEOPLE, hostname="h", now=5.0)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            old = await (await conn.execute(COLUMNS)).fetchall()
        assert [row[1] for row in old] == ids
        monkeypatch.setattr(pg_sql, "MIGRATIONS", before)
        async with PostgresStore(url) as store:
            assert [fields(e) for e in await store.events()] == old
            _, more = await store.enqueue(DIST, PEOPLE[:1], hostname="h", now=6.0)
            [new] = await store.events(after=3)
            assert (new.seq, new.send_id) == (4, more[0])
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.CheckViolation):
                await conn.execute(HALF)
