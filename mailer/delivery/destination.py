"""Per-destination state of one worker: the queue of leased sends waiting
for a connection, the connection count, the rate limit and the throttle a
421 / 4.7.x reply imposes.

Limits are per node on purpose: each node sends from its own IP, and the
receiving side counts connections and rate per IP. With a pool of source
addresses each entry has its own connection and rate limits toward the
destination, and a new connection goes to the entry with the most room.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mailer.config import DestinationLimits, SourceConfig

J = TypeVar("J")

# throttle back-off after a 421 / 4.7.x: doubled per throttle in a row
THROTTLE_BASE = 30.0
THROTTLE_MAX = 1800.0


@dataclass
class SourceSlot:
    """One pool entry's share of a destination: its open connections and
    the earliest start of its next message under its rate."""

    source: SourceConfig
    connections: int = 0
    next_slot: float = 0.0


@dataclass
class Destination(Generic[J]):
    domain: str
    limits: DestinationLimits
    sources: list[SourceSlot] = field(default_factory=list)
    queue: deque[J] = field(default_factory=deque)
    # set when a send joins the queue: wakes an idle connection
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    throttled_until: float = 0.0
    throttle_streak: int = 0
    # the earliest time the next message may start under the rate limit
    next_slot: float = 0.0

    @property
    def max_connections(self) -> int:
        # a throttled destination gets one connection until it recovers
        return 1 if self.throttle_streak else self.limits.connections

    def wants_connection(self) -> bool:
        return (
            bool(self.queue)
            and self.connections < min(self.max_connections, len(self.queue))
            and (not self.sources or self.pick_source() is not None)
        )

    def pick_source(self) -> SourceSlot | None:
        """The pool entry with the lowest share of its connection limit in
        use (the first on a tie), None when every entry is at its limit or
        there is no pool (then any connection will do)."""
        if not self.sources:
            return None
        free = [s for s in self.sources if s.connections < s.source.connections]
        if not free:
            return None
        return min(free, key=lambda s: s.connections / s.source.connections)

    def throttled(self, now: float) -> bool:
        return now < self.throttled_until

    def throttle(self, now: float) -> float:
        """Record a throttling reply; returns when the destination may be
        tried again."""
        delay = min(THROTTLE_BASE * 2**self.throttle_streak, THROTTLE_MAX)
        self.throttle_streak += 1
        self.throttled_until = now + delay
        return self.throttled_until

    def recovered(self) -> None:
        self.throttle_streak = 0

    def rate_delay(self, now: float, slot: SourceSlot | None = None) -> float:
        """Seconds to wait before starting the next message, and reserve
        its slot (a simple spacing limiter: 1/rate seconds apart), under
        the destination's rate and the source entry's."""
        start = now
        if self.limits.rate:
            start = max(start, self.next_slot)
        if slot is not None and slot.source.rate:
            start = max(start, slot.next_slot)
        if self.limits.rate:
            self.next_slot = start + 1.0 / self.limits.rate
        if slot is not None and slot.source.rate:
            slot.next_slot = start + 1.0 / slot.source.rate
        return start - now
