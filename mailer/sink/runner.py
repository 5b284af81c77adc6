"""An SMTP sink for tests, benchmarks and local development: aiosmtpd with
STARTTLS, recording what it receives, with scripted failures.

:class:`Sink` runs its own event loop in a background thread (like
``aiosmtpd.controller.Controller``), so it serves sync tests, async tests and
worker subprocesses alike. Several sinks can listen on different loopback
addresses with the same port (:func:`pick_port`), as the engine delivers to
every MX on one configured port.

In the foreground it is ``mailer sink --no-checks`` (the developer sink
over this one, recording only). It runs on the service's event loop (uvloop
where installed), as the engine does: in ``mailer bench`` the sink shares
the machine's cores with the engine, and on asyncio's own loop it takes
more CPU per message (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from types import TracebackType

from mailer import loop as service_loop
from mailer.dev.certs import CertFiles, TestCerts
from mailer.loop import ServerThread
from mailer.sink.control import FaultControl
from mailer.sink.faults import Faults
from mailer.sink.record import SinkMessage
from mailer.sink.smtpd import (
    MessageHook,
    Recorder,
    Refusal,
    RefusalHook,
    Server,
    Transaction,
)

__all__ = [
    "Refusal",
    "Sink",
    "Transaction",
    "certificate_names",
    "pick_port",
]

LOOPBACKS = tuple(f"127.0.0.{i}" for i in range(1, 10))


def certificate_names(hostname: str, host: str) -> list[str]:
    """The names a sink's certificate is issued for: its ``hostname``,
    "localhost" and the loopback addresses it answers on."""
    return list(dict.fromkeys([hostname, "localhost", "127.0.0.1", host]))


def _default_tls(hostname: str, host: str, certs: TestCerts) -> ssl.SSLContext:
    return TestCerts.server_context(certs.issue(certificate_names(hostname, host)))


class Sink(FaultControl):
    """A recording SMTP server on a background thread, with the faults of
    :class:`~mailer.sink.control.FaultControl` (``set_faults``, ``script``).

    ``certs`` supplies the certificate (issued for ``hostname``,
    "localhost" and the listening address); ``tls_cert`` overrides it with
    given files (e.g. ``certs.expired(...)``). ``keep=False`` records no
    messages (long benchmarks). ``on_message`` and ``on_refusal`` are called
    on the sink's own thread for each accepted message and each reply the
    sink refused on purpose (scripts, greylisting, temporary failures); they
    must return quickly. ``faults`` are the faults it starts with
    (``starttls=False`` and ``pipelining=False`` are the same as
    ``no_starttls`` and ``no_pipelining`` there).
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
        on_message: MessageHook | None = None,
        on_refusal: RefusalHook | None = None,
        pipelining: bool = True,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        faults = (faults or Faults()).replace(
            no_starttls=not starttls or (faults is not None and faults.no_starttls),
            no_pipelining=not pipelining or (faults is not None and faults.no_pipelining),
        )
        self._starttls = not faults.no_starttls
        self._owned_certs: TestCerts | None = None
        self.certs = certs
        self._tls_cert = tls_cert
        self._recorder = Recorder(keep)
        self._recorder.can_starttls = self._starttls
        self._recorder.set_faults(faults)
        self._on_message = on_message
        self._on_refusal = on_refusal
        self._server: ServerThread | None = None

    @property
    def messages(self) -> list[SinkMessage]:
        with self._recorder.changed:
            return list(self._recorder.messages)

    def _fault_recorder(self) -> Recorder:
        return self._recorder

    @property
    def dropped(self) -> list[SinkMessage]:
        """Messages read by a DATA that the ``drop_after_data`` fault cut off."""
        with self._recorder.changed:
            return list(self._recorder.dropped)

    @property
    def transactions(self) -> list[Transaction]:
        with self._recorder.changed:
            return list(self._recorder.transactions)

    @property
    def refusals(self) -> list[Refusal]:
        """Every 4xx/5xx reply the sink gave on purpose, oldest first."""
        with self._recorder.changed:
            return list(self._recorder.refusals)

    @property
    def connections(self) -> int:
        with self._recorder.changed:
            return self._recorder.connections

    def clear(self) -> None:
        """Forget recorded messages, transactions, refusals and the
        connection count."""
        with self._recorder.changed:
            self._recorder.messages.clear()
            self._recorder.dropped.clear()
            self._recorder.transactions.clear()
            self._recorder.refusals.clear()
            self._recorder.connections = 0

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:
        """Block until ``count`` messages are recorded; return them all.

        Raises TimeoutError if they do not arrive within ``timeout`` seconds.
        """
        recorder = self._recorder
        with recorder.changed:
            if not recorder.changed.wait_for(lambda: len(recorder.messages) >= count, timeout):
                got = len(recorder.messages)
                raise TimeoutError(f"sink got {got} of {count} messages in {timeout}s")
            return list(recorder.messages)

    async def await_messages(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:  # noqa: ASYNC109
        """:meth:`wait_for` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    def start(self) -> Sink:
        """Bind and serve. Raises OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("sink already started")
        tls: ssl.SSLContext | None = None
        if self._starttls:
            if self._tls_cert is not None:
                tls = TestCerts.server_context(self._tls_cert)
            else:
                if self.certs is None:
                    self.certs = self._owned_certs = TestCerts()
                tls = _default_tls(self.hostname, self.host, self.certs)
        server = Server(
            self.host,
            self.port,
            self._recorder,
            tls=tls,
            hostname=self.hostname,
            on_message=self._on_message,
            on_refusal=self._on_refusal,
        )
        thread = ServerThread(
            f"sink-{self.host}", server.listen, server.close, new_loop=service_loop.loop_factory()
        )
        thread.start()
        self._server = thread
        self.port = server.port
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, remove owned certificates."""
        if self._server is not None:
            self._server.stop()
            self._server = None
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
