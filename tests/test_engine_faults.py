"""The worker's loops under injected faults: a store that fails lease
renewals or outcome writes for a while, a delivery step and a connector that
raise what nobody expected. Real DNS server, real aiosmtpd sinks over
STARTTLS, real SQLite."""

from __future__ import annotations

import asyncio
import collections
import email.policy
import time
from collections.abc import Sequence
from email import message_from_bytes
from pathlib import Path
from typing import Any

from mailer.app import App
from mailer.delivery.connector import Connector
from mailer.delivery.engine import Engine
from mailer.dev.dnsserver import DNSServer
from mailer.errors import StoreError
from mailer.prepare import Prepared, Preparer
from mailer.reasons import Reason, State
from mailer.sink.runner import Sink
from mailer.store.base import Store
from mailer.store.models import Outcome, SendFilter
from tests.conftest import SURVEY, make_config
from tests.kit import numbered


class FlakyStore:
    """The real store, except that ``renew`` (or ``complete``) fails with
    ``error`` until ``until`` (monotonic time) or for its first ``times``
    calls."""

    def __init__(
        self,
        store: Store,
        *,
        renew_until: float = 0.0,
        complete_times: int = 0,
        claim_times: int = 0,
        error: Exception | None = None,
    ) -> None:
        self._store = store
        self._claim_times = claim_times
        self._renew_until = renew_until
        self._complete_times = complete_times
        self._error = error or StoreError("injected: database is locked")
        self.renew_failures = 0
        self.renewals = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def renew(
        self, owner: str, send_ids: Sequence[str], *, lease_seconds: float, now: float
    ) -> int:
        if time.monotonic() < self._renew_until:
            self.renew_failures += 1
            raise self._error
        self.renewals += 1
        return await self._store.renew(owner, send_ids, lease_seconds=lease_seconds, now=now)

    async def claim(self, owner: str, limit: int, *, lease_seconds: float, now: float) -> Any:
        if self._claim_times > 0:
            self._claim_times -= 1
            raise self._error
        return await self._store.claim(owner, limit, lease_seconds=lease_seconds, now=now)

    async def complete(
        self, owner: str, outcomes: Sequence[Outcome], *, now: float, tls_counts: Any = ()
    ) -> None:
        if self._complete_times > 0:
            self._complete_times -= 1
            raise RuntimeError("injected: outcome write blew up")
        await self._store.complete(owner, outcomes, now=now, tls_counts=tls_counts)


def message_ids(*sinks: Sink) -> collections.Counter[str]:
    return collections.Counter(
        str(message_from_bytes(m.data, policy=email.policy.default)["Message-ID"])
        for sink in sinks
        for m in sink.messages
    )


async def engine_on(app: App, store: Any, owner: str, preparer: Any = None) -> Engine:
    return Engine(
        app.config,
        store,
        app.connector(),
        preparer or await app.preparer(),
        owner=owner,
        metrics=app.metrics,
    )


async def test_failed_renewals_are_retried_so_no_other_worker_takes_waiting_sends(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    # 12 sends at 6/s over one connection wait ~2 s in the destination
    # queue, longer than the 1 s lease: only renewals keep them ours
    mx1 = make_sink("127.0.0.2")
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        worker={"lease_seconds": 1.0, "poll_interval": 0.1, "idle_timeout": 0.5},
        limits={"default": {"connections": 1, "rate": 6}},
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(12))
        flaky = FlakyStore(app.store, renew_until=time.monotonic() + 0.6)
        first = await engine_on(app, flaky, "first")
        first_run = asyncio.create_task(first.run())
        await asyncio.sleep(0.2)  # the first worker has leased everything
        second = await engine_on(app, app.store, "second")
        second_run = asyncio.create_task(second.run())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            counts = await app.store.counts()
            if counts.get(State.DELIVERED) == 12:
                break
            await asyncio.sleep(0.1)
        first.stop()
        second.stop()
        await asyncio.gather(first_run, second_run)
        counts = await app.store.counts()
    assert flaky.renew_failures >= 1
    assert flaky.renewals >= 1  # renewal went on after the failures
    assert first.loop_errors >= 1
    assert counts == {State.DELIVERED: 12}
    sent = message_ids(mx1)
    assert len(sent) == 12
    assert max(sent.values()) == 1, "a send was delivered twice"


async def test_an_outcome_write_that_raises_anything_is_kept_and_written_later(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    async with App(make_config(tmp_path, dns_server, smtp_port)) as app:
        await app.enqueue(SURVEY, numbered(5))
        flaky = FlakyStore(app.store, complete_times=2)
        engine = await engine_on(app, flaky, "w")
        task = asyncio.create_task(engine.run())
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if (await app.store.counts()) == {State.DELIVERED: 5}:
                    break
                await asyncio.sleep(0.05)
        finally:
            engine.stop()
            await task
        counts = await app.store.counts()
    assert counts == {State.DELIVERED: 5}
    assert engine.loop_errors >= 1
    assert max(message_ids(mx1).values()) == 1


class RaisingPreparer:
    """The real preparer, except that preparing the send for ``victim``
    raises RuntimeError the first ``times`` times."""

    def __init__(self, real: Preparer, victim: str, times: int = 1) -> None:
        self._real = real
        self._victim = victim
        self._times = times

    async def prepare(self, send: Any, *, now: float) -> Prepared:
        if send.recipient == self._victim and self._times > 0:
            self._times -= 1
            raise RuntimeError("injected: delivery step failed")
        return await self._real.prepare(send, now=now)


async def test_a_delivery_step_that_raises_defers_the_send_as_internal(app: App, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    result = await app.enqueue(SURVEY, numbered(4))
    victim = "person2@dest.test"
    preparer = RaisingPreparer(await app.preparer(), victim)
    engine = await engine_on(app, app.store, "w", preparer)
    task = asyncio.create_task(engine.run())
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (await app.store.counts()) == {State.DELIVERED: 4}:
                break
            await asyncio.sleep(0.05)
    finally:
        engine.stop()
        await task
    assert await app.store.counts() == {State.DELIVERED: 4}
    assert len(message_ids(mx1)) == 4
    [victim_id] = [
        s.id for s in await app.store.list_sends(SendFilter(), limit=10) if s.recipient == victim
    ]
    assert victim_id in result.send_ids
    events = await app.store.events(send_id=victim_id)
    [internal] = [e for e in events if e.reason is Reason.INTERNAL]
    assert internal.state is State.DEFERRED
    assert "RuntimeError" in (internal.detail or "")
    assert engine.loop_errors == 1
    rendered = app.metrics.render().decode()
    assert 'mailer_worker_loop_errors_total{loop="connection"} 1.0' in rendered


class RaisingConnector:
    """The real connector, except that its first ``times`` connects raise
    RuntimeError."""

    def __init__(self, real: Connector, times: int = 1) -> None:
        self._real = real
        self._times = times
        self.tls_counter = real.tls_counter

    async def connect(self, domain: str, policy: Any, source: Any = None) -> Any:
        if self._times > 0:
            self._times -= 1
            raise RuntimeError("injected: connector failed")
        return await self._real.connect(domain, policy, source)


async def test_a_connection_that_raises_sends_its_queue_back_as_internal(
    app: App, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    await app.enqueue(SURVEY, numbered(3))
    engine = Engine(
        app.config,
        app.store,
        RaisingConnector(app.connector()),  # type: ignore[arg-type]
        await app.preparer(),
        owner="w",
        metrics=app.metrics,
    )
    task = asyncio.create_task(engine.run())
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if (await app.store.counts()) == {State.DELIVERED: 3}:
                break
            await asyncio.sleep(0.05)
    finally:
        engine.stop()
        await task
    assert await app.store.counts() == {State.DELIVERED: 3}
    assert len(message_ids(mx1)) == 3
    events = await app.store.events()
    internal = [e for e in events if e.reason is Reason.INTERNAL]
    assert internal
    assert all(e.state is State.DEFERRED for e in internal)
    assert all("RuntimeError" in (e.detail or "") for e in internal)


async def test_claims_that_fail_for_a_while_do_not_end_the_worker(app: App, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    await app.enqueue(SURVEY, numbered(3))
    flaky = FlakyStore(app.store, claim_times=3)
    engine = await engine_on(app, flaky, "w")
    await asyncio.wait_for(engine.run(drain=True), 30)
    assert await app.store.counts() == {State.DELIVERED: 3}
    assert len(message_ids(mx1)) == 3
    assert engine.loop_errors == 3
