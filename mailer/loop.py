"""The event loop the service runs on.

uvloop where it is installed (a dependency on Linux and macOS): its loop and
TLS transport are compiled, which takes a good share of the per-message CPU
off the SMTP path (STARTTLS reads and writes, timers, wake-ups). Elsewhere
the standard asyncio loop does the same job more slowly.
"""

from __future__ import annotations

import asyncio
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
