"""The SMTP server inside :class:`mailer.sink.runner.Sink`: aiosmtpd hooks,
the state they share with the sink's callers, and the fault rehearsal they
apply (scripted replies, greylisting, a temporary-failure rate, dropping the
connection after DATA, slow banner and replies).

Everything here runs on the sink's own event loop; :class:`Recorder` is the
only state touched from other threads, always under its condition's lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, Envelope, TLSSetupException
from aiosmtpd.smtp import Session as ServerSession

from mailer.sink.faults import Faults
from mailer.sink.record import SinkMessage

__all__ = [
    "GREYLIST_REPLY",
    "STAGES",
    "TEMPFAIL_REPLY",
    "MessageHook",
    "Recorder",
    "Refusal",
    "RefusalHook",
    "Server",
    "Transaction",
    "check_reply",
]

# "data-command" answers the DATA command itself (no 354); "data" answers
# after the message.
STAGES = ("rcpt", "data-command", "data")
GREYLIST_REPLY = "451 4.7.1 greylisted, try again later (rehearsal)"
TEMPFAIL_REPLY = "451 4.3.0 temporary failure (rehearsal)"
_REPLY = re.compile(r"[2-5][0-9][0-9](?: .*)?")
# A path whose mailbox is a plain dot-atom (RFC 5321 §4.1.2), with what follows
# it (ESMTP parameters; the blanks after '>' go, as aiosmtpd drops them).
# Any other form goes to aiosmtpd's own parser.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(
    rf"[ \t]*<({_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})*)>[ \t]*+(?![(\r\n])(.*)",
    re.DOTALL,
)


def check_reply(reply: str) -> str:
    """Return ``reply`` if it is one SMTP reply line ('550 5.1.1 text').

    Raises ValueError otherwise (also for CR/LF, which would end the line).
    """
    if not _REPLY.fullmatch(reply) or "\r" in reply or "\n" in reply:
        raise ValueError(f"reply must look like '550 5.1.1 text', got {reply!r}")
    return reply


@dataclass(frozen=True, slots=True)
class Transaction:
    """A MAIL FROM the server saw, and whether TLS was up at that moment."""

    mail_from: str
    tls: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 4xx/5xx the sink answered on purpose, and why (``cause``:
    "script", "greylist" or "tempfail")."""

    stage: str
    mail_from: str
    recipients: tuple[str, ...]
    reply: str
    cause: str
    at: float


@dataclass(slots=True)
class _Script:
    pattern: str
    reply: str
    remaining: int | None
    stage: str


class Recorder:
    """State shared between the sink's loop thread and its callers."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.changed = threading.Condition()
        self.messages: list[SinkMessage] = []
        self.dropped: list[SinkMessage] = []
        self.transactions: list[Transaction] = []
        self.refusals: list[Refusal] = []
        self.connections = 0
        self.scripts: list[_Script] = []
        self.faults = Faults()
        # what the faults remember between deliveries: the pairs greylisted
        # so far and the draws of the temporary-failure rate
        self.greylisted: set[tuple[str, str]] = set()
        self.rng = random.Random()
        # False when the server has no certificate: STARTTLS cannot be offered
        self.can_starttls = True

    def set_faults(self, faults: Faults) -> None:
        """Apply ``faults`` (validated already) from now on; a new seed or
        rate starts a new sequence of draws, greylisting turned off forgets
        the pairs it saw."""
        with self.changed:
            old, self.faults = self.faults, faults
            if (old.tempfail_rate, old.seed) != (faults.tempfail_rate, faults.seed):
                self.rng = random.Random(faults.seed)
            if not faults.greylist:
                self.greylisted.clear()

    def add_script(self, pattern: str, reply: str, times: int | None, stage: str) -> None:
        with self.changed:
            self.scripts.append(_Script(pattern, reply, times, stage))

    def remove_script(self, pattern: str, reply: str, stage: str) -> None:
        with self.changed:
            self.scripts = [
                s for s in self.scripts if (s.pattern, s.reply, s.stage) != (pattern, reply, stage)
            ]

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

    def fault_for(self, mail_from: str, recipient: str) -> tuple[str, str] | None:
        """Greylisting, then the temporary-failure rate: (reply, cause) or None."""
        with self.changed:
            faults = self.faults
            if faults.greylist:
                key = (mail_from.lower(), recipient.lower())
                if key not in self.greylisted:
                    self.greylisted.add(key)
                    return GREYLIST_REPLY, "greylist"
            if faults.tempfail_rate > 0 and self.rng.random() < faults.tempfail_rate:
                return TEMPFAIL_REPLY, "tempfail"
        return None

    def delays(self) -> tuple[float, float]:
        with self.changed:
            return self.faults.slow_banner, self.faults.slow_replies

    def take_drop(self) -> bool:
        with self.changed:
            left = self.faults.drop_after_data
            if left > 0:
                self.faults = dataclasses.replace(self.faults, drop_after_data=left - 1)
                return True
            return False

    def add(self, items: list[Any], item: Any) -> None:
        with self.changed:
            items.append(item)
            self.changed.notify_all()


# May refuse the message: a reply (4xx) instead of 250, e.g. when the
# caller's backlog is full; None accepts it.
MessageHook = Callable[[SinkMessage], str | None]
RefusalHook = Callable[[Refusal], None]


class _Handler:
    """aiosmtpd hooks; they run on the sink's loop."""

    def __init__(
        self,
        recorder: Recorder,
        on_message: MessageHook | None,
        on_refusal: RefusalHook | None,
    ) -> None:
        self._recorder = recorder
        self._on_message = on_message
        self._on_refusal = on_refusal

    async def handle_EHLO(
        self,
        server: SMTP,
        session: ServerSession,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        # aiosmtpd reads one command line at a time and answers in order,
        # which is all RFC 2920 asks of a server; it just does not say so.
        session.host_name = hostname
        with self._recorder.changed:
            pipelining = not self._recorder.faults.no_pipelining
        if pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    def refuse(
        self,
        server: SMTP,
        stage: str,
        mail_from: str,
        recipients: tuple[str, ...],
        reply: str,
        cause: str = "script",
    ) -> str:
        """Record a refusal given on purpose and return its reply; a 421
        also closes the connection."""
        refusal = Refusal(stage, mail_from, recipients, reply, cause, time.time())
        self._recorder.add(self._recorder.refusals, refusal)
        if self._on_refusal is not None:
            self._on_refusal(refusal)
        if reply.startswith("421"):
            # 421 means the server is closing the channel (RFC 5321 §3.8).
            assert server.transport is not None
            server.loop.call_soon(server.transport.close)
        return reply

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
        mail_from = envelope.mail_from or ""
        reply = self._recorder.reply_for("rcpt", (address,))
        if reply is not None:
            return self.refuse(server, "rcpt", mail_from, (address,), reply, "script")
        fault = self._recorder.fault_for(mail_from, address)
        if fault is not None:
            return self.refuse(server, "rcpt", mail_from, (address,), *fault)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: ServerSession, envelope: Envelope) -> str:
        recorder = self._recorder
        received = SinkMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or b"",
            tls_version=session.ssl["ssl_object"].version() if session.ssl else None,
            peer=_peer(session.peer),
            received_at=time.time(),
            tls_cipher=session.ssl["cipher"][0] if session.ssl and session.ssl["cipher"] else None,
        )
        if recorder.take_drop():
            recorder.add(recorder.dropped, received)
            cast(asyncio.Transport, server.transport).abort()
            # connection_lost() cancels this task; no reply is ever written.
            await asyncio.sleep(3600)
        reply = recorder.reply_for("data", received.rcpt_tos)
        if reply is not None:
            return self.refuse(
                server, "data", received.mail_from, received.rcpt_tos, reply, "script"
            )
        if self._on_message is not None:
            refused = self._on_message(received)
            if refused is not None:
                return self.refuse(
                    server, "data", received.mail_from, received.rcpt_tos, refused, "backlog"
                )
        if recorder.keep:
            recorder.add(recorder.messages, received)
        return "250 2.0.0 OK queued"


# The end of DATA is a line holding a lone dot (RFC 5321 §4.1.1.4).
_DOT_LINE = b".\r\n"
_END_OF_DATA = b"\r\n.\r\n"


class _Data:
    """The mail data of one DATA command, taken in pieces, with the checks
    aiosmtpd's ``smtp_DATA`` makes line by line made on the whole."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self._size_limit = size_limit
        self._line_limit = line_limit
        self._parts: list[bytes] = []
        self._size = 0
        self._refusal: str | None = None
        # the data begins at the start of a line, as after a CRLF
        self._tail = b"\r\n"

    def add(self, piece: bytes) -> bool:
        """Take the next piece; True once it ends with the lone dot line."""
        ended = piece.endswith(_DOT_LINE) and (self._tail + piece)[-5:] == _END_OF_DATA
        self._tail = (self._tail + piece)[-2:]
        if self._refusal is None:
            self._parts.append(piece)
            self._size += len(piece)
            limit = self._size_limit
            if limit and self._size - len(_DOT_LINE) * ended > limit:
                # too much: nothing more is kept (aiosmtpd's answer to a
                # flood); a line too long before that point is what is said
                data = b"".join(self._parts)[:limit]
                self._refusal = "500" if self._too_long(data) else "552"
                self._parts.clear()
        return ended

    def content(self) -> bytes | str:
        """The data without the dot line and with dots unstuffed, or the
        refusal: "500" for a line over the line limit, "552" over the size
        limit."""
        if self._refusal is not None:
            return self._refusal
        data = b"".join(self._parts)[: -len(_DOT_LINE)]
        if self._too_long(data):
            return "500"
        if data[:1] == b".":
            data = data[1:]
        return data.replace(b"\r\n.", b"\r\n")

    def _too_long(self, data: bytes) -> bool:
        limit = self._line_limit
        return len(data) > limit and max(map(len, data.split(b"\r\n"))) + 2 > limit


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "")


class _SinkSMTP(SMTP):
    """Counts accepted connections, remembers their raw transports so a
    stopping sink can cut them, and delays the banner and replies when told."""

    def __init__(
        self,
        handler: _Handler,
        recorder: Recorder,
        open_transports: set[asyncio.Transport],
        **kw: Any,
    ):
        super().__init__(handler, **kw)
        self._recorder = recorder
        self._open = open_transports
        self._raw: asyncio.Transport | None = None
        self._greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw is None:  # a second call comes after STARTTLS
            self._raw = cast(asyncio.Transport, transport)
            self._open.add(self._raw)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._raw is not None:
            self._open.discard(self._raw)
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd runs every MAIL and RCPT path through the email package's
        # full RFC 5322 parser (and builds a class per call): a quarter of the
        # sink's time in benchmarks. Plain paths, which is what senders
        # write, are split here with the same result; the rest go to aiosmtpd.
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain.groups()
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        # aiosmtpd reads mail data a line at a time, with a StreamReader call
        # and a debug log call per line, a large share of the sink's CPU in
        # `mailer bench` (docs/performance.md). Here it is read up to each ".\r\n" (in pieces of at
        # most the reader's line limit where there is none), and the line
        # and size limits, the dot unstuffing and the hand-over to the
        # handler are aiosmtpd's (1.4), with its replies.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        refusal = self._recorder.reply_for("data-command", self.envelope.rcpt_tos)
        if refusal is not None:
            handler = cast(_Handler, self.event_handler)
            mail_from = self.envelope.mail_from or ""
            recipients = tuple(self.envelope.rcpt_tos)
            await self.push(handler.refuse(self, "data-command", mail_from, recipients, refusal))
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = _Data(self.data_size_limit, self.line_length_limit)
        reader = self._reader
        try:
            while True:
                try:
                    piece = await reader.readuntil(_DOT_LINE)
                except asyncio.LimitOverrunError as exc:
                    piece = await reader.read(exc.consumed)
                if data.add(piece):
                    break
        except asyncio.IncompleteReadError:
            # the client closed its side mid-data: nothing to answer
            self._writer.close()
            return
        except asyncio.CancelledError:
            # the connection went away mid-data (eof_received cancels us)
            self._writer.close()
            raise
        content = data.content()
        if isinstance(content, str):
            reply = "500 Line too long (see RFC5321 4.5.3.1.6)"
            await self.push(reply if content == "500" else "552 Error: Too much mail data")
            self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
            return
        self.envelope.original_content = content
        if not self._decode_data:
            self.envelope.content = content
        elif self.enable_SMTPUTF8:
            self.envelope.content = content.decode("utf-8", errors="surrogateescape")
        else:
            try:
                self.envelope.content = content.decode("ascii", errors="strict")
            except UnicodeDecodeError:
                await self.push("500 Error: strict ASCII mode")
                return
        status = await self._call_handler_hook("DATA")
        self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
        await self.push("250 OK" if status is MISSING else status)

    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd puts asyncio's pure-Python SSL protocol under the session;
        # the loop's own start_tls (uvloop's compiled TLS where the sink runs
        # on it) takes less of the sink's CPU per message. The rest
        # is aiosmtpd's (1.4): its replies, and after the handshake the state
        # RFC 3207 §4.2 asks for, as its connection_made sets it.
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        # RFC 3207 §4.2: whatever the client sent before the handshake is
        # not a command (start_tls pauses reading before it first yields to
        # the loop, so no later plaintext can slip in)
        cast(Any, self._reader)._buffer.clear()
        try:
            await self._writer.start_tls(self.tls_context)
        except Exception as error:
            raise TLSSetupException() from error
        tls = self.transport = self._writer.transport
        self._tls_protocol = cast(Any, tls)  # aiosmtpd only asks whether there is one
        self.envelope = self._create_envelope()
        peer = self.session.peer if self.session is not None else None
        self.session = self._create_session()
        self.session.peer = peer
        self.session.ssl = {
            name: tls.get_extra_info(name)
            for name in ("ssl_object", "peercert", "cipher", "compression")
        }
        self._reset_timeout()
        hook = self._handle_hooks.get("STARTTLS")
        self._tls_handshake_okay = hook is None or hook(self, self.session, self.envelope)

    async def push(self, status: AnyStr) -> None:
        banner_delay, reply_delay = self._recorder.delays()
        if not self._greeted:
            self._greeted = True  # the first line pushed is the 220 banner
            delay = banner_delay
        else:
            line = status if isinstance(status, str) else status.decode("ascii", "replace")
            # Only the last line of a multi-line reply ("250 HELP", not "250-…").
            delay = 0.0 if line[3:4] == "-" else reply_delay
        if delay > 0:
            await asyncio.sleep(delay)
        await super().push(status)


class Server:
    """One listening socket on the current loop."""

    def __init__(
        self,
        host: str,
        port: int,
        recorder: Recorder,
        *,
        tls: ssl.SSLContext | None,
        hostname: str,
        on_message: MessageHook | None = None,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._recorder = recorder
        self.tls = tls
        self._hostname = hostname
        self._handler = _Handler(recorder, on_message, on_refusal)
        self._open: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None

    def _protocol(self) -> SMTP:
        with self._recorder.changed:
            self._recorder.connections += 1
            # a switch of the running sink: new connections are not offered it
            faults = self._recorder.faults
            tls = None if faults.no_starttls else self.tls
        return _SinkSMTP(
            self._handler,
            self._recorder,
            self._open,
            hostname=self._hostname,
            ident="mailer-sink",
            tls_context=tls,
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
