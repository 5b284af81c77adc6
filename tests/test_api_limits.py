"""The API server drops clients that never send a full request (silent or
slowloris) and caps open connections, on a real uvicorn on loopback. Every
wait here is bounded; nothing depends on an idle machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.config import Config

HEADER_TIMEOUT = 0.5


@pytest.fixture
async def server(config: Config) -> AsyncIterator[ApiServer]:
    async with (
        App(config) as app,
        ApiServer(
            create_api(app), header_timeout=HEADER_TIMEOUT, keep_alive_timeout=1, max_connections=40
        ) as server,
    ):
        yield server


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """What the server sent before closing; fails when it keeps the
    connection open longer than ``seconds``."""
    data = b""
    async with asyncio.timeout(seconds):
        while chunk := await reader.read(4096):
            data += chunk
    return data


async def test_silent_and_slow_header_clients_are_dropped(server: ApiServer) -> None:
    silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    slow = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(10)]
    for _, writer in slow:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()

    async def trickle() -> None:
        # one header byte now and then, as slowloris does
        for _ in range(40):
            for _, writer in slow:
                if not writer.is_closing():
                    writer.write(b"X")
                    await writer.drain()
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(trickle())
    try:
        for reader, _ in silent + slow:
            assert await closed_within(reader, 10) == b""
    finally:
        feeder.cancel()
        for _, writer in silent + slow:
            writer.close()
    # well before the clients gave up: the header deadline did it
    assert time.monotonic() - started < 10
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_an_idle_keep_alive_connection_is_closed_after_its_response(
    server: ApiServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = await closed_within(reader, 10)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 200")


async def test_connections_past_the_limit_are_answered_503_and_closed(
    server: ApiServer,
) -> None:
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(40)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        reply = await closed_within(reader, 5)
        writer.close()
        assert reply.startswith(b"HTTP/1.1 503")
        assert b"retry-after: 1" in reply
    finally:
        for _, w in held:
            w.close()
    # once the held ones are gone (or dropped by their header deadline)
    async with httpx.AsyncClient(base_url=server.url) as http:
        for _ in range(50):
            if (await http.get("/healthz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the server did not take connections again")
