"""The webhook figure of ``mailer bench``: the events of the benchmark's
distribution pushed by one dispatcher, batched and signed, to a receiver in
a process of its own on loopback (which counts the events it is sent and
answers 204)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailer.app import App
from mailer.config import Config


def _receive(port: int, events: Any, ready: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with events.get_lock():
                events.value += len(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


@contextlib.contextmanager
def receiver_process(port: int) -> Iterator[Any]:
    """A receiver on 127.0.0.1:``port``; yields its shared event count."""
    context = multiprocessing.get_context("spawn")
    events = context.Value("q", 0)
    ready = context.Event()
    process = context.Process(target=_receive, args=(port, events, ready), daemon=True)
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the webhook receiver did not start")
        yield events
    finally:
        process.terminate()
        process.join(10)


@dataclass(frozen=True)
class HookRate:
    events: int
    received: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


# events replayed at most: the feed of a large run (three or more events a
# message) would take minutes to push again and tell no more
EVENTS_AT_MOST = 200_000


async def webhook_rate(
    config: Config, port: int, account: str, received: Any, *, at_most: int = EVENTS_AT_MOST
) -> HookRate:
    """Register an endpoint for ``account`` at the receiver, replay the
    feed to it (its last ``at_most`` events) and time one dispatcher until
    it has caught up."""
    hooks = config.webhooks.model_copy(
        update={"allow_insecure": True, "allow": ("127.0.0.0/8",), "poll_interval": 0.05}
    )
    config = config.model_copy(update={"webhooks": hooks})
    async with App(config) as app:
        created = await app.webhooks().add(account, f"http://127.0.0.1:{port}/hooks")
        await app.webhooks().replay(
            created.endpoint.id, None, max(0, created.endpoint.cursor - at_most)
        )
        [last] = await app.store.events(after=created.endpoint.cursor - 1, limit=1)
        dispatcher = app.dispatcher(owner="bench")
        start = time.perf_counter()
        task = asyncio.create_task(dispatcher.run())
        try:
            while (await app.webhooks().get(created.endpoint.id, None)).cursor < last.seq:
                if task.done():
                    task.result()
                    raise RuntimeError("the dispatcher stopped early")
                await asyncio.sleep(0.01)
            seconds = time.perf_counter() - start
        finally:
            dispatcher.stop()
            await task
        return HookRate(dispatcher.delivered, received.value, seconds)
