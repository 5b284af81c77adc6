"""The event loop the service runs on.

uvloop where it is installed (a dependency on Linux and macOS): its loop and
TLS transport are compiled, which takes a good share of the per-message CPU
off the SMTP path (STARTTLS reads and writes, timers, wake-ups). Elsewhere
the standard asyncio loop does the same job more slowly.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable, Coroutine
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
# collector took about a fifth of the API's CPU in `mailer bench`.
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
