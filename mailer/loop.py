"""The event loop the service runs on.

uvloop where it is installed (a dependency on Linux and macOS): its loop and
TLS transport are compiled, which takes a good share of the per-message CPU
off the SMTP path (STARTTLS reads and writes, timers, wake-ups). Elsewhere
the standard asyncio loop does the same job more slowly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


# How long a thread may keep the GIL while another waits for it. The event
# loop shares the GIL with the DKIM and store threads; each of their turns
# (an RSA signature handed back, a batch of rows) must not hold up the loop,
# nor the loop hold up a finished signature, for CPython's default 5 ms.
SWITCH_INTERVAL = 0.0005


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the service's loop."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


# Young objects are collected every this many container allocations
# instead of Python's 700: an enqueue of 1,000 recipients, like every
# message sent, makes many short-lived containers, and with the default the
# collector took a large share of the API's CPU (docs/performance.md).
GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """For a long-running process (API, worker), once it is up: what
    start-up allocated (modules, the app, FastAPI's and pydantic's schemas)
    lives as long as the process, so the cyclic collector stops walking it
    (gc.freeze), and young objects are collected every GC_THRESHOLD
    allocations."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


class ServerThread:
    """A loopback server served from a daemon thread with an event loop of
    its own, so that it answers sync tests, async tests and subprocesses
    alike (the test DNS server, the sink and its checker).

    :meth:`start` runs ``open`` on the thread's loop and returns once it is
    listening, raising in the caller's thread whatever ``open`` raised;
    :meth:`stop` stops the loop after running ``close`` on it.
    """

    def __init__(
        self,
        name: str,
        open: Callable[[], Awaitable[None]],
        close: Callable[[], Awaitable[None]],
        *,
        new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
    ) -> None:
        self.name = name
        self._open = open
        self._close = close
        self._new_loop = new_loop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        """Raises RuntimeError when already started, else what ``open`` raised."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        loop = self._new_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:  # handed to start() in the caller's thread
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._close())
                loop.close()

        thread = threading.Thread(target=serve, name=self.name, daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        self._thread, self._loop = thread, loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the thread's loop (from any thread).

        Raises RuntimeError when not running.
        """
        if self._loop is None:
            coro.close()
            raise RuntimeError(f"{self.name} is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def stop(self) -> None:
        """Close the server and end the thread; nothing when not running."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = self._loop = None
