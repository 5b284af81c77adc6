"""SMTP delivery (mailer.delivery.smtp) against a real aiosmtpd sink on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from mailer.config import TLSPolicy
from mailer.delivery.smtp import Session, TLSContexts, open_session
from mailer.dev.certs import CertFiles, TestCerts
from mailer.errors import (
    ConfigError,
    ConnectFailed,
    DeliveryError,
    SMTPReplyError,
    TLSFailed,
    TLSUnavailable,
)
from mailer.reasons import Reason
from mailer.replycodes import classify
from mailer.sink.runner import Sink, pick_port

MX = "mx.sink.test"
MESSAGE = (
    b"From: survey@sender.test\r\n"
    b"To: someone@dest.test\r\n"
    b"Subject: Survey\r\n"
    b"\r\n"
    b"Hello,\r\n"
    b".a line that starts with a dot\r\n"
    b"bye\r\n"
)


@pytest.fixture(scope="module")
def certs() -> Iterator[TestCerts]:
    with TestCerts() as c:
        yield c


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return TLSContexts()


@pytest.fixture
def sink(certs: TestCerts) -> Iterator[Sink]:
    with Sink(certs=certs, hostname=MX) as s:
        yield s


async def connect(sink: Sink, contexts: TLSContexts, **kw: Any) -> Session:
    return await open_session(
        MX, sink.host, sink.port, helo="client.test", contexts=contexts, timeout=10, **kw
    )


async def test_starttls_delivery_is_recorded_under_tls_12_or_newer(
    sink: Sink, contexts: TLSContexts
) -> None:
    async with await connect(sink, contexts) as session:
        reply = await session.send("survey@sender.test", "someone@dest.test", MESSAGE)
        assert session.tls.version in {"TLSv1.2", "TLSv1.3"}
        assert session.host == MX
        assert session.address == "127.0.0.1"
    assert reply.code == 250
    assert reply.enhanced == "2.0.0"
    [received] = await sink.await_messages(1)
    assert received.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert received.mail_from == "survey@sender.test"
    assert received.rcpt_tos == ("someone@dest.test",)
    assert received.data == MESSAGE
    assert sink.transactions[0].tls is True


async def test_no_starttls_means_tls_unavailable_and_no_mail_from_in_plaintext(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    async with Sink(starttls=False, hostname=MX) as plain:
        with pytest.raises(TLSUnavailable) as caught:
            await connect(plain, contexts)
        assert plain.connections == 1
        assert plain.transactions == []
        assert plain.messages == []
    assert caught.value.reason is Reason.TLS_UNAVAILABLE
    assert not caught.value.permanent


async def test_verify_accepts_a_certificate_from_the_given_ca(
    sink: Sink, certs: TestCerts, contexts: TLSContexts
) -> None:
    session = await connect(sink, contexts, policy=TLSPolicy.VERIFY, cafile=str(certs.ca_path))
    await session.send("a@sender.test", "b@dest.test", MESSAGE)
    await session.close()
    assert len(await sink.await_messages(1)) == 1


async def test_verify_without_the_test_ca_refuses_its_certificate(
    sink: Sink, contexts: TLSContexts
) -> None:
    with pytest.raises(TLSFailed) as caught:
        await connect(sink, contexts, policy=TLSPolicy.VERIFY)
    assert caught.value.reason is Reason.CERTIFICATE
    assert sink.transactions == []


BAD_CERTS: dict[str, Callable[[TestCerts], CertFiles]] = {
    "other-name": lambda c: c.other_name(),
    "self-signed": lambda c: c.self_signed([MX, "127.0.0.1"]),
    "expired": lambda c: c.expired([MX, "127.0.0.1"]),
}


@pytest.mark.parametrize("kind", BAD_CERTS)
async def test_verify_refuses_a_bad_certificate_before_any_mail_from(
    kind: str, certs: TestCerts, contexts: TLSContexts
) -> None:
    async with Sink(hostname=MX, tls_cert=BAD_CERTS[kind](certs)) as bad:
        with pytest.raises(TLSFailed) as caught:
            await connect(bad, contexts, policy=TLSPolicy.VERIFY, cafile=str(certs.ca_path))
        assert bad.transactions == []
    assert caught.value.reason is Reason.CERTIFICATE
    assert not caught.value.permanent


@pytest.mark.parametrize("kind", BAD_CERTS)
async def test_encrypt_accepts_a_bad_certificate_but_still_encrypts(
    kind: str, certs: TestCerts, contexts: TLSContexts
) -> None:
    async with Sink(hostname=MX, tls_cert=BAD_CERTS[kind](certs)) as bad:
        async with await connect(bad, contexts, policy=TLSPolicy.ENCRYPT) as session:
            await session.send("a@sender.test", "b@dest.test", MESSAGE)
        [received] = await bad.await_messages(1)
    assert received.tls_version in {"TLSv1.2", "TLSv1.3"}


async def test_refused_connection_is_connect_failed(contexts: TLSContexts) -> None:
    port = pick_port(["127.0.0.1"])  # free, so nothing listens there
    with pytest.raises(ConnectFailed) as caught:
        await open_session(MX, "127.0.0.1", port, helo="client.test", contexts=contexts)
    assert caught.value.reason is Reason.CONNECTION
    assert not caught.value.permanent


async def test_server_that_never_greets_is_connect_failed_after_timeout(
    contexts: TLSContexts,
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(ConnectFailed):
            await open_session(
                MX, "127.0.0.1", port, helo="client.test", contexts=contexts, timeout=0.3
            )


async def test_a_server_stalling_mid_transaction_is_connect_failed_and_the_session_dropped(
    sink: Sink, contexts: TLSContexts
) -> None:
    session = await open_session(
        MX, sink.host, sink.port, helo="client.test", contexts=contexts, timeout=0.3
    )
    sink.set_faults(slow_replies=5.0)
    with pytest.raises(ConnectFailed, match="timed out"):
        await asyncio.wait_for(session.send("a@sender.test", "b@dest.test", MESSAGE), 4.0)
    assert not session.usable
    await session.close()


async def test_each_step_of_a_transaction_has_the_whole_timeout(
    sink: Sink, contexts: TLSContexts
) -> None:
    """The bound is per step: three replies each slower than half the
    timeout make a transaction longer than the timeout, and it succeeds."""
    session = await open_session(
        MX, sink.host, sink.port, helo="client.test", contexts=contexts, timeout=1.0
    )
    sink.set_faults(slow_replies=0.6)
    async with session:
        reply = await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert reply.code == 250


async def test_a_refusal_stays_a_refusal_when_the_rset_after_it_is_slow(
    sink: Sink, contexts: TLSContexts
) -> None:
    """RCPT and the RSET after its refusal together take longer than one
    step's timeout; the refusal is what the caller hears."""
    sink.script("gone@*", "550 5.1.1 no such user")
    session = await open_session(
        MX, sink.host, sink.port, helo="client.test", contexts=contexts, timeout=1.0
    )
    sink.set_faults(slow_replies=0.6)
    async with session:
        with pytest.raises(SMTPReplyError) as caught:
            await session.send("a@sender.test", "gone@dest.test", MESSAGE)
        assert caught.value.enhanced == "5.1.1"
        assert session.usable


async def test_unknown_mailbox_is_permanent_suppressing_and_session_stays_usable(
    sink: Sink, contexts: TLSContexts
) -> None:
    sink.script("gone@*", "550 5.1.1 no such user")
    async with await connect(sink, contexts) as session:
        with pytest.raises(SMTPReplyError) as caught:
            await session.send("a@sender.test", "gone@dest.test", MESSAGE)
        assert session.usable
        await session.send("a@sender.test", "here@dest.test", MESSAGE)
        assert session.messages_sent == 1
    error = caught.value
    assert (error.code, error.enhanced, error.text) == (550, "5.1.1", "no such user")
    assert error.permanent
    assert error.reason is Reason.MAILBOX_UNKNOWN
    assert error.code is not None
    assert classify(error.code, error.enhanced).suppress
    assert [m.rcpt_tos for m in await sink.await_messages(1)] == [("here@dest.test",)]
    assert sink.connections == 1


async def test_greylisting_451_is_temporary_and_session_stays_usable(
    sink: Sink, contexts: TLSContexts
) -> None:
    sink.script("*", "451 4.7.1 greylisted, come back later", times=1)
    async with await connect(sink, contexts) as session:
        with pytest.raises(SMTPReplyError) as caught:
            await session.send("a@sender.test", "b@dest.test", MESSAGE)
        assert session.usable
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert not caught.value.permanent
    assert caught.value.reason is Reason.TEMPORARY
    assert len(await sink.await_messages(1)) == 1


async def test_421_is_throttled_and_makes_the_session_unusable(
    sink: Sink, contexts: TLSContexts
) -> None:
    sink.script("*", "421 4.7.0 too many messages, slow down")
    session = await connect(sink, contexts)
    with pytest.raises(SMTPReplyError) as caught:
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert caught.value.reason is Reason.THROTTLED
    assert not caught.value.permanent
    assert not session.usable
    with pytest.raises(ConnectFailed):
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    await session.close()


async def test_rejection_after_data_is_classified_and_session_stays_usable(
    sink: Sink, contexts: TLSContexts
) -> None:
    sink.script("*", "550 5.7.28 flood of similar messages", stage="data", times=1)
    async with await connect(sink, contexts) as session:
        with pytest.raises(SMTPReplyError) as caught:
            await session.send("a@sender.test", "b@dest.test", MESSAGE)
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert caught.value.reason is Reason.SPAM_BLOCK
    assert caught.value.permanent
    assert len(await sink.await_messages(1)) == 1


async def test_connection_dropped_after_data_is_connect_failed_and_retryable(
    sink: Sink, contexts: TLSContexts
) -> None:
    sink.set_faults(drop_after_data=1)
    session = await connect(sink, contexts)
    with pytest.raises(ConnectFailed) as caught:
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert not caught.value.permanent
    assert not session.usable
    assert session.messages_sent == 0
    await session.close()
    assert [m.data for m in sink.dropped] == [MESSAGE]
    assert sink.messages == []


async def test_many_messages_share_one_connection(sink: Sink, contexts: TLSContexts) -> None:
    count = 40
    async with await connect(sink, contexts) as session:
        for i in range(count):
            reply = await session.send("a@sender.test", f"r{i}@dest.test", MESSAGE)
            assert reply.code == 250
        assert session.messages_sent == count
    received = await sink.await_messages(count)
    assert sorted(m.rcpt_tos[0] for m in received) == sorted(
        f"r{i}@dest.test" for i in range(count)
    )
    assert sink.connections == 1


async def test_closed_session_is_not_usable_and_refuses_to_send(
    sink: Sink, contexts: TLSContexts
) -> None:
    session = await connect(sink, contexts)
    assert session.usable
    await session.close()
    assert not session.usable
    with pytest.raises(ConnectFailed):
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    await session.close()  # closing twice is harmless


async def test_address_that_would_inject_commands_is_refused_before_sending(
    sink: Sink, contexts: TLSContexts
) -> None:
    async with await connect(sink, contexts) as session:
        with pytest.raises(DeliveryError) as caught:
            await session.send("a@sender.test", "b@dest.test>\r\nRCPT TO:<x@evil.test", MESSAGE)
        assert session.usable
        await session.send("a@sender.test", "b@dest.test", MESSAGE)
    assert caught.value.reason is Reason.PROTOCOL
    assert caught.value.permanent
    assert [t.mail_from for t in sink.transactions] == ["a@sender.test"]


async def test_null_reverse_path_and_utf8_recipient_are_delivered(
    sink: Sink, contexts: TLSContexts
) -> None:
    async with await connect(sink, contexts) as session:
        await session.send("", "jörg@dest.test", MESSAGE)
    [received] = await sink.await_messages(1)
    assert received.mail_from == "<>"
    assert received.rcpt_tos == ("jörg@dest.test",)


def test_tls_contexts_are_built_once_per_policy_and_cafile(certs: TestCerts) -> None:
    contexts = TLSContexts()
    verify = contexts.get(TLSPolicy.VERIFY, str(certs.ca_path))
    assert contexts.get(TLSPolicy.VERIFY, str(certs.ca_path)) is verify
    assert contexts.get(TLSPolicy.VERIFY) is not verify
    encrypt = contexts.get(TLSPolicy.ENCRYPT)
    assert contexts.get(TLSPolicy.ENCRYPT, str(certs.ca_path)) is encrypt
    assert not encrypt.check_hostname
    assert verify.check_hostname
    assert {c.minimum_version.name for c in (verify, encrypt)} == {"TLSv1_2"}


def test_unreadable_cafile_is_a_config_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        TLSContexts().get(TLSPolicy.VERIFY, str(tmp_path / "missing.pem"))
    assert caught.value.key == "cafile"


@asynccontextmanager
async def line_server(replies: dict[str, str], greeting: str) -> AsyncIterator[int]:
    """A bare TCP server answering SMTP verbs with fixed lines, for replies
    aiosmtpd cannot be made to give (a refusing greeting, STARTTLS refused)."""

    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        writer.write(greeting.encode() + b"\r\n")
        while line := await reader.readline():
            verb = line.split()[0].decode().upper() if line.strip() else ""
            writer.write(replies.get(verb, "502 5.5.1 not implemented").encode() + b"\r\n")
            await writer.drain()
            if verb == "QUIT":
                break
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
    await asyncio.wait_for(asyncio.gather(*handlers), 10)


async def test_refusing_greeting_is_a_classified_reply_error(contexts: TLSContexts) -> None:
    async with line_server({}, "554 5.7.1 no service for you") as port:
        with pytest.raises(SMTPReplyError) as caught:
            await open_session(MX, "127.0.0.1", port, helo="client.test", contexts=contexts)
    assert (caught.value.code, caught.value.reason) == (554, Reason.POLICY_BLOCK)


async def test_starttls_refused_is_tls_unavailable_with_the_reply(
    contexts: TLSContexts,
) -> None:
    replies = {
        "EHLO": "250-mx.sink.test\r\n250 STARTTLS",
        "STARTTLS": "454 4.7.0 TLS not available due to temporary reason",
        "QUIT": "221 bye",
    }
    async with line_server(replies, "220 mx.sink.test ESMTP") as port:
        with pytest.raises(TLSUnavailable) as caught:
            await open_session(MX, "127.0.0.1", port, helo="client.test", contexts=contexts)
    assert (caught.value.code, caught.value.enhanced) == (454, "4.7.0")
    assert not caught.value.permanent


async def test_server_without_ehlo_is_tls_unavailable(contexts: TLSContexts) -> None:
    replies = {"HELO": "250 mx.sink.test", "QUIT": "221 bye"}
    async with line_server(replies, "220 mx.sink.test SMTP") as port:
        with pytest.raises(TLSUnavailable):
            await open_session(MX, "127.0.0.1", port, helo="client.test", contexts=contexts)


async def test_cancelled_send_leaves_the_session_unusable(
    sink: Sink, contexts: TLSContexts
) -> None:
    session = await connect(sink, contexts)
    task = asyncio.create_task(session.send("a@sender.test", "b@dest.test", MESSAGE))
    await asyncio.sleep(0)  # the task is now waiting for the reply to MAIL FROM
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not session.usable
    await session.close()


async def test_a_greeting_in_another_protocol_is_a_protocol_error_at_the_seam() -> None:
    """An MX that answers with an SSH banner: aiosmtplib's own exception
    for the malformed line must not leak past the SMTP seam."""

    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(DeliveryError) as caught:
            await open_session("mx.dest.test", "127.0.0.1", port, helo="mailer.test", timeout=5)
    assert caught.value.reason is Reason.PROTOCOL
    assert caught.value.stage == "greeting"
    assert caught.value.text.endswith("Malformed SMTP response line: SSH-2.0-OpenSSH_9.6")
