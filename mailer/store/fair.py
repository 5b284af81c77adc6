"""Fair share of the engine across accounts and distributions (pure).

A claim deals its slots out like cards: every lane (an account, or a
distribution within an account) with due mail gets an equal share; a lane
that has fewer due sends than its share drops out and the rest is dealt
again among the others. Within an account the distributions of the best
priority (``high`` before ``normal`` before ``bulk``) are served first, and
only what they leave goes to the next priority.

The per-account rate cap is a token bucket kept in the account's row, so
every worker sharing the store draws from the same bucket: it refills at
``rate_cap / 60`` sends per second and holds at most one second's worth,
which keeps a minute's sends within ``rate_cap + rate_cap / 60``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, TypeVar

from mailer.errors import ValidationError

Priority = Literal["high", "normal", "bulk"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "bulk")
RANK: dict[str, int] = {name: rank for rank, name in enumerate(PRIORITIES)}

L = TypeVar("L")


def priority(value: str, *, field: str = "priority") -> Priority:
    """``value`` as a priority; raises ValidationError naming ``field``."""
    for name in PRIORITIES:
        if value == name:
            return name
    raise ValidationError(field, f"must be one of {', '.join(PRIORITIES)}, not {value!r}")


def _shares(total: int, lanes: int) -> list[int]:
    base, extra = divmod(total, lanes)
    return [base + (1 if index < extra else 0) for index in range(lanes)]


def deal(lanes: Sequence[L], total: int, take: Callable[[L, int], int]) -> int:
    """Deal ``total`` slots over ``lanes`` in rounds: ``take(lane, n)``
    takes up to ``n`` more from a lane and says how many it got; a lane that
    gets fewer than asked is left out of later rounds. Returns how many
    were taken in all."""
    active = list(lanes)
    left = total
    while left > 0 and active:
        still = []
        for lane, share in zip(active, _shares(left, len(active)), strict=True):
            if share == 0:
                still.append(lane)
                continue
            got = take(lane, share)
            left -= got
            if got == share:
                still.append(lane)
        active = still
    return total - left


async def adeal(lanes: Sequence[L], total: int, take: Callable[[L, int], Awaitable[int]]) -> int:
    """:func:`deal` with an awaitable ``take``."""
    active = list(lanes)
    left = total
    while left > 0 and active:
        still = []
        for lane, share in zip(active, _shares(left, len(active)), strict=True):
            if share == 0:
                still.append(lane)
                continue
            got = await take(lane, share)
            left -= got
            if got == share:
                still.append(lane)
        active = still
    return total - left


def rotate(items: Sequence[str], after: str) -> list[str]:
    """``items`` (sorted) starting with the first one after ``after``, the
    ones up to it at the end: where the last claim left off."""
    start = next((i for i, item in enumerate(items) if item > after), 0)
    return [*items[start:], *items[:start]]


def burst(rate_cap: int) -> float:
    """The most a full bucket holds: one second's worth, at least one send."""
    return max(1.0, rate_cap / 60.0)


def tokens(rate_cap: int, held: float | None, held_at: float | None, now: float) -> float:
    """The tokens in an account's bucket at ``now``: ``held`` at ``held_at``
    plus the refill since, up to :func:`burst`. A bucket never drawn from is
    full."""
    full = burst(rate_cap)
    if held is None or held_at is None:
        return full
    return min(full, held + max(0.0, now - held_at) * rate_cap / 60.0)


def drawn_at(held_at: float | None, now: float) -> float:
    """When a bucket drawn from at ``now`` was last filled: a worker whose
    clock lags another's must not refill the bucket a second time."""
    return now if held_at is None else max(held_at, now)


def allowance(rate_cap: int | None, available: float, limit: int) -> int:
    """How many sends an account may have in this claim: ``limit``, or the
    whole tokens in its bucket when it has a cap."""
    if rate_cap is None:
        return limit
    return max(0, min(limit, math.floor(available)))


def by_priority(lanes: Sequence[tuple[str, str]]) -> list[list[str]]:
    """(distribution id, priority) pairs grouped best priority first, ids in
    order within a group; empty groups left out."""
    groups: list[list[str]] = [[] for _ in PRIORITIES]
    for dist_id, name in lanes:
        groups[RANK.get(name, RANK["normal"])].append(dist_id)
    return [sorted(group) for group in groups if group]
