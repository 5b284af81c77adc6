"""An SMTP sink for tests, benchmarks and local development: aiosmtpd with
STARTTLS, recording what it receives, with scripted failures.

:class:`Sink` runs its own event loop in a background thread (like
``aiosmtpd.controller.Controller``), so it serves sync tests, async tests and
worker subprocesses alike. Several sinks can listen on different loopback
addresses with the same port (:func:`pick_port`), as the engine delivers to
every MX on one configured port.

``python -m mailer.testing.sink --listen 127.0.0.1:2525 [--no-starttls]``
runs sinks in the foreground until SIGTERM/SIGINT, printing one line per
message without keeping or parsing it.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.message
import email.policy
import fnmatch
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO, cast

from aiosmtpd.smtp import SMTP, Envelope
from aiosmtpd.smtp import Session as ServerSession

from mailer.testing.certs import CertFiles, TestCerts

__all__ = ["Received", "Sink", "Transaction", "main", "pick_port"]

LOOPBACKS = tuple(f"127.0.0.{i}" for i in range(1, 10))
_REPLY = re.compile(r"[2-5][0-9][0-9](?: .*)?")
_STAGES = ("rcpt", "data")


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls_version: str | None
    peer: str
    received_at: float

    @property
    def message(self) -> email.message.EmailMessage:
        """The message parsed with ``email.policy.default``; CRLF line ends
        become ``\\n`` so decoded text compares like Python strings."""
        return email.message_from_bytes(
            self.data.replace(b"\r\n", b"\n"), policy=email.policy.default
        )


@dataclass(frozen=True, slots=True)
class Transaction:
    """A MAIL FROM the server saw, and whether TLS was up at that moment."""

    mail_from: str
    tls: bool


@dataclass(slots=True)
class _Script:
    pattern: str
    reply: str
    remaining: int | None
    stage: str


class _Recorder:
    """State shared between the sink's loop thread and its callers."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.changed = threading.Condition()
        self.messages: list[Received] = []
        self.dropped: list[Received] = []
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.scripts: list[_Script] = []
        self.drops = 0

    def reply_for(self, stage: str, recipients: Iterable[str]) -> str | None:
        lowered = [r.lower() for r in recipients]
        with self.changed:
            for script in self.scripts:
                if script.stage != stage:
                    continue
                pattern = script.pattern.lower()
                if any(fnmatch.fnmatchcase(r, pattern) for r in lowered):
                    if script.remaining is not None:
                        script.remaining -= 1
                        if script.remaining <= 0:
                            self.scripts.remove(script)
                    return script.reply
        return None

    def take_drop(self) -> bool:
        with self.changed:
            if self.drops > 0:
                self.drops -= 1
                return True
            return False

    def add(self, items: list[Any], item: Any) -> None:
        with self.changed:
            items.append(item)
            self.changed.notify_all()


class _Handler:
    """aiosmtpd hooks; they run on the sink's loop."""

    def __init__(self, recorder: _Recorder, on_message: Callable[[Received], None] | None) -> None:
        self._recorder = recorder
        self._on_message = on_message

    async def handle_MAIL(
        self,
        server: SMTP,
        session: ServerSession,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        recorder = self._recorder
        recorder.add(recorder.transactions, Transaction(address, session.ssl is not None))
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: ServerSession,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._recorder.reply_for("rcpt", (address,))
        if reply is not None:
            return _scripted(server, reply)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: ServerSession, envelope: Envelope) -> str:
        recorder = self._recorder
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            tls_version=session.ssl["ssl_object"].version() if session.ssl else None,
            peer=_peer(session.peer),
            received_at=time.time(),
        )
        if recorder.take_drop():
            recorder.add(recorder.dropped, received)
            cast(asyncio.Transport, server.transport).abort()
            # connection_lost() cancels this task; no reply is ever written.
            await asyncio.sleep(3600)
        reply = recorder.reply_for("data", received.rcpt_tos)
        if reply is not None:
            return _scripted(server, reply)
        if recorder.keep:
            recorder.add(recorder.messages, received)
        if self._on_message is not None:
            self._on_message(received)
        return "250 2.0.0 OK queued"


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


def _scripted(server: SMTP, reply: str) -> str:
    if reply.startswith("421"):
        # 421 means the server is closing the channel (RFC 5321 §3.8).
        assert server.transport is not None
        server.loop.call_soon(server.transport.close)
    return reply


class _SinkSMTP(SMTP):
    """Counts accepted connections and remembers their raw transports so a
    stopping sink can cut them."""

    def __init__(self, handler: _Handler, open_transports: set[asyncio.Transport], **kw: Any):
        super().__init__(handler, **kw)
        self._open = open_transports
        self._raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw is None:  # a second call comes after STARTTLS
            self._raw = cast(asyncio.Transport, transport)
            self._open.add(self._raw)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._raw is not None:
            self._open.discard(self._raw)
        super().connection_lost(error)


class _Server:
    """One listening socket on the current loop."""

    def __init__(
        self,
        host: str,
        port: int,
        recorder: _Recorder,
        *,
        tls: ssl.SSLContext | None,
        hostname: str,
        on_message: Callable[[Received], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._recorder = recorder
        self.tls = tls
        self._hostname = hostname
        self._handler = _Handler(recorder, on_message)
        self._open: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        with self._recorder.changed:
            self._recorder.connections += 1
        return _SinkSMTP(
            self._handler,
            self._open,
            hostname=self._hostname,
            ident="mailer-sink",
            tls_context=self.tls,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._open):
            transport.abort()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def _default_tls(hostname: str, host: str, certs: TestCerts) -> ssl.SSLContext:
    names = list(dict.fromkeys([hostname, "localhost", "127.0.0.1", host]))
    return TestCerts.server_context(certs.issue(names))


class Sink:
    """A recording SMTP server on a background thread.

    ``certs`` supplies the certificate (issued for ``hostname``,
    "localhost" and the listening address); ``tls_cert`` overrides it with
    given files (e.g. ``certs.expired(...)``). ``keep=False`` records no
    messages (long benchmarks).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        starttls: bool = True,
        certs: TestCerts | None = None,
        hostname: str = "mx.sink.test",
        tls_cert: CertFiles | None = None,
        keep: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self._starttls = starttls
        self._owned_certs: TestCerts | None = None
        self.certs = certs
        self._tls_cert = tls_cert
        self._recorder = _Recorder(keep)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None

    @property
    def messages(self) -> list[Received]:
        with self._recorder.changed:
            return list(self._recorder.messages)

    @property
    def dropped(self) -> list[Received]:
        """Messages read by a DATA that :meth:`drop_after_data` cut off."""
        with self._recorder.changed:
            return list(self._recorder.dropped)

    @property
    def transactions(self) -> list[Transaction]:
        with self._recorder.changed:
            return list(self._recorder.transactions)

    @property
    def connections(self) -> int:
        with self._recorder.changed:
            return self._recorder.connections

    def script(
        self, pattern: str, reply: str, *, times: int | None = None, stage: str = "rcpt"
    ) -> None:
        """Answer recipients matching ``pattern`` (fnmatch, case-insensitive)
        with ``reply`` at ``stage`` ("rcpt", or "data" after the message),
        ``times`` times or forever. A 421 reply also closes the connection.

        Raises ValueError for a malformed reply or unknown stage.
        """
        if not _REPLY.fullmatch(reply):
            raise ValueError(f"reply must look like '550 5.1.1 text', got {reply!r}")
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
        if times is not None and times < 1:
            raise ValueError("times must be positive or None")
        with self._recorder.changed:
            self._recorder.scripts.append(_Script(pattern, reply, times, stage))

    def clear_scripts(self) -> None:
        with self._recorder.changed:
            self._recorder.scripts.clear()
            self._recorder.drops = 0

    def drop_after_data(self, count: int = 1) -> None:
        """Read the next ``count`` messages, then close without replying."""
        with self._recorder.changed:
            self._recorder.drops += count

    def clear(self) -> None:
        """Forget recorded messages, transactions and the connection count."""
        with self._recorder.changed:
            self._recorder.messages.clear()
            self._recorder.dropped.clear()
            self._recorder.transactions.clear()
            self._recorder.connections = 0

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Block until ``count`` messages are recorded; return them all.

        Raises TimeoutError if they do not arrive within ``timeout`` seconds.
        """
        recorder = self._recorder
        with recorder.changed:
            if not recorder.changed.wait_for(lambda: len(recorder.messages) >= count, timeout):
                got = len(recorder.messages)
                raise TimeoutError(f"sink got {got} of {count} messages in {timeout}s")
            return list(recorder.messages)

    async def await_messages(self, count: int, timeout: float = 10.0) -> list[Received]:  # noqa: ASYNC109
        """:meth:`wait_for` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    def start(self) -> Sink:
        """Bind and serve. Raises OSError if the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("sink already started")
        tls: ssl.SSLContext | None = None
        if self._starttls:
            if self._tls_cert is not None:
                tls = TestCerts.server_context(self._tls_cert)
            else:
                if self.certs is None:
                    self.certs = self._owned_certs = TestCerts()
                tls = _default_tls(self.hostname, self.host, self.certs)
        server = _Server(self.host, self.port, self._recorder, tls=tls, hostname=self.hostname)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(server, ready), name=f"sink-{self.host}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._failure is not None:
            self._thread.join()
            self._thread = None
            raise self._failure
        self.port = server.port
        return self

    def _run(self, server: _Server, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.listen())
        except BaseException as exc:
            self._failure = exc
            loop.close()
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.close())
        loop.close()

    def stop(self) -> None:
        """Stop serving, cut open connections, remove owned certificates."""
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._thread = None
        if self._owned_certs is not None:
            self._owned_certs.close()
            self._owned_certs = self.certs = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Sink:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)


def pick_port(hosts: Iterable[str] = LOOPBACKS, attempts: int = 50) -> int:
    """A port that is free on every address in ``hosts`` right now.

    Another process may take it before it is bound again; tests bind at once.
    Raises OSError if no such port was found in ``attempts`` tries.
    """
    hosts = list(hosts)
    for _ in range(attempts):
        probes: list[socket.socket] = []
        try:
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(first)
            first.bind((hosts[0], 0))
            port: int = first.getsockname()[1]
            for host in hosts[1:]:
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                probes.append(probe)
                probe.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise OSError(f"no port free on all of {hosts}")


class _Lines:
    """One line per message on a stream, flushed a few times a second rather
    than per line (thousands of messages per second in benchmarks)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._flush_pending = False

    def __call__(self, received: Received) -> None:
        self._stream.write(
            f"{received.received_at:.3f} {received.peer} {received.tls_version or 'plain'} "
            f"from=<{received.mail_from}> to=<{','.join(received.rcpt_tos)}> "
            f"bytes={len(received.data)}\n"
        )
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_later(0.2, self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        self._stream.flush()


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def _serve(args: argparse.Namespace) -> None:
    recorder = _Recorder(keep=False)
    printer = None if args.quiet else _Lines(sys.stdout)
    with TestCerts() as certs:
        servers = []
        for host, port in args.listen:
            tls = None if args.no_starttls else _default_tls(args.hostname, host, certs)
            servers.append(
                _Server(host, port, recorder, tls=tls, hostname=args.hostname, on_message=printer)
            )
        for server in servers:
            await server.listen()
            starttls = server.tls is not None
            print(f"listening on {server.host}:{server.port} starttls={starttls}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        for server in servers:
            await server.close()
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run sinks in the foreground until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m mailer.testing.sink", description=__doc__)
    parser.add_argument(
        "--listen", type=_parse_listen, action="append", required=True, metavar="HOST:PORT"
    )
    parser.add_argument("--no-starttls", action="store_true", help="do not offer STARTTLS")
    parser.add_argument("--hostname", default="mx.sink.test", help="name in greeting and cert")
    parser.add_argument("--quiet", action="store_true", help="no line per message")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
