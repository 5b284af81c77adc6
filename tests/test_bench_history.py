"""``mailer bench --history``: the history written straight into each
store backend is what the store itself would hold after delivering."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.bench.history import fill_history
from mailer.reasons import State
from mailer.store import open_store
from tests.backends import postgres_schema


@contextlib.asynccontextmanager
async def database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield str(tmp_path / "history.sqlite3")
        return
    async with postgres_schema() as url:
        yield url


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_history_is_finished_sends_with_attempts_and_events_and_nothing_due(
    kind: str, tmp_path: Path
) -> None:
    async with database(kind, tmp_path) as url:
        await fill_history(url, 1000)
        async with open_store(url) as store:
            # the seed send that made the distribution is cancelled
            assert await store.counts() == {State.DELIVERED: 1000, State.CANCELLED: 1}
            assert await store.queue_depth() == {}
            assert await store.claim("w", 10, lease_seconds=60, now=4e9) == []
            events = await store.events(after=0, limit=5000)
            history = [e for e in events if e.send_id.startswith("hist")]
            assert [e.state for e in history].count(State.DELIVERED) == 1000
            assert len(history) == 2000
            [attempt] = await store.attempts(history[0].send_id)
            assert attempt.code == 250
            # an hour old: inside any retention period
            assert (await store.prune(before=0.0, limit=100)).sends == 0
