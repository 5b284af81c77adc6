"""The bench's delaying relay: bytes arrive whole, in order, and no sooner
than half the round trip after they were sent, in each direction."""

from __future__ import annotations

import asyncio
import time

from mailer.bench.relay import delay_relay


async def test_relay_keeps_bytes_in_order_and_delays_each_direction_by_half_the_rtt() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with delay_relay(("127.0.0.1", port), 0.2) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            pieces = [b"%d," % i for i in range(500)]
            start = time.monotonic()
            for piece in pieces:
                writer.write(piece)
            await writer.drain()
            first = await reader.readexactly(len(pieces[0]))
            elapsed = time.monotonic() - start
            rest = await reader.readexactly(len(b"".join(pieces)) - len(first))
            writer.close()
            await writer.wait_closed()
    assert first + rest == b"".join(pieces)
    assert elapsed >= 0.2  # half the round trip there, half back
