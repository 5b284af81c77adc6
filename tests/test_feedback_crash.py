"""The inbound listener killed with SIGKILL right after its 250s: what it
stored is processed after the restart, once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from mailer.delivery.smtp import open_session
from mailer.feedback.rehearsal import build_arf, build_dsn
from mailer.message.verp import make_return_path
from mailer.reasons import Reason, State
from mailer.sink.runner import pick_port
from mailer.store.models import Attempt, NewDistribution, NewSend, Outcome
from mailer.store.sqlite.store import SQLiteStore

SECRET = "crash-secret-0123456789"
BOUNCES = "bounces.crash.test"
DIST = NewDistribution("acct", "a@customer.test", "A", "Umfrage", "<p>x</p>", None)


def original(message_id: str) -> bytes:
    return (
        f"From: a@customer.test\r\nMessage-ID: {message_id}\r\nSubject: x\r\n\r\nbody\r\n".encode()
    )


def start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--config", str(config), "inbound", "--dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )


async def ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
    assert line.startswith(b"inbound on "), line + proc.stdout.read()


async def test_sigkill_after_the_250_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    database = tmp_path / "mailer.sqlite3"
    async with SQLiteStore(database) as store:
        _, ids = await store.enqueue(
            DIST, [NewSend("gone@dest.test"), NewSend("angry@dest.test")], hostname="h", now=1
        )
        await store.claim("w", 2, lease_seconds=60, now=2)
        done = Attempt(2, 2, Reason.DELIVERED, code=250)
        await store.complete(
            "w", [Outcome(i, State.DELIVERED, Reason.DELIVERED, attempt=done) for i in ids], now=3
        )
        sends = [await store.send(i) for i in ids]
    port = pick_port(["127.0.0.1"])
    config = tmp_path / "mailer.toml"
    config.write_text(
        f'hostname = "inbound.crash.test"\ndatabase = "{database}"\n'
        f'[feedback]\nsecret = "{SECRET}"\nbounce_domain = "{BOUNCES}"\n'
        f'loop_addresses = ["fbl@crash.test"]\n'
        f'[inbound]\nlisten = "127.0.0.1:{port}"\n'
    )
    return_path = make_return_path(ids[0], secret=SECRET, domain=BOUNCES)
    dsn = build_dsn(
        original(sends[0].message_id),
        return_path=return_path,
        recipient="gone@dest.test",
        reporting_mta="mx.dest.test",
    )
    arf = build_arf(
        original(sends[1].message_id),
        to="fbl@crash.test",
        recipient="angry@dest.test",
        reporter="fbl.dest.test",
    )

    first = start(config)
    try:
        await ready(first)
        session = await open_session("127.0.0.1", "127.0.0.1", port, helo="mx.dest.test")
        assert session.tls.version is not None
        for rcpt, data in ((return_path, dsn), ("fbl@crash.test", arf)):
            reply = await session.send("", rcpt, data)
            assert reply.code == 250
        # killed with the session still open: processing starts when a
        # session ends, so both messages are stored and not yet processed
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        await session.close()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    async with SQLiteStore(database) as store:
        assert len(await store.inbound_pending()) == 2
        assert (await store.send(ids[0])).state is State.DELIVERED
        assert await store.suppressions("acct") == []

    for _ in range(2):  # the second restart finds nothing left to do
        proc = start(config)
        try:
            await ready(proc)
            async with SQLiteStore(database) as store:
                for _ in range(600):
                    if not await store.inbound_pending():
                        break
                    await asyncio.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    async with SQLiteStore(database) as store:
        assert await store.inbound_pending() == []
        bounced = await store.send(ids[0])
        assert (bounced.state, bounced.reason) == (State.BOUNCED, Reason.MAILBOX_UNKNOWN)
        assert (await store.send(ids[1])).state is State.DELIVERED
        reasons = [e.reason for e in await store.events(send_id=ids[0])]
        assert reasons.count(Reason.MAILBOX_UNKNOWN) == 1
        reasons = [e.reason for e in await store.events(send_id=ids[1])]
        assert reasons.count(Reason.COMPLAINED) == 1
        entries = {(s.address, s.reason) for s in await store.suppressions("acct")}
        assert entries == {
            ("gone@dest.test", Reason.SUPPRESSED_BOUNCE),
            ("angry@dest.test", Reason.SUPPRESSED_COMPLAINT),
        }
        matched = {m.send_id: m.matched_by for m in await store.inbound_list()}
        assert matched == {ids[0]: "verp", ids[1]: "message-id"}
