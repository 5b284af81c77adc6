"""The inbound listener: what it takes, what it refuses, and that bad
input neither harms it nor the store."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest

from mailer.dev.certs import TestCerts
from mailer.feedback.listener import InboundListener
from mailer.feedback.processor import Matcher, Processor
from mailer.feedback.samples import SAMPLES
from mailer.store.sqlite.store import SQLiteStore

BOUNCES = "bounces.platform.test"
LOOP = "fbl@platform.test"
FIXTURES = SAMPLES


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "inbound.sqlite3") as s:
        yield s


@pytest.fixture
async def listener(store: SQLiteStore, mailer_certs: TestCerts) -> AsyncIterator[InboundListener]:
    processor = Processor(store, Matcher("s" * 16, frozenset({BOUNCES})))
    server = InboundListener(
        store,
        host="127.0.0.1",
        port=0,
        accept_domains=frozenset({BOUNCES}),
        accept_addresses=frozenset({LOOP}),
        tls=TestCerts.server_context(mailer_certs.issue(["127.0.0.1"])),
        max_size=1024 * 1024,
        max_sessions=2,
        on_stored=processor.wake,
    )
    await server.start()
    task = asyncio.create_task(processor.run())
    try:
        yield server
    finally:
        await server.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def client(listener: InboundListener, *, tls: bool = True) -> aiosmtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=listener.port,
        start_tls=tls,
        tls_context=context,
        timeout=20,
    )


async def processed(store: SQLiteStore, count: int) -> list:  # type: ignore[type-arg]
    for _ in range(400):
        done = [m for m in await store.inbound_list() if m.processed_at is not None]
        if len(done) >= count:
            return done
        await asyncio.sleep(0.05)
    raise TimeoutError(f"not {count} processed")


async def test_the_null_sender_is_taken_over_starttls_and_stored_before_the_250(
    listener: InboundListener, store: SQLiteStore
) -> None:
    raw = (FIXTURES / "qmail.eml").read_bytes()
    async with client(listener) as smtp:
        errors, reply = await smtp.sendmail("", [f"b+whatever@{BOUNCES}"], raw)
        assert errors == {}
        assert reply.startswith("2.0.0 stored as ")
        stored_id = reply.split()[-1]
        # durable before the reply: the row is there the moment 250 came
        got = await store.inbound_get(stored_id)
        assert (got.raw or b"").replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
        assert got.tls is True
        assert got.mail_from == ""


async def test_starttls_is_offered_but_not_required(listener: InboundListener) -> None:
    async with client(listener, tls=False) as smtp:
        await smtp.ehlo()
        assert smtp.supports_extension("starttls")
        errors, _ = await smtp.sendmail("", [LOOP], b"Subject: x\r\n\r\nplain\r\n")
        assert errors == {}


async def test_recipients_outside_the_bounce_domain_and_loop_addresses_get_550(
    listener: InboundListener,
) -> None:
    async with client(listener) as smtp:
        await smtp.mail("")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await smtp.rcpt("someone@elsewhere.test")
        assert refused.value.code == 550
        assert refused.value.message.startswith("5.1.1")
        ok = await smtp.rcpt(LOOP.upper())
        assert ok.code == 250


async def test_a_ten_megabyte_message_is_refused_with_552_and_nothing_is_stored(
    listener: InboundListener, store: SQLiteStore
) -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 10_500
    async with client(listener) as smtp:
        # declared with SIZE: refused at MAIL
        with pytest.raises(aiosmtplib.SMTPResponseException) as declared:
            await smtp.mail("", options=[f"SIZE={len(big)}"])
        assert declared.value.code == 552
        await smtp.rset()
        # undeclared: refused after the data
        await smtp.mail("")
        await smtp.rcpt(f"b+x@{BOUNCES}")
        with pytest.raises(aiosmtplib.SMTPDataError) as data:
            await smtp.data(big)
        assert data.value.code == 552
    assert await store.inbound_list() == []
    # and the listener is fine afterwards
    async with client(listener) as smtp:
        errors, _ = await smtp.sendmail("", [LOOP], b"Subject: small\r\n\r\nok\r\n")
        assert errors == {}


@pytest.mark.parametrize(
    "raw",
    [
        # broken MIME: a multipart/report whose boundary never comes
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=zz\r\n\r\n"
        b"--zz\r\nContent-Type: message/delivery-status\r\n\r\nFinal-Recipient rfc822\r\n",
        # undecodable bytes in headers and body, an unknown charset
        b"Subject: \xff\xfe\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n"
        b"\x80\x81\xc3\x28\r\n",
    ],
    ids=["broken-mime", "undecodable-bytes"],
)
async def test_bad_messages_are_kept_as_unknown_and_harm_nothing(
    listener: InboundListener, store: SQLiteStore, raw: bytes
) -> None:
    async with client(listener) as smtp:
        errors, _ = await smtp.sendmail("", [f"b+x@{BOUNCES}"], raw)
        assert errors == {}
    [message] = await processed(store, 1)
    assert message.kind == "unknown"
    assert message.send_id is None
    assert message.problem
    async with client(listener) as smtp:
        errors, _ = await smtp.sendmail("", [LOOP], (FIXTURES / "exim.eml").read_bytes())
        assert errors == {}
    done = await processed(store, 2)
    assert sorted(m.kind or "" for m in done) == ["bounce", "unknown"]


async def test_a_dsn_with_a_thousand_recipients_is_parsed_whole(
    listener: InboundListener, store: SQLiteStore
) -> None:
    blocks = b"".join(
        b"Final-Recipient: rfc822; user%d@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        % i
        for i in range(1000)
    )
    raw = (
        b"From: MAILER-DAEMON@example.com\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        + blocks
        + b"--b--\r\n"
    )
    async with client(listener) as smtp:
        errors, _ = await smtp.sendmail("", [f"b+x@{BOUNCES}"], raw)
        assert errors == {}
    [message] = await processed(store, 1)
    report = json.loads(message.report or "{}")
    assert message.kind == "bounce"
    assert len(report["recipients"]) == 1000
    assert message.send_id is None  # unmatched, kept and listed
    assert [m.id for m in await store.inbound_list(unmatched=True)] == [message.id]


async def test_sessions_beyond_the_limit_get_421(listener: InboundListener) -> None:
    first, second = client(listener), client(listener)
    await first.connect()
    await second.connect()
    third = client(listener)
    try:
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as refused:
            await third.connect()
        assert refused.value.code == 421
    finally:
        await first.quit()
        await second.quit()
    # a slot is free again
    async with client(listener) as smtp:
        assert (await smtp.noop()).code == 250
