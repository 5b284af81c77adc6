"""Several workers sharing one PostgreSQL queue: worker processes draining
it together, one of them killed with SIGKILL, claims raced from many
connections, and an event feed read while several writers commit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.reasons import Reason, State
from mailer.sink.runner import Sink
from mailer.store.models import NewSend, Outcome
from mailer.store.postgres.store import PostgresStore
from tests.backends import postgres_schema
from tests.conftest import OUR_DOMAIN, SURVEY, make_config
from tests.test_store_contract import DIST

pytestmark = pytest.mark.postgres

MESSAGES = 5000
IN_FLIGHT = 100
WORKERS = 3
# The engine does not renew leases: a lease must outlast the time a claimed
# send can wait in a live worker, or another worker takes it over and sends
# it again. Here that wait is a few seconds; a dead worker's sends come back
# after this long.
LEASE = 30.0


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema."""
    async with postgres_schema() as url:
        yield url


def store_for(url: str) -> PostgresStore:
    return PostgresStore(url)


WORKER_SECRET = "worker-unsubscribe-secret-0123456789abcdef"


def write_config(
    path: Path, *, database: str, dns: DNSServer, port: int, keys: Path, lease: float
) -> Path:
    path.write_text(
        f'hostname = "mailer.test"\n'
        f'database = "{database}"\n'
        f'keys_dir = "{keys}"\n'
        f'nameservers = ["{dns.address}"]\n'
        f"smtp_port = {port}\n"
        f'outbound_ip = "192.0.2.10"\n'
        f"[dkim]\n"
        f'domain = "{OUR_DOMAIN}"\n'
        f"[worker]\n"
        f"max_in_flight = {IN_FLIGHT}\n"
        f"lease_seconds = {lease}\n"
        f"poll_interval = 0.2\n"
        f"idle_timeout = 0.2\n"
        # what `mailer worker` needs for every message's one-click unsubscribe URL
        f"[api]\n"
        f'secret = "{WORKER_SECRET}"\n'
        f'public_url = "https://mailer.test"\n'
    )
    return path


def start_worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--config", str(config), "worker", "--drain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )


async def finished(proc: subprocess.Popen[bytes]) -> str:
    output, _ = await asyncio.to_thread(proc.communicate, timeout=300)
    text = output.decode()
    assert proc.returncode == 0, text
    return text


def delivered_by(output: str) -> int:
    match = re.search(r"drained: (\d+) delivered", output)
    assert match, output
    return int(match.group(1))


async def enqueue_people(tmp_path: Path, dns: DNSServer, port: int, keys: Path, url: str) -> None:
    people = [
        RecipientInput(f"p{i}@dest.test", f"Person {i}", {"token": str(i)}) for i in range(MESSAGES)
    ]
    async with App(make_config(tmp_path, dns, port, keys, database=url)) as app:
        await app.enqueue(SURVEY, people)


async def final_counts(url: str) -> dict[State, int]:
    async with store_for(url) as store:
        counts: dict[State, int] = await store.counts()
        return counts


def message_ids(sink: Sink) -> collections.Counter[str]:
    return collections.Counter(str(m.message["Message-ID"]) for m in sink.messages)


@pytest.mark.slow
async def test_three_workers_drain_one_queue_each_message_once(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    make_sink: Callable[..., Sink],
    database: str,
) -> None:
    sink = make_sink("127.0.0.2")
    await enqueue_people(tmp_path, dns_server, smtp_port, keys_dir, database)
    config = write_config(
        tmp_path / "mailer.toml",
        database=database,
        dns=dns_server,
        port=smtp_port,
        keys=keys_dir,
        lease=LEASE,
    )

    workers = [start_worker(config) for _ in range(WORKERS)]
    outputs = [await finished(w) for w in workers]

    assert await final_counts(database) == {State.DELIVERED: MESSAGES}
    ids = message_ids(sink)
    assert len(ids) == MESSAGES
    assert set(ids.values()) == {1}
    shares = [delivered_by(out) for out in outputs]
    assert sum(shares) == MESSAGES
    assert sum(1 for share in shares if share) >= 2, shares
    # no send was leased twice: one claim each, by one worker
    async with store_for(database) as store:
        events = await store.events(limit=10 * MESSAGES)
    claims = collections.Counter(e.send_id for e in events if e.state is State.SENDING)
    assert len(claims) == MESSAGES
    assert set(claims.values()) == {1}
    assert len({e.detail for e in events if e.state is State.SENDING}) >= 2


@pytest.mark.slow
async def test_a_worker_killed_mid_run_loses_nothing_and_bounds_duplicates(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    make_sink: Callable[..., Sink],
    database: str,
) -> None:
    sink = make_sink("127.0.0.2")
    await enqueue_people(tmp_path, dns_server, smtp_port, keys_dir, database)
    config = write_config(
        tmp_path / "mailer.toml",
        database=database,
        dns=dns_server,
        port=smtp_port,
        keys=keys_dir,
        lease=LEASE,
    )

    victim, *survivors = [start_worker(config) for _ in range(WORKERS)]
    async with asyncio.timeout(120):
        while len(sink.messages) < MESSAGES // 3:
            assert victim.poll() is None, victim.communicate()[0].decode()
            await asyncio.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.wait)
    assert len(sink.messages) < MESSAGES, "the workers finished before one could be killed"
    for proc in survivors:
        await finished(proc)

    assert await final_counts(database) == {State.DELIVERED: MESSAGES}
    ids = message_ids(sink)
    assert len(ids) == MESSAGES
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= IN_FLIGHT


async def test_claims_raced_from_many_connections_never_share_a_send(database: str) -> None:
    sends = [NewSend(f"u{i}@race.test") for i in range(600)]
    async with contextlib.AsyncExitStack() as stack:
        stores = [await stack.enter_async_context(store_for(database)) for _ in range(8)]
        _, ids = await stores[0].enqueue(DIST, sends, hostname="h", now=100.0)

        async def drain(index: int, now: float) -> list[str]:
            got: list[str] = []
            while batch := await stores[index].claim(f"w{index}", 7, lease_seconds=60, now=now):
                got.extend(c.send.id for c in batch)
            return got

        # fresh sends, then the same sends again once every lease has run out
        for now in (101.0, 500.0):
            results = await asyncio.gather(*(drain(i, now) for i in range(len(stores))))
            claimed = [send_id for got in results for send_id in got]
            assert sorted(claimed) == sorted(ids)
            assert sum(1 for got in results if got) > 1
            owners = {send_id: f"w{i}" for i, got in enumerate(results) for send_id in got}
            # each send is leased to the one worker that got it, and only it
            # may record the outcome
            for send_id in ids[:20]:
                other = "w7" if owners[send_id] != "w7" else "w6"
                done = Outcome(send_id, State.DELIVERED, Reason.DELIVERED)
                assert await stores[0].complete(other, [done], now=now + 1) == 0
            assert await stores[0].counts() == {State.SENDING: len(ids)}

        expired = [
            e for e in await stores[0].events(limit=10_000) if e.reason is Reason.LEASE_EXPIRED
        ]
        assert sorted(e.send_id for e in expired) == sorted(ids)


async def test_event_feed_skips_nothing_while_several_writers_commit(database: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        writers = [await stack.enter_async_context(store_for(database)) for _ in range(4)]
        reader = await stack.enter_async_context(store_for(database))
        seen: list[int] = []
        done = asyncio.Event()

        async def write(store: PostgresStore, index: int) -> None:
            for round_ in range(15):
                batch = [NewSend(f"w{index}r{round_}n{n}@feed.test") for n in range(30)]
                await store.enqueue(DIST, batch, hostname="h", now=100.0)
                claimed = await store.claim(f"w{index}", 20, lease_seconds=60, now=101.0)
                await store.complete(
                    f"w{index}",
                    [Outcome(c.send.id, State.DELIVERED, Reason.DELIVERED) for c in claimed],
                    now=102.0,
                )

        async def tail() -> None:
            after = 0
            while True:
                finishing = done.is_set()
                while page := await reader.events(after=after, limit=17):
                    seen.extend(e.seq for e in page)
                    after = page[-1].seq
                if finishing:
                    return
                await asyncio.sleep(0)

        tailer = asyncio.create_task(tail())
        await asyncio.gather(*(write(s, i) for i, s in enumerate(writers)))
        done.set()
        await tailer

        everything = [e.seq for e in await reader.events(limit=100_000)]
        assert len(everything) > 4 * 15 * 30
        assert seen == everything
