"""When to try a deferred send again: pure functions over the retry config."""

from __future__ import annotations

import random

from mailer.config import RetryConfig


def backoff(attempts: int, cfg: RetryConfig, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: exponential
    from ``cfg.base`` by ``cfg.factor``, capped at ``cfg.max_delay``, spread
    by ±``cfg.jitter`` so that sends deferred together do not come back as
    one wave."""
    exponent = max(attempts - 1, 0)
    # cap the exponent first: factor ** attempts overflows long before any
    # real queue gives up
    delay = cfg.base * cfg.factor ** min(exponent, 64)
    delay = min(delay, cfg.max_delay)
    if cfg.jitter:
        delay *= rng.uniform(1 - cfg.jitter, 1 + cfg.jitter)
    return delay


def next_due(
    attempts: int, created_at: float, now: float, cfg: RetryConfig, rng: random.Random
) -> float | None:
    """The time of the next attempt, or None when the send would then be
    older than ``cfg.max_age`` (it fails as expired)."""
    due = now + backoff(attempts, cfg, rng)
    if due - created_at > cfg.max_age:
        return None
    return due


def expired(created_at: float, now: float, cfg: RetryConfig) -> bool:
    return now - created_at > cfg.max_age
