"""Retention as the workers do it: finished sends older than
``retention.days`` go in batches; recent and unfinished ones stay."""

from __future__ import annotations

import time
from pathlib import Path

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store.models import Idempotency, NewSend, Outcome
from mailer.store.webhooks import NewEndpoint, Result
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


async def test_a_worker_prunes_the_webhook_log_and_expired_idempotency_keys_in_batches(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port, retention={"days": 30, "batch": 2})
    now = time.time()
    ttl = config.api.idempotency_ttl
    async with App(config) as app:
        store = app.store
        for i, at in enumerate((now - ttl - 60, now - ttl - 30, now - ttl - 10, now - 60)):
            key = Idempotency(f"key-{i}", "hash")
            await store.enqueue(
                SURVEY, [NewSend(f"u{i}@dest.test", "U", {})], hostname="h", now=at, idempotency=key
            )
        endpoint = await store.webhooks.create(
            NewEndpoint("acme", "https://h.test/", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            now=now - 50 * DAY,
        )
        await store.webhooks.rewind(endpoint.id, 0, account=None, now=now - 50 * DAY)
        await store.webhooks.claim("w", 1, lease_seconds=1e9, now=now - 50 * DAY)
        batch = await store.webhooks.form_batch(
            "w", endpoint.id, limit=10, build=lambda e: ("msg_x", b"[]"), now=now - 50 * DAY
        )
        assert batch is not None
        log_times = [now - 45 * DAY, now - 40 * DAY, now - 35 * DAY, now - 20 * DAY, now - DAY]
        for at in log_times:
            failed = Result(batch, "retry", 500, 0.1, "", error="HTTP 500", next_attempt_at=at)
            assert await store.webhooks.record("w", failed, lease_seconds=1e9, now=at)

        engine = await app.engine()
        await engine.prune()
        # three log entries past 30 days went, in two batches of two
        kept = [d.at for d in await store.webhooks.deliveries(endpoint.id)]
        assert kept == [now - DAY, now - 20 * DAY]
        # three keys past the TTL went; the live one answers as before
        for i in range(3):
            assert await store.idempotent("acme", f"key-{i}") is None
        assert await store.idempotent("acme", "key-3") is not None
