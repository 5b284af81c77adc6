"""The per-account circuit breaker (pure).

Over a window of an account's sends, the last ``window_sends`` sends or
those of the last ``window_days``, whichever is smaller, and only sends
made since the last release: the hard-bounce rate and the complaint rate.
Only sends with our envelope count, since only their bounces can reach us
(the customer's own envelope sends its bounces to the customer). The
breaker judges once the window holds ``min_sends`` of them and trips when
either rate reaches its threshold.

Rates are compared exactly (as fractions), so "at the threshold" does not
depend on floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from mailer.config import BreakerConfig

__all__ = ["Judgement", "Outcome", "judge"]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One send of the account as the breaker sees it."""

    at: float
    ours: bool
    hard_bounce: bool = False
    complaint: bool = False


@dataclass(frozen=True, slots=True)
class Judgement:
    sends: int
    hard_bounces: int
    complaints: int
    trip: bool
    why: str | None = None

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sends if self.sends else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sends if self.sends else 0.0


def judge(
    outcomes: Iterable[Outcome],
    *,
    now: float,
    config: BreakerConfig,
    released_at: float | None = None,
) -> Judgement:
    """The breaker's judgement over ``outcomes`` (any order)."""
    since = now - config.window_days * DAY
    if released_at is not None:
        since = max(since, released_at)
    eligible = sorted((o for o in outcomes if o.ours and o.at >= since), key=lambda o: -o.at)
    window = eligible[: config.window_sends]
    sends = len(window)
    bounces = sum(1 for o in window if o.hard_bounce)
    complaints = sum(1 for o in window if o.complaint)
    if sends < config.min_sends:
        return Judgement(sends, bounces, complaints, False)
    why = None
    if Fraction(complaints, sends) >= Fraction(str(config.complaint_rate)):
        why = f"complaint rate {complaints}/{sends} reached {config.complaint_rate:.2%}"
    elif Fraction(bounces, sends) >= Fraction(str(config.bounce_rate)):
        why = f"hard-bounce rate {bounces}/{sends} reached {config.bounce_rate:.2%}"
    return Judgement(sends, bounces, complaints, why is not None, why)
