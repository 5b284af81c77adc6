"""The sink reads mail data in pieces rather than line by line: what it
takes from a DATA command, and what it answers, must be what aiosmtpd's own
reader would, whatever the data and however TCP cuts it."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as ServerSession
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.sink.runner import Sink, pick_port
from mailer.sink.smtpd import _Data


@dataclass
class _Keep:
    """aiosmtpd's own DATA handling, for comparison."""

    contents: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: ServerSession, envelope: Envelope) -> str:
        self.contents.append(envelope.original_content or b"")
        return "250 OK"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Sink, Controller, _Keep]]:
    keep = _Keep()
    reference = Controller(keep, hostname="127.0.0.1", port=pick_port(("127.0.0.1",)))
    reference.start()
    try:
        with Sink(starttls=False) as sink:
            yield sink, reference, keep
    finally:
        reference.stop()


def _line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed after {line!r}")
        line += chunk
    return line


def _read_reply(sock: socket.socket) -> bytes:
    """One whole reply (multi-line replies end with 'NNN ')."""
    while True:
        line = _line(sock)
        if line[3:4] != b"-":
            return line


def transact(host: str, port: int, pieces: list[bytes]) -> tuple[bytes, bytes]:
    """MAIL, RCPT, DATA, then ``pieces`` written one by one (with a pause, so
    the server reads them apart), then RSET; returns the reply to the data
    and to RSET (the session must still be in step)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _read_reply(sock)
        for command in (b"EHLO client.test", b"MAIL FROM:<a@x.test>", b"RCPT TO:<b@y.test>"):
            sock.sendall(command + b"\r\n")
            assert _read_reply(sock)[:1] == b"2"
        sock.sendall(b"DATA\r\n")
        assert _read_reply(sock)[:3] == b"354"
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)
        answer = _read_reply(sock)
        sock.sendall(b"RSET\r\n")
        after = _read_reply(sock)
        sock.sendall(b"QUIT\r\n")
        _read_reply(sock)
    return answer, after


def cut(data: bytes, points: list[int]) -> list[bytes]:
    marks = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(marks) if b > a]


_LINE = st.one_of(
    st.sampled_from([b"", b".", b"..", b".x", b"x.", b" .", b"\t", b"a\rb", b"a\nb", b"\r"]),
    st.binary(max_size=40).map(lambda b: b.replace(b"\r\n", b"")),
    st.integers(990, 1010).map(lambda n: b"L" * n),  # around aiosmtpd's line limit
    st.integers(1, 5).map(lambda n: b"." * n + b"\r"),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(_LINE, max_size=12), points=st.lists(st.integers(0, 20_000), max_size=6))
def test_sink_takes_and_answers_data_as_aiosmtpd_does(
    servers: tuple[Sink, Controller, _Keep], lines: list[bytes], points: list[int]
) -> None:
    sink, reference, keep = servers
    # a body of CRLF lines, dot-stuffed as a client sends it, then the dot line
    stuffed = b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines)
    pieces = cut(stuffed + b".\r\n", points)
    before_sink, before_reference = len(sink.messages), len(keep.contents)

    ours = transact(sink.host, sink.port, pieces)
    theirs = transact(reference.hostname, reference.port, pieces)

    assert ours[0][:3] == theirs[0][:3]
    assert ours[1][:3] == theirs[1][:3] == b"250"
    accepted = ours[0][:3] == b"250"
    assert len(sink.messages) - before_sink == int(accepted)
    assert len(keep.contents) - before_reference == int(accepted)
    if accepted:
        assert sink.messages[-1].data == keep.contents[-1]


def test_dot_lines_inside_lines_and_after_them_do_not_end_the_data(
    servers: tuple[Sink, Controller, _Keep],
) -> None:
    sink = servers[0]
    pieces = [b"ends with a dot.\r", b"\n..leading dot\r\n", b".", b"\r\n"]
    assert transact(sink.host, sink.port, pieces)[0][:3] == b"250"
    assert sink.messages[-1].data == b"ends with a dot.\r\n.leading dot\r\n"


def test_a_message_over_the_size_limit_is_refused_and_not_kept() -> None:
    data = _Data(size_limit=10, line_limit=1001)
    assert not data.add(b"0123456789\r\n")
    assert data.add(b"more\r\n.\r\n")
    assert data.content() == "552"


def test_a_long_line_before_the_size_limit_is_what_is_refused() -> None:
    data = _Data(size_limit=1500, line_limit=1001)
    assert not data.add(b"L" * 1200 + b"\r\n" + b"x" * 400)
    assert data.add(b"\r\n.\r\n")
    assert data.content() == "500"


def test_empty_data_is_an_empty_message() -> None:
    data = _Data(size_limit=None, line_limit=1001)
    assert data.add(b".\r\n")
    assert data.content() == b""
