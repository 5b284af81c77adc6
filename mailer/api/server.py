"""Serving the API with uvicorn inside the caller's event loop, beside the
engine (``mailer serve``) or a test.

    async with ApiServer(create_api(app), "127.0.0.1", 0) as server:
        httpx.get(f"{server.url}/healthz")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from mailer.api.protocol import guarded_protocol


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The owner of the loop handles SIGTERM/SIGINT and stops the API and
        # the engine together (uvicorn's own handlers would re-raise the
        # signal after shutting down the API alone).
        yield


class ApiServer:
    """uvicorn serving ``api`` on ``host:port`` (port 0: any free port) as a
    task of the running loop. The socket is bound on entry, so a port in use
    raises OSError there."""

    def __init__(
        self,
        api: ASGIApp,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        graceful_seconds: float = 10.0,
        log_level: str = "warning",
        header_timeout: float = 10.0,
        keep_alive_timeout: int = 5,
        max_connections: int = 1000,
    ) -> None:
        """``header_timeout``: seconds a connection has to send a complete
        request header; ``keep_alive_timeout``: seconds an idle connection
        is kept after a response; ``max_connections``: open connections at
        most (more are answered 503 and closed)."""
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            api,
            # httptools (the [standard] extra) parses HTTP in C; with h11, uvicorn's
            # pure-Python fallback, `mailer bench` enqueued about an eighth less
            http=guarded_protocol(header_timeout=header_timeout, max_connections=max_connections),
            timeout_keep_alive=keep_alive_timeout,
            lifespan="off",
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=int(graceful_seconds),
            server_header=False,
        )
        self._server = _Server(self._config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve. Raises OSError when the address cannot be bound."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(self._config.backlog)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task
                raise OSError(f"the API server on {self.url} did not start")
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        """Ask to stop: no new connections, requests in progress finish."""
        self._server.should_exit = True

    async def wait(self) -> None:
        """Until the server has stopped; cancelling the wait leaves the
        server running."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.wait()
