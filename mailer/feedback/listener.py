"""The inbound SMTP listener for returned mail (aiosmtpd).

It takes the null sender ``<>`` (every bounce uses it), accepts RCPT only
for the bounce domains and the feedback-loop addresses (550 5.1.1
otherwise), limits message size (552) and concurrent sessions (421), and
offers STARTTLS without requiring it: RFC 3207 §4 says a publicly
referenced server must not require it, and a bounce is worth more than
its secrecy. It answers 250 only after the raw message is durable in the
store; parsing and matching come after (mailer.feedback.processor), so a
crash between the two loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.errors import StoreError
from mailer.store.base import Store
from mailer.store.models import NewInbound

log = logging.getLogger(__name__)

__all__ = ["InboundListener"]


class _Handler:
    def __init__(self, listener: InboundListener) -> None:
        self._listener = listener

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self._listener.accepts(address):
            return f"550 5.1.1 <{address}>: no such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if not isinstance(raw, bytes):
            raw = (raw or "").encode("utf-8", "surrogateescape")
        peer = session.peer
        # aiosmtpd keeps the null reverse path of bounces as "<>"
        mail_from = envelope.mail_from or ""
        message = NewInbound(
            mail_from="" if mail_from == "<>" else mail_from,
            recipients=tuple(envelope.rcpt_tos),
            raw=raw,
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or ""),
            tls=session.ssl is not None,
        )
        try:
            inbound_id = await self._listener.commit(message)
        except StoreError as exc:
            log.warning("inbound message not stored: %s", exc)
            # the sender keeps it and tries again: nothing is lost
            return "451 4.3.0 cannot store the message now, try again later"
        self._listener.stored += 1
        if isinstance(server, _InboundSMTP):
            server.stored_here += 1
        return f"250 2.0.0 stored as {inbound_id}"


class _GroupCommit:
    """Stores the messages of concurrent sessions together: while one
    transaction commits, the next ones queue and go in the following one.
    Each session still gets its 250 only once its own message is durable;
    a commit (an fsync) is paid per batch instead of per message."""

    def __init__(self, store: Store, clock: Callable[[], float], max_batch: int = 64) -> None:
        self._store = store
        self._clock = clock
        self._max = max_batch
        self._queue: list[tuple[NewInbound, asyncio.Future[str]]] = []
        self._task: asyncio.Task[None] | None = None

    async def put(self, message: NewInbound) -> str:
        """Raises StoreError when the batch could not be stored."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            try:
                ids = await self._store.inbound_put([m for m, _ in batch], now=self._clock())
            except StoreError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), inbound_id in zip(batch, ids, strict=True):
                if not future.done():
                    future.set_result(inbound_id)


class _InboundSMTP(SMTP):
    """aiosmtpd's session with a cap on concurrent sessions."""

    def __init__(self, listener: InboundListener, **kw: Any) -> None:
        super().__init__(_Handler(listener), **kw)
        self._listener = listener
        self._counted = False
        # messages this session stored: processing starts when it ends, so
        # a burst of bounces is one batch (and a session cut off after its
        # 250s leaves them stored, for the next start to process)
        self.stored_here = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._counted and self.transport is None:
            if self._listener.sessions >= self._listener.max_sessions:
                # before any SMTP state exists: say why and go
                writer = getattr(transport, "write", None)
                if writer is not None:
                    writer(b"421 4.7.0 too many sessions, try again later\r\n")
                transport.close()
                return
            self._counted = True
            self._listener.sessions += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._listener.sessions -= 1
        if self.stored_here:
            self.stored_here = 0
            self._listener.on_stored()
        if self.session is not None:  # a refused connection never had one
            super().connection_lost(error)


class InboundListener:
    """``await listener.start()`` listens on ``host:port``; ``port`` 0 picks
    a free one (read it back from ``port``). ``accept_domains`` are the
    bounce domains, ``accept_addresses`` the feedback-loop addresses
    (lower-case). ``tls`` None: STARTTLS is not offered."""

    def __init__(
        self,
        store: Store,
        *,
        host: str,
        port: int,
        accept_domains: frozenset[str],
        accept_addresses: frozenset[str] = frozenset(),
        tls: ssl.SSLContext | None = None,
        hostname: str = "localhost",
        max_size: int = 5 * 1024 * 1024,
        max_sessions: int = 100,
        on_stored: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.accept_domains = accept_domains
        self.accept_addresses = accept_addresses
        self.tls = tls
        self.hostname = hostname
        self.max_size = max_size
        self.max_sessions = max_sessions
        self.on_stored = on_stored
        self.clock = clock
        self.sessions = 0
        self.stored = 0
        self._commits = _GroupCommit(store, clock)
        self._server: asyncio.Server | None = None

    async def commit(self, message: NewInbound) -> str:
        """Store ``message`` durably (with those of concurrent sessions);
        its id. Raises StoreError."""
        return await self._commits.put(message)

    def accepts(self, address: str) -> bool:
        """Whether RCPT TO ``address`` is ours to take."""
        address = address.strip().strip("<>").lower()
        local, sep, domain = address.rpartition("@")
        if not sep or not local:
            return False
        return domain in self.accept_domains or address in self.accept_addresses

    def _protocol(self) -> SMTP:
        return _InboundSMTP(
            self,
            hostname=self.hostname,
            ident="mailer-inbound",
            tls_context=self.tls,
            require_starttls=False,
            data_size_limit=self.max_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            loop=asyncio.get_running_loop(),
        )

    async def start(self) -> None:
        """Raises OSError when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
