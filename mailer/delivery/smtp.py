"""SMTP delivery to one MX over aiosmtplib, STARTTLS required.

The seam to aiosmtplib; every exception it raises is
translated here into :mod:`mailer.errors`:

    refused, unreachable, timed out, lost   → ConnectFailed
    no STARTTLS offered (or it is refused)  → TLSUnavailable
    handshake or certificate failure        → TLSFailed
    a 4xx/5xx reply                         → SMTPReplyError (via mailer.replycodes)
    a reply that cannot be parsed           → DeliveryError(reason=protocol)

With PIPELINING offered after STARTTLS, MAIL, RCPT and DATA go in one
write and their replies are read by :mod:`mailer.delivery.pipeline` (the
one other module that touches aiosmtplib, and only its protocol layer).

No MAIL FROM is ever sent before the connection is under TLS: aiosmtplib's
default ``start_tls=None`` silently stays in plaintext when the server does
not offer STARTTLS, so the client is created with ``start_tls=False`` and
the upgrade is done, and checked, here.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiosmtplib
from aiosmtplib import (
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from mailer.config import TLSPolicy
from mailer.delivery.pipeline import PipelinedReplies, message_payload
from mailer.errors import (
    ConfigError,
    ConnectFailed,
    DeliveryError,
    SMTPReplyError,
    TLSFailed,
    TLSUnavailable,
)
from mailer.reasons import Reason
from mailer.replycodes import classify, parse_reply

__all__ = [
    "Reply",
    "Session",
    "TLSContexts",
    "TLSInfo",
    "TLSPolicy",
    "build_tls_context",
    "open_session",
]

# Characters that would end or split an address on a command line.
_BAD_ADDRESS = re.compile(r"[\s<>\x00-\x1f\x7f]")
_QUIT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None
    text: str


@dataclass(frozen=True, slots=True)
class TLSInfo:
    version: str
    cipher: str
    # the server's certificate (DER) as presented, verified or not
    certificate: bytes | None = None
    # the whole chain it presented, leaf first (DER); None where the ssl
    # module cannot hand it out (before Python 3.13)
    chain: tuple[bytes, ...] | None = None


def build_tls_context(policy: TLSPolicy, cafile: str | None = None) -> ssl.SSLContext:
    """A client context for ``policy``: TLS 1.2 or newer, and for VERIFY the
    system CAs plus ``cafile`` with host name checking.

    Raises ConfigError if ``cafile`` cannot be read as PEM certificates.
    """
    if TLSPolicy(policy) is TLSPolicy.VERIFY:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if cafile:
            try:
                context.load_verify_locations(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("cafile", f"{cafile}: {exc}") from exc
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TLSContexts:
    """Client contexts built once per (policy, cafile) and shared by every
    connection of whoever owns this object (normally the delivery engine).

    Building a VERIFY context loads the system CA store, which takes
    milliseconds; doing it per connection (let alone per message) would show
    in throughput, and a module-level cache would be hidden global state.
    """

    def __init__(self) -> None:
        self._contexts: dict[tuple[TLSPolicy, str | None], ssl.SSLContext] = {}
        self._building: dict[tuple[TLSPolicy, str | None], asyncio.Future[ssl.SSLContext]] = {}

    def get(self, policy: TLSPolicy, cafile: str | None = None) -> ssl.SSLContext:
        """The shared context, built on first use. Raises ConfigError (bad cafile)."""
        key = _context_key(policy, cafile)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts.setdefault(key, build_tls_context(*key))
        return context

    async def aget(self, policy: TLSPolicy, cafile: str | None = None) -> ssl.SSLContext:
        """Like :meth:`get`, building a missing context off the event loop,
        once for all the connections that want it at the same moment (each
        build of a VERIFY context loads the whole system CA store)."""
        key = _context_key(policy, cafile)
        context = self._contexts.get(key)
        if context is not None:
            return context
        building = self._building.get(key)
        if building is None:
            building = asyncio.ensure_future(asyncio.to_thread(self.get, *key))
            self._building[key] = building
            building.add_done_callback(lambda _: self._building.pop(key, None))
        # shield: one connection giving up must not cancel the others' build
        return await asyncio.shield(building)


def _context_key(policy: TLSPolicy, cafile: str | None) -> tuple[TLSPolicy, str | None]:
    policy = TLSPolicy(policy)
    return (policy, cafile or None) if policy is TLSPolicy.VERIFY else (policy, None)


class Session:
    """An SMTP connection to one MX that has completed STARTTLS and the
    second EHLO; sends one message after another. Made by :func:`open_session`.
    """

    def __init__(
        self, smtp: aiosmtplib.SMTP, host: str, address: str, tls: TLSInfo, greeting: str = ""
    ) -> None:
        self.host = host
        self.address = address
        self.tls = tls
        self.greeting = greeting
        self.messages_sent = 0
        # the TLS policy it was opened under (set by the connector)
        self.policy: str | None = None
        self._smtp = smtp
        # aiosmtplib forgets its transport when it closes on a 421 or a lost
        # connection; kept here so the socket can still be cut at once.
        self._transport = smtp.transport
        self._where = f"{host} [{address}]"
        self._timeout = smtp.timeout
        self._lost = False
        self._size = smtp.supports_extension("size")
        self._eightbit = smtp.supports_extension("8bitmime")
        self._smtputf8 = smtp.supports_extension("smtputf8")
        self._dsn = smtp.supports_extension("dsn")
        # Only what the EHLO after STARTTLS offered counts (RFC 3207 §4.2):
        # aiosmtplib forgets the first EHLO's keywords on the upgrade.
        self._pipelining = smtp.supports_extension("pipelining")

    @property
    def extensions(self) -> tuple[str, ...]:
        """The EHLO keywords the server offered after STARTTLS, upper case."""
        return tuple(name.upper() for name in self._smtp.esmtp_extensions)

    @property
    def usable(self) -> bool:
        """False once the connection is lost, closed, or the server said 421."""
        return not self._lost and self._smtp.is_connected

    async def send(
        self, mail_from: str, recipient: str, data: bytes, *, envid: str | None = None
    ) -> Reply:
        """Send one message (MAIL FROM, RCPT TO, DATA); return the reply to DATA.

        ``mail_from`` may be empty (null reverse path). Where the server
        offers DSN (RFC 3461), an ``envid`` (letters and digits) goes with
        ``RET=HDRS``, so a later notification names the send and returns
        only the headers. Raises SMTPReplyError
        for a 4xx/5xx reply (the session is RSET and stays usable unless the
        reply was 421), ConnectFailed when the connection is lost or times out
        at any step, including after the message was transmitted but before
        the reply, DeliveryError(protocol) for an address that cannot be put
        on a command line or an unparseable reply.
        """
        if not self.usable:
            raise ConnectFailed(f"{self._where}: connection is no longer usable")
        sender_arg, recipient_arg, options = self._envelope(mail_from, recipient, data, envid)
        # One deadline moved on at each step instead of aiosmtplib's
        # asyncio.wait_for around every read (a future, a timer and two
        # callbacks each, four times a message); the bound per step is the
        # same, and DATA (354, the message, the reply) gets two reads' worth.
        loop = asyncio.get_running_loop()
        step = self._timeout

        def after(steps: int) -> float | None:
            return None if step is None else loop.time() + steps * step

        exchange = self._pipelined if self._pipelining else self._one_by_one
        try:
            async with asyncio.timeout_at(after(1)) as deadline:

                def extend(steps: int) -> None:
                    deadline.reschedule(after(steps))

                try:
                    response = await exchange(sender_arg, recipient_arg, options, data, extend)
                except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
                    self._lose()
                    raise ConnectFailed(f"{self._where}: {_said(exc.message)}") from exc
                except SMTPException as exc:
                    self._lose()
                    raise DeliveryError(
                        Reason.PROTOCOL, f"{self._where}: {_said(str(exc))}"
                    ) from exc
                except asyncio.CancelledError:
                    # Mid-transaction state is unknown; the connection cannot be reused.
                    self._lose()
                    raise
        except TimeoutError as exc:
            raise ConnectFailed(f"{self._where}: timed out waiting for the server") from exc
        if not 200 <= response.code < 300:
            # outside the deadline: the RSET that follows has aiosmtplib's
            # own timeout, and a slow RSET must not turn a refusal into a
            # timeout
            raise await self._refused(response)
        self.messages_sent += 1
        enhanced, text = parse_reply(response.code, _said(response.message))
        return Reply(response.code, enhanced, text)

    async def _one_by_one(
        self,
        sender_arg: bytes,
        recipient_arg: bytes,
        options: list[bytes],
        data: bytes,
        extend: Callable[[int], None],
    ) -> SMTPResponse:
        """MAIL, RCPT, DATA, each after the reply to the one before; the
        first refusal or the reply to the message."""
        smtp = self._smtp
        response = await smtp.execute_command(
            b"MAIL", b"FROM:" + sender_arg, *options, timeout=None
        )
        if 200 <= response.code < 300:
            extend(1)
            response = await smtp.execute_command(b"RCPT", b"TO:" + recipient_arg, timeout=None)
        if 200 <= response.code < 300:
            extend(2)
            try:
                response = await smtp.data(data, timeout=None)
            except SMTPDataError as exc:
                response = SMTPResponse(exc.code, exc.message)
        return response

    async def _pipelined(
        self,
        sender_arg: bytes,
        recipient_arg: bytes,
        options: list[bytes],
        data: bytes,
        extend: Callable[[int], None],
    ) -> SMTPResponse:
        """MAIL, RCPT and DATA in one write (RFC 2920), the replies taken in
        order; the first refusal among them, or the reply to the message.

        The message goes only after 354 to DATA with MAIL and RCPT both
        accepted; a 354 after a refused envelope gets the lone dot (RFC 2920
        §3.1) so the transaction ends with nothing in it. A 421 ends the
        exchange at once: the server is closing and sends nothing more.
        """
        protocol = self._smtp.protocol
        lock = None if protocol is None else protocol._command_lock
        if protocol is None or lock is None:
            raise SMTPServerDisconnected("Server not connected")
        async with lock:
            with PipelinedReplies(protocol) as replies:
                protocol.write(
                    b" ".join((b"MAIL", b"FROM:" + sender_arg, *options))
                    + b"\r\nRCPT TO:"
                    + recipient_arg
                    + b"\r\nDATA\r\n"
                )
                replies_in_order: list[SMTPResponse] = []
                for steps in (1, 1, 2):  # MAIL, RCPT, DATA (354, then the message)
                    reply = await replies.next()
                    replies_in_order.append(reply)
                    if reply.code == 421:
                        break
                    extend(steps)
                else:
                    refused = [r for r in replies_in_order[:2] if not 200 <= r.code < 300]
                    if reply.code == 354:
                        protocol.write(b".\r\n" if refused else message_payload(data))
                        replies_in_order.append(await replies.next())
                    # after a 421 whatever else comes is moot: the session ends
                    if replies.pending:
                        raise SMTPResponseException(500, "more replies than commands sent")
        # the first failing reply decides; 354 is DATA's go-ahead, not a success
        for reply in replies_in_order:
            if not (200 <= reply.code < 300 or reply.code == 354):
                return reply
        return replies_in_order[-1]

    async def close(self) -> None:
        """QUIT and close. Errors are swallowed; cancellation is not."""
        try:
            if self.usable:
                await self._smtp.quit(timeout=_QUIT_TIMEOUT)
        except (SMTPException, OSError):
            pass
        finally:
            self._lost = True
            _drop(self._smtp, self._transport)
        await asyncio.sleep(0)  # let the transport's connection_lost() close the socket

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _envelope(
        self, mail_from: str, recipient: str, data: bytes, envid: str | None = None
    ) -> tuple[bytes, bytes, list[bytes]]:
        utf8 = not (mail_from.isascii() and recipient.isascii())
        if utf8 and not self._smtputf8:
            raise DeliveryError(
                Reason.PROTOCOL,
                f"{self._where}: non-ASCII address but the server does not offer SMTPUTF8",
                permanent=True,
            )
        options: list[bytes] = []
        if self._size:
            options.append(b"SIZE=%d" % len(data))
        if self._eightbit and not data.isascii():
            options.append(b"BODY=8BITMIME")
        if utf8:
            options.append(b"SMTPUTF8")
        if self._dsn and envid is not None and envid.isascii() and envid.isalnum():
            # alphanumerics need no xtext encoding (RFC 3461 §4)
            options += [b"RET=HDRS", b"ENVID=" + envid.encode("ascii")]
        encoding = "utf-8" if utf8 else "ascii"
        return (
            _path(mail_from, encoding, allow_empty=True),
            _path(recipient, encoding, allow_empty=False),
            options,
        )

    async def _refused(self, response: SMTPResponse) -> SMTPReplyError:
        """The error for a refusal; resets the transaction so the session
        can carry the next message, unless the server is going away."""
        error = _reply_error(response.code, _said(response.message))
        if response.code == 421 or not self._smtp.is_connected:
            self._lose()
        else:
            try:
                reset = await self._smtp.execute_command(b"RSET")
            except SMTPException:
                self._lose()
            else:
                if reset.code != 250:
                    self._lose()
        return error

    def _lose(self) -> None:
        self._lost = True
        _drop(self._smtp, self._transport)


def _drop(smtp: aiosmtplib.SMTP, transport: asyncio.BaseTransport | None) -> None:
    """Close without ceremony: after QUIT, a 421 or a broken exchange there
    is nothing left to say, and a TLS close_notify exchange would keep the
    socket open past the caller's interest in it."""
    smtp.close()
    if isinstance(transport, asyncio.Transport):
        transport.abort()


def _path(address: str, encoding: str, *, allow_empty: bool) -> bytes:
    if _BAD_ADDRESS.search(address) or not (address or allow_empty):
        raise DeliveryError(
            Reason.PROTOCOL,
            f"address {address!r} cannot be used on an SMTP command line",
            permanent=True,
        )
    return b"<" + address.encode(encoding) + b">"


async def open_session(
    host: str,
    address: str,
    port: int,
    *,
    helo: str,
    policy: TLSPolicy = TLSPolicy.ENCRYPT,
    timeout: float = 30.0,  # noqa: ASYNC109 - per-command timeout handed to aiosmtplib
    cafile: str | None = None,
    contexts: TLSContexts | None = None,
    source_address: str | None = None,
) -> Session:
    """Connect to ``address``:``port`` (an address of MX ``host``), EHLO,
    STARTTLS, EHLO again.

    SNI and, under VERIFY, the certificate name check use ``host``. Pass a
    shared ``contexts`` to avoid building SSL contexts per connection.

    Raises ConnectFailed (refused, unreachable, timeout, lost),
    TLSUnavailable (no STARTTLS, or STARTTLS refused), TLSFailed (handshake
    or, with ``certificate=True``, certificate check), SMTPReplyError (the
    greeting or EHLO was a 4xx/5xx reply), ConfigError (bad ``helo`` or
    ``cafile``).
    """
    if not helo.isascii():
        raise ConfigError("helo", f"{helo!r} is not ASCII")
    context = await (contexts or TLSContexts()).aget(policy, cafile)
    try:
        smtp = aiosmtplib.SMTP(
            hostname=address,
            port=port,
            local_hostname=helo,
            timeout=timeout,
            use_tls=False,
            start_tls=False,  # never None: None means "plaintext if not offered"
            source_address=(source_address, 0) if source_address else None,
        )
    except ValueError as exc:
        raise ConfigError("helo", str(exc)) from exc
    where = f"{host} [{address}]:{port}"
    try:
        tls, greeting = await _establish(smtp, where, host.rstrip(".") or address, context)
    except DeliveryError:
        _drop(smtp, smtp.transport)
        await asyncio.sleep(0)  # let the socket close before the caller moves on
        raise
    except BaseException:
        _drop(smtp, smtp.transport)
        raise
    return Session(smtp, host, address, tls, greeting)


async def _establish(
    smtp: aiosmtplib.SMTP, where: str, tls_host: str, context: ssl.SSLContext
) -> tuple[TLSInfo, str]:
    """STARTTLS-or-nothing set-up; the TLS parameters and the greeting.
    Every error raised carries the stage it came from."""
    stage = "connect"
    try:
        try:
            greeting = await smtp.connect()
        except SMTPConnectResponseError as exc:
            stage = "greeting"
            raise _reply_error(exc.code, _said(exc.message)) from exc
        except (SMTPConnectError, SMTPTimeoutError, SMTPServerDisconnected) as exc:
            raise ConnectFailed(f"{where}: {_said(exc.message)}") from exc
        except SMTPResponseException as exc:
            # a greeting that is no SMTP reply at all (another protocol)
            stage = "greeting"
            raise DeliveryError(Reason.PROTOCOL, f"{where}: {_said(exc.message).strip()}") from exc
        stage = "ehlo"
        await _ehlo(smtp, where)
        if not smtp.supports_extension("starttls"):
            await _quit_quietly(smtp)
            raise TLSUnavailable(f"{where}: server does not offer STARTTLS")
        stage = "starttls"
        try:
            await smtp.starttls(server_hostname=tls_host, tls_context=context)
        except ssl.SSLCertVerificationError as exc:
            stage = "tls"
            raise TLSFailed(
                f"{where}: {exc.verify_message or exc}",
                certificate=True,
                verify_code=exc.verify_code,
            ) from exc
        except ssl.SSLError as exc:
            stage = "tls"
            raise TLSFailed(f"{where}: TLS handshake failed: {exc.reason or exc}") from exc
        except SMTPResponseException as exc:
            if exc.code == 421:
                raise _reply_error(exc.code, _said(exc.message)) from exc
            refused = TLSUnavailable(f"{where}: STARTTLS refused: {exc.code} {_said(exc.message)}")
            refused.code = exc.code
            refused.enhanced = parse_reply(exc.code, _said(exc.message))[0]
            raise refused from exc
        except (SMTPException, OSError) as exc:
            stage = "tls"
            raise TLSFailed(f"{where}: TLS handshake failed: {_said(str(exc))}") from exc
        stage = "ehlo-tls"
        await _ehlo(smtp, where)
    except DeliveryError as exc:
        exc.stage = stage
        raise
    ssl_object = smtp.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        failed = TLSFailed(f"{where}: connection is not encrypted after STARTTLS")
        failed.stage = "tls"
        raise failed
    cipher = ssl_object.cipher()
    tls = TLSInfo(
        version=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
        certificate=ssl_object.getpeercert(binary_form=True),
        chain=_peer_chain(ssl_object),
    )
    return tls, _said(greeting.message)


def _peer_chain(ssl_object: ssl.SSLObject) -> tuple[bytes, ...] | None:
    """The certificates the server sent, leaf first, as DER (Python 3.13+)."""
    unverified = getattr(ssl_object, "get_unverified_chain", None)
    if unverified is None:
        return None
    # ssl.py already turns each certificate into DER bytes
    return tuple(bytes(c) for c in unverified() or [])


async def _ehlo(smtp: aiosmtplib.SMTP, where: str) -> None:
    try:
        await smtp.ehlo()
    except SMTPHeloError as exc:
        if exc.code in (500, 502, 504):
            # No ESMTP at all, hence no STARTTLS: treated like its absence.
            await _quit_quietly(smtp)
            raise TLSUnavailable(
                f"{where}: EHLO not supported: {exc.code} {_said(exc.message)}"
            ) from exc
        raise _reply_error(exc.code, _said(exc.message)) from exc
    except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
        raise ConnectFailed(f"{where}: {_said(exc.message)}") from exc
    except SMTPException as exc:
        raise DeliveryError(Reason.PROTOCOL, f"{where}: {_said(str(exc))}") from exc


async def _quit_quietly(smtp: aiosmtplib.SMTP) -> None:
    transport = smtp.transport
    try:
        await smtp.quit(timeout=_QUIT_TIMEOUT)
    except (SMTPException, OSError):
        pass
    finally:
        _drop(smtp, transport)


def _said(message: str) -> str:
    """A server's reply text as it may be stored, logged and shown.
    aiosmtplib decodes replies as UTF-8 with surrogateescape, so bytes that
    are not UTF-8 (a Latin-1 umlaut from an old server) come as lone
    surrogates, which no UTF-8 encoder (SQLite, PostgreSQL, JSON, the log)
    accepts; they become U+FFFD here."""
    if message.isascii():
        return message
    return message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _reply_error(code: int, message: str) -> SMTPReplyError:
    enhanced, text = parse_reply(code, message)
    verdict = classify(code, enhanced)
    return SMTPReplyError(
        verdict.reason,
        text,
        permanent=verdict.permanent,
        code=code,
        enhanced=enhanced,
    )
