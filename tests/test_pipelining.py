"""PIPELINING (RFC 2920) in the delivery session, against the real sink
(aiosmtpd over STARTTLS) and, for replies aiosmtpd cannot be made to give, a
bare STARTTLS server on loopback that writes its replies in chosen pieces."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.delivery.pipeline import PRIVATE_NAMES, PipelinedReplies, message_payload
from mailer.delivery.smtp import Session, TLSContexts, open_session
from mailer.dev.certs import TestCerts
from mailer.errors import SMTPReplyError
from mailer.reasons import Reason
from mailer.sink.runner import Sink

MX = "mx.sink.test"
MESSAGE = b"From: a@sender.test\r\nSubject: s\r\n\r\nHello\r\n.dot line\r\n"


@pytest.fixture(scope="module")
def certs() -> Iterator[TestCerts]:
    with TestCerts() as c:
        yield c


@pytest.fixture(scope="module")
def contexts() -> TLSContexts:
    return TLSContexts()


def record_writes(session: Session) -> list[bytes]:
    """Every write the session's protocol makes from now on (the protocol
    still writes them: this only looks)."""
    protocol: Any = session._smtp.protocol
    writes: list[bytes] = []
    write = protocol.write

    def recorded(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    protocol.write = recorded
    return writes


async def connect(port: int, contexts: TLSContexts, **kw: Any) -> Session:
    return await open_session(
        MX, "127.0.0.1", port, helo="client.test", contexts=contexts, timeout=5, **kw
    )


async def test_envelope_and_data_go_in_one_write_when_the_sink_offers_pipelining(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    with Sink(certs=certs, hostname=MX) as sink:
        async with await connect(sink.port, contexts) as session:
            assert "PIPELINING" in session.extensions
            writes = record_writes(session)
            reply = await session.send("a@sender.test", "b@dest.test", MESSAGE)
        [received] = await sink.await_messages(1)
    assert reply.code == 250
    assert writes[0] == (
        b"MAIL FROM:<a@sender.test> SIZE=%d\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n" % len(MESSAGE)
    )
    assert writes[1].endswith(b"\r\n.\r\n")
    assert writes[2:] == [b"QUIT\r\n"]
    assert received.data == MESSAGE


async def test_refused_rcpt_and_refused_data_end_each_message_in_its_state_and_no_body_follows(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    with Sink(certs=certs, hostname=MX) as sink:
        sink.script("gone@*", "550 5.1.1 no such user")
        sink.script("nodata@*", "554 5.7.1 not from you", stage="data-command")
        sink.script("late@*", "451 4.3.0 try later", stage="data")
        outcomes: dict[str, Any] = {}
        async with await connect(sink.port, contexts) as session:
            writes = record_writes(session)
            for rcpt in ("one", "gone", "nodata", "late", "two"):
                try:
                    outcomes[rcpt] = await session.send("a@sender.test", f"{rcpt}@d.test", MESSAGE)
                except SMTPReplyError as exc:
                    outcomes[rcpt] = exc
                assert session.usable
            assert session.messages_sent == 2
        received = await sink.await_messages(2)
        assert sink.connections == 1
    assert [m.rcpt_tos for m in received] == [("one@d.test",), ("two@d.test",)]
    gone, nodata, late = outcomes["gone"], outcomes["nodata"], outcomes["late"]
    assert (gone.code, gone.reason, gone.permanent) == (550, Reason.MAILBOX_UNKNOWN, True)
    assert (nodata.code, nodata.enhanced, nodata.permanent) == (554, "5.7.1", True)
    assert (late.code, late.permanent) == (451, False)
    assert outcomes["one"].code == outcomes["two"].code == 250
    bodies = [w for w in writes if w.endswith(b"\r\n.\r\n")]
    # one, late and two carried a body; gone and nodata only their commands and RSET
    assert len(bodies) == 3
    assert writes.count(b"RSET\r\n") == 3
    assert b"Hello" not in b"".join(writes[2:6])


async def test_without_pipelining_each_command_waits_for_its_reply_and_refusals_are_unchanged(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    with Sink(certs=certs, hostname=MX, pipelining=False) as sink:
        sink.script("gone@*", "550 5.1.1 no such user")
        async with await connect(sink.port, contexts) as session:
            assert "PIPELINING" not in session.extensions
            writes = record_writes(session)
            with pytest.raises(SMTPReplyError) as caught:
                await session.send("a@sender.test", "gone@d.test", MESSAGE)
            await session.send("a@sender.test", "b@d.test", MESSAGE)
        assert len(await sink.await_messages(1)) == 1
    assert caught.value.reason is Reason.MAILBOX_UNKNOWN
    verbs = [w.split(b" ")[0].split(b":")[0].strip() for w in writes]
    assert verbs[:6] == [b"MAIL", b"RCPT", b"RSET", b"MAIL", b"RCPT", b"DATA"]
    assert writes[6].endswith(b"\r\n.\r\n")
    assert writes[7:] == [b"QUIT\r\n"]


@asynccontextmanager
async def tls_server(
    certs: TestCerts, pieces: list[list[bytes]], *, injected: bytes = b"", pipelining: bool = True
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A STARTTLS server that, after its EHLO, answers each read of a
    client's commands with the next list of ``pieces``, each piece written
    and sent on its own (one TCP segment each, or all joined when the list
    has one item). ``injected`` follows the 220 to STARTTLS in plaintext.
    Yields its port and what it read after TLS."""
    context = TestCerts.server_context(certs.issue([MX, "127.0.0.1"]))
    seen: list[bytes] = []
    ehlo = b"250-mx.sink.test\r\n250-SIZE 1000000\r\n" + (b"250-PIPELINING\r\n" * pipelining)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"220 mx.sink.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mx.sink.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n" + injected)
        await writer.drain()
        await writer.start_tls(context)
        await reader.readline()
        writer.write(ehlo + b"250 8BITMIME\r\n")
        for answer in pieces:
            seen.append(await reader.read(65536))
            for piece in answer:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.02)
        seen.append(await reader.read(65536))
        writer.write(b"221 bye\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], seen


REPLIES = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"
SPLITS = {
    "joined in one segment": [REPLIES],
    "a reply split across segments": [REPLIES[:5], REPLIES[5:20], REPLIES[20:33], REPLIES[33:]],
    "a byte per segment": [REPLIES[i : i + 1] for i in range(len(REPLIES))],
}


@pytest.mark.parametrize("split", SPLITS)
async def test_replies_split_across_or_joined_within_segments_are_matched_in_order(
    split: str, certs: TestCerts, contexts: TLSContexts
) -> None:
    pieces = [SPLITS[split], [b"250 2.0.0 queued as ", b"X1\r\n"]]
    async with tls_server(certs, pieces) as (port, seen):
        session = await connect(port, contexts)
        reply = await session.send("a@sender.test", "b@d.test", MESSAGE)
        await session.close()
    assert (reply.code, reply.text) == (250, "queued as X1")
    assert seen[0].count(b"\r\n") == 3  # MAIL, RCPT and DATA arrived together


async def test_354_after_a_refused_rcpt_gets_the_lone_dot_and_no_body(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    refused = [b"250 2.1.0 ok\r\n550 5.1.1 no such user\r\n354 go\r\n"]
    pieces = [refused, [b"554 5.5.1 no valid recipients\r\n"], [b"250 2.0.0 reset\r\n"]]
    async with tls_server(certs, pieces) as (port, seen):
        session = await connect(port, contexts)
        with pytest.raises(SMTPReplyError) as caught:
            await session.send("a@sender.test", "gone@d.test", MESSAGE)
        assert session.usable
        await session.close()
    assert (caught.value.code, caught.value.enhanced) == (550, "5.1.1")
    assert seen[1] == b".\r\n"
    assert seen[2] == b"RSET\r\n"


async def test_plaintext_injected_after_starttls_is_ignored_and_only_the_ehlo_under_tls_counts(
    certs: TestCerts, contexts: TLSContexts
) -> None:
    """The EHLO before TLS offered PIPELINING and a man in the middle put a
    fake reply after the 220; the EHLO under TLS does not offer it, so the
    commands go one at a time and the injected line pairs with nothing."""
    pieces = [[b"250 2.1.0 ok\r\n"], [b"250 2.1.5 ok\r\n"], [b"354 go\r\n"], [b"250 2.0.0 ok\r\n"]]
    injected = b"250-fake\r\n250 PIPELINING\r\n550 5.1.1 injected\r\n"
    async with tls_server(certs, pieces, injected=injected, pipelining=False) as (port, seen):
        session = await connect(port, contexts)
        assert "PIPELINING" not in session.extensions
        reply = await session.send("a@sender.test", "b@d.test", MESSAGE)
        await session.close()
    assert reply.code == 250
    assert [s.split(b":")[0] for s in seen[:3]] == [b"MAIL FROM", b"RCPT TO", b"DATA\r\n"]


async def test_the_aiosmtplib_internals_the_reply_reader_uses_are_still_there() -> None:
    """aiosmtplib is capped below its next minor version because
    mailer.delivery.pipeline uses these private names; this fails first if
    a release renames them."""
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    with left, right:
        transport, protocol = await loop.create_connection(SMTPProtocol, sock=left)
        for name in PRIVATE_NAMES:
            assert hasattr(protocol, name), name
        assert isinstance(protocol._buffer, bytearray)
        assert "data_received" not in vars(protocol)
        with PipelinedReplies(protocol) as replies:
            right.sendall(b"250 a\r\n250-b\r\n")
            assert (await replies.next()).message == "a"
            right.sendall(b"250 c\r\n421 d\r\n")
            assert (await replies.next()).message == "b\nc"
            assert replies.pending == 1
            assert (await replies.next()).code == 421
        assert "data_received" not in vars(protocol)
        transport.close()


_LINE = st.sampled_from([b"", b".", b"..x", b"a.b", b"QUJD", b" x", b"\r", b"\n", b"=2E"])
_END = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b""])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.tuples(_LINE, _END), max_size=12))
def test_message_payload_is_what_aiosmtplibs_own_data_sends(
    lines: list[tuple[bytes, bytes]],
) -> None:
    data = b"".join(line + end for line, end in lines)
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert message_payload(data) == expected


def test_a_composed_message_goes_on_the_wire_as_it_is() -> None:
    data = b"From: a@b.test\r\nSubject: x\r\n\r\nQUJD\r\n.\r\n"
    assert message_payload(data) == b"From: a@b.test\r\nSubject: x\r\n\r\nQUJD\r\n..\r\n.\r\n"
    clean = b"From: a@b.test\r\n\r\nQUJD\r\n"
    assert message_payload(clean) == clean + b".\r\n"
