"""``mailer bench``'s two after-the-250 figures: returned messages parsed
per second on one core (over the sample set of every layout), and returned
messages the inbound listener accepts durably per second (stored in a
fresh SQLite file before each 250, over STARTTLS, several sessions)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

from mailer.delivery.smtp import open_session
from mailer.dev.certs import TestCerts
from mailer.feedback.listener import InboundListener
from mailer.feedback.parse import parse_message
from mailer.feedback.processor import Matcher, Processor
from mailer.feedback.rehearsal import build_dsn
from mailer.feedback.samples import sample_bytes
from mailer.store.sqlite.store import SQLiteStore

__all__ = ["bounces_parsed_per_second", "inbound_accepted_per_second"]

_BOUNCES = "bounces.bench.test"


def bounces_parsed_per_second(seconds: float = 1.0) -> tuple[int, float]:
    """(samples in the set, parsed per second): the whole set parsed over
    and over on this thread for about ``seconds``."""
    samples = sample_bytes()
    done = 0
    start = time.perf_counter()
    while True:
        for raw in samples:
            parse_message(raw)
        done += len(samples)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return len(samples), done / elapsed


def _client(port: int, data: bytes, count: int, sessions: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """In its own process, as remote MTAs are: the seconds from the first
    connection to the last 250."""
    start = time.perf_counter()
    asyncio.run(_push(port, [data] * count, sessions))
    out.put(time.perf_counter() - start)


async def _push(port: int, messages: list[bytes], sessions: int) -> None:
    async def one(batch: list[bytes]) -> None:
        session = await open_session("127.0.0.1", "127.0.0.1", port, helo="mx.bench.test")
        async with session:
            for data in batch:
                await session.send("", f"b+x@{_BOUNCES}", data)

    await asyncio.gather(*(one(messages[i::sessions]) for i in range(sessions)))


async def _inbound(root: Path, count: int, sessions: int) -> float:
    original = (
        b"From: survey@bench.test\r\nTo: someone@dest.test\r\n"
        b"Message-ID: <0190aaaabbbbccccdddd000001@bench.test>\r\nSubject: x\r\n\r\nbody\r\n"
    )
    dsn = build_dsn(
        original, return_path=f"b+x@{_BOUNCES}", recipient="someone@dest.test", reporting_mta="mx"
    )
    with TestCerts() as certs:
        async with SQLiteStore(root / "inbound.sqlite3") as store:
            processor = Processor(store, Matcher(None, frozenset({_BOUNCES})))
            listener = InboundListener(
                store,
                host="127.0.0.1",
                port=0,
                accept_domains=frozenset({_BOUNCES}),
                tls=TestCerts.server_context(certs.issue(["127.0.0.1"])),
                max_sessions=sessions + 1,
                on_stored=processor.wake,
            )
            await listener.start()
            task = asyncio.create_task(processor.run())
            context = multiprocessing.get_context("spawn")
            out = context.Queue()
            client = context.Process(
                target=_client, args=(listener.port, dsn, count, sessions, out), daemon=True
            )
            try:
                client.start()
                elapsed = float(await asyncio.to_thread(out.get, True, 600))
                await asyncio.to_thread(client.join, 30)
            finally:
                await listener.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            stored = len(await store.inbound_list(limit=count + 1))
            if stored != count:
                raise RuntimeError(f"inbound bench: {stored} of {count} stored")
    return count / elapsed


def inbound_accepted_per_second(root: Path, count: int = 1000, sessions: int = 8) -> float:
    """Messages per second from the first MAIL to the last 250 (each
    durable in the store before its 250). Raises RuntimeError when not
    every message ends up stored."""
    return asyncio.run(_inbound(root, count, sessions))
