"""Replies to pipelined SMTP commands (RFC 2920), read with aiosmtplib's own
reply parser, for :mod:`mailer.delivery.smtp`.

aiosmtplib's ``SMTPProtocol`` expects one reply per command awaited: its
``data_received`` drops bytes that arrive while a parsed reply waits to be
picked up, and leaves a second reply that came in the same segment in its
buffer until more data arrives. With several commands in flight both
happen, so for the length of one pipelined exchange :class:`PipelinedReplies`
takes the protocol's incoming bytes itself: every byte goes to the
protocol's buffer, every complete reply is parsed there by the protocol's
``_read_response_from_buffer`` and queued in order. Lost connections and
EOF still reach the caller through the protocol's own reply waiter.

This leans on private names of aiosmtplib 5.1 (``_buffer``,
``_read_response_from_buffer``, ``_response_waiter``, ``_response_pending``,
``_command_lock``); pyproject.toml caps aiosmtplib below 5.2, and
tests/test_pipelining.py fails when these change. aiosmtplib's exceptions
raised here are translated by the caller, mailer.delivery.smtp.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any

from aiosmtplib import SMTPResponse, SMTPResponseException, SMTPServerDisconnected
from aiosmtplib.protocol import (
    MAX_RESPONSE_LENGTH,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)

__all__ = ["PRIVATE_NAMES", "PipelinedReplies", "message_payload"]

# What this module uses of SMTPProtocol beyond its public methods.
PRIVATE_NAMES = (
    "_buffer",
    "_read_response_from_buffer",
    "_response_waiter",
    "_response_pending",
    "_command_lock",
)


def message_payload(data: bytes) -> bytes:
    """The message as DATA carries it, as aiosmtplib's own DATA sends it:
    CRLF line ends, leading dots doubled, the lone dot line at the end."""
    if _already_on_the_wire(data):
        return data + b".\r\n"
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"


def _already_on_the_wire(data: bytes) -> bool:
    """True for a message aiosmtplib's two substitutions would leave as it
    is: CRLF line ends only, ending in one, and no line starting with a
    dot, which is what the composer makes (base64 bodies). Counting is
    C-speed; the substitutions scan the message in the regex engine twice
    per message, a tenth of the SMTP exchange's CPU (docs/performance.md)."""
    crlf = data.count(b"\r\n")
    return (
        data.endswith(b"\r\n")
        and data.count(b"\n") == crlf
        and data.count(b"\r") == crlf
        and not data.startswith(b".")
        and b"\n." not in data
    )


class PipelinedReplies:
    """``with PipelinedReplies(protocol) as replies``: every reply the server
    sends meanwhile, in order, through ``await replies.next()``.

    The caller holds the protocol's command lock for the whole exchange, so
    no other command of aiosmtplib's can be in flight.
    """

    def __init__(self, protocol: SMTPProtocol) -> None:
        self._protocol = protocol
        self._ready: deque[SMTPResponse | Exception] = deque()

    def __enter__(self) -> PipelinedReplies:
        protocol = self._protocol
        if protocol._response_waiter is None:
            raise SMTPServerDisconnected("Connection lost")
        # An instance attribute shadows the class's method for this exchange
        # only; the transport looks data_received up on each call.
        protocol.data_received = self._feed  # type: ignore[method-assign]
        protocol._response_pending = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        protocol: Any = self._protocol
        del protocol.data_received
        protocol._response_pending = False

    @property
    def pending(self) -> int:
        """Replies (or errors) received and not yet taken."""
        waiter = self._protocol._response_waiter
        return len(self._ready) + (waiter is not None and waiter.done())

    def _feed(self, data: bytes) -> None:
        protocol = self._protocol
        waiter = protocol._response_waiter
        if waiter is None:
            return  # the connection is gone; nobody is left to tell
        protocol._buffer.extend(data)
        try:
            while (response := protocol._read_response_from_buffer()) is not None:
                self._ready.append(response)
            if len(protocol._buffer) > MAX_RESPONSE_LENGTH:
                del protocol._buffer[:]
                raise SMTPResponseException(500, "Response too long")
        except Exception as exc:  # aiosmtplib's parse errors, handed to the reader
            self._ready.append(exc)
        if self._ready and not waiter.done():
            item = self._ready.popleft()
            if isinstance(item, Exception):
                waiter.set_exception(item)
                waiter.exception()  # retrieved: a lost session may never await it
            else:
                waiter.set_result(item)

    async def next(self) -> SMTPResponse:
        """The next reply in order.

        Raises SMTPServerDisconnected (connection lost or EOF),
        SMTPResponseException (a line that is no reply, or too long).
        """
        protocol = self._protocol
        waiter = protocol._response_waiter
        if waiter is None:
            raise SMTPServerDisconnected("Connection lost")
        if not waiter.done() and self._ready:
            item = self._ready.popleft()
            if isinstance(item, Exception):
                raise item
            return item
        try:
            return await waiter
        finally:
            # a fresh waiter for the next reply, as read_response() makes one
            protocol._response_waiter = (
                None if protocol.transport is None else asyncio.get_running_loop().create_future()
            )
            if protocol._response_waiter is not None:
                protocol._response_pending = True
