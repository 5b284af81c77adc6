"""Retention as the workers do it: finished sends older than
``retention.days`` go in batches; recent and unfinished ones stay."""

from __future__ import annotations

import time
from pathlib import Path

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store.models import NewSend, Outcome
from tests.conftest import SURVEY, make_config

DAY = 86400.0


async def test_a_worker_prunes_old_finished_sends_in_batches_and_keeps_the_rest(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port, retention={"days": 30, "batch": 2})
    now = time.time()
    async with App(config) as app:
        store = app.store
        old_time, recent_time = now - 40 * DAY, now - 10 * DAY
        _, old = await store.enqueue(
            SURVEY, [NewSend(f"old{i}@dest.test", "O", {}) for i in range(5)], hostname="h",
            now=old_time,
        )  # fmt: skip
        await store.claim("w", 5, lease_seconds=60, now=old_time)
        await store.complete(
            "w", [Outcome(i, State.DELIVERED, Reason.DELIVERED) for i in old], now=old_time
        )
        _, recent = await store.enqueue(
            SURVEY, [NewSend("recent@dest.test", "R", {})], hostname="h", now=recent_time
        )
        await store.claim("w", 1, lease_seconds=60, now=recent_time)
        await store.complete(
            "w", [Outcome(recent[0], State.DELIVERED, Reason.DELIVERED)], now=recent_time
        )
        _, waiting = await store.enqueue(
            SURVEY, [NewSend("held@dest.test", "H", {})], hostname="h", now=old_time
        )
        await store.hold("domain", "dest.test", now=old_time)

        engine = await app.engine()
        assert await engine.prune() == 5
        for send_id in old:
            try:
                await store.send(send_id)
            except NotFound:
                continue
            raise AssertionError(f"{send_id} was kept")
        assert (await store.send(recent[0])).state is State.DELIVERED
        # a held send is not finished, however old
        assert (await store.send(waiting[0])).state is State.HELD
        assert await engine.prune() == 0
