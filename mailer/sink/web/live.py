"""Change notices for the inbox's server-sent events: the sink's checking
thread (and the page's own deletes) publish, each open event stream on
the web server's loop receives."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

__all__ = ["Changes"]

_CLOSED = None


class Changes:
    """A thread-safe fan-out of change notices to asyncio subscribers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str | None]]] = set()
        self._closed = False

    def publish(self, kind: str) -> None:
        """Tell every subscriber that something of ``kind`` changed; from
        any thread, never blocks."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            # a server loop that closed meanwhile has no page to tell
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, kind)

    def close(self) -> None:
        """End every subscription (the server is stopping)."""
        with self._lock:
            self._closed = True
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, _CLOSED)

    async def subscribe(
        self, heartbeat: float = 15.0, coalesce: float = 0.25
    ) -> AsyncIterator[str]:
        """The kinds published from now on, and "" every ``heartbeat``
        seconds without one; ends at :meth:`close`. Notices that come
        within ``coalesce`` seconds of one another are given as one (the
        last), so a burst of mail (a benchmark) refreshes an open page a
        few times a second rather than once per message."""
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            if self._closed:
                return
            self._subscribers.add(entry)
        try:
            while True:
                try:
                    kind = await asyncio.wait_for(queue.get(), heartbeat)
                except TimeoutError:
                    yield ""
                    continue
                if kind is _CLOSED:
                    return
                await asyncio.sleep(coalesce)
                while not queue.empty():
                    later = queue.get_nowait()
                    if later is _CLOSED:
                        return
                    kind = later
                yield kind
        finally:
            with self._lock:
                self._subscribers.discard(entry)
