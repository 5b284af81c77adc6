"""A TCP relay that gives loopback a round-trip time: every byte read on
one side is written to the other half a round trip later, in the order it
was read, so SMTP over it costs what it costs over a real network path.

Only the bytes are delayed; the TCP handshake between the client and the
relay is not, so a connection's set-up is half a round trip shorter than
on a real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

from mailer import loop as service_loop

__all__ = ["DelayRelay", "delay_relay"]

_CHUNK = 65536


class DelayRelay:
    """Listens on ``host``:0 and relays each connection to ``target``,
    delaying each direction by ``one_way`` seconds."""

    def __init__(self, target: tuple[str, int], one_way: float, host: str = "127.0.0.1") -> None:
        self.target = target
        self.one_way = one_way
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # cut both sides: every pump then reads its end and finishes
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        self._writers.update((writer, up_writer))
        for side in (writer, up_writer):
            # small writes (SMTP replies) must not wait for Nagle's algorithm
            side.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                side.close()
                self._writers.discard(side)
            self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        # the clock itself, not the loop's: uvloop reads its clock once per
        # iteration and in whole milliseconds, so a stamp from it can be
        # older than the read and a sleep can end early; no byte may arrive
        # sooner than half the round trip after it was read
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await pending.get()
                # a time to reach, not an event to wait for (see above)
                while (wait := due - time.monotonic()) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(wait)
                if sink.is_closing():
                    return
                if not data:
                    if sink.can_write_eof():
                        sink.write_eof()
                    return
                sink.write(data)
                await sink.drain()

        writer = asyncio.create_task(deliver())
        try:
            while True:
                try:
                    data = await source.read(_CHUNK)
                except ConnectionError:
                    data = b""
                pending.put_nowait((time.monotonic() + self.one_way, data))
                if not data:
                    break
            await writer
        except ConnectionError:
            pass
        finally:
            writer.cancel()


@contextlib.contextmanager
def delay_relay(target: tuple[str, int], rtt: float) -> Iterator[DelayRelay]:
    """A :class:`DelayRelay` for a round trip of ``rtt`` seconds, served
    from a thread of its own until the block ends."""
    relay = DelayRelay(target, rtt / 2)
    thread = service_loop.ServerThread(
        "delay-relay", relay.open, relay.close, new_loop=service_loop.loop_factory()
    )
    thread.start()
    try:
        yield relay
    finally:
        thread.stop()
