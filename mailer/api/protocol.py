"""uvicorn's HTTP protocol with the limits a server on the internet needs
and uvicorn lacks: a deadline for a request's header, and a cap on open
connections.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``,
but only once a response has been sent, and it cancels that timer on the
first byte of the next request. A client that connects and says nothing,
or sends a header a byte at a time (slowloris), holds its connection for
ever. Here every connection must deliver a complete request header within
``header_timeout`` seconds of connecting or of its previous response; and
past ``max_connections`` open connections a new one is answered 503 and
closed at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 30\r\n"
    b"connection: close\r\n"
    b"retry-after: 1\r\n\r\n"
    b"too many connections; retry\r\n"
)


class GuardedProtocol(HttpToolsProtocol):
    """Set :attr:`header_timeout` and :attr:`max_connections` on a subclass
    (:func:`guarded_protocol`): uvicorn makes one instance a connection."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._await_header()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_arrived()
        if self.transport is None:  # refused in connection_made
            return
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._header_arrived()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_header()

    def _await_header(self) -> None:
        self._header_arrived()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _header_arrived(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _too_slow(self) -> None:
        self._header_deadline = None
        # no request in progress: nothing is cut short but the client's wait
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


def guarded_protocol(*, header_timeout: float, max_connections: int) -> type[GuardedProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "Guarded",
        (GuardedProtocol,),
        {"header_timeout": header_timeout, "max_connections": max_connections},
    )
