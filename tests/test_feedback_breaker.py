"""The per-account circuit breaker trips at its thresholds and not below
(properties over generated outcome sequences)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.config import BreakerConfig
from mailer.feedback.breaker import DAY, Outcome, judge

SMALL = BreakerConfig(min_sends=20, window_sends=50, window_days=7)
NOW = 100 * DAY


def outcomes(
    n: int, *, bounces: int = 0, complaints: int = 0, at: float = NOW - 10
) -> list[Outcome]:
    return [
        Outcome(
            at - i, True, hard_bounce=i < bounces, complaint=bounces <= i < bounces + complaints
        )
        for i in range(n)
    ]


def test_defaults_trip_at_three_complaints_in_a_thousand_and_not_at_two() -> None:
    cfg = BreakerConfig()
    assert judge(outcomes(1000, complaints=3), now=NOW, config=cfg).trip
    assert not judge(outcomes(1000, complaints=2), now=NOW, config=cfg).trip


def test_defaults_trip_at_fifty_hard_bounces_in_a_thousand_and_not_at_forty_nine() -> None:
    cfg = BreakerConfig()
    assert judge(outcomes(1000, bounces=50), now=NOW, config=cfg).trip
    assert not judge(outcomes(1000, bounces=49), now=NOW, config=cfg).trip


def test_below_the_minimum_number_of_sends_nothing_is_judged() -> None:
    assert not judge(outcomes(999, bounces=999), now=NOW, config=BreakerConfig()).trip


def test_sends_with_the_customers_envelope_do_not_count() -> None:
    theirs = [Outcome(NOW - i, False, hard_bounce=True) for i in range(2000)]
    verdict = judge(theirs + outcomes(1000), now=NOW, config=BreakerConfig())
    assert (verdict.sends, verdict.hard_bounces, verdict.trip) == (1000, 0, False)


def test_after_a_release_only_later_sends_are_judged() -> None:
    history = outcomes(1000, bounces=500, at=NOW - 1000)
    assert judge(history, now=NOW, config=BreakerConfig()).trip
    released = judge(history, now=NOW, config=BreakerConfig(), released_at=NOW - 500)
    assert (released.sends, released.trip) == (0, False)


def test_sends_older_than_the_window_days_are_left_out() -> None:
    old = outcomes(1000, bounces=1000, at=NOW - 8 * DAY)
    assert judge(old + outcomes(1000), now=NOW, config=BreakerConfig()).sends == 1000


@st.composite
def sequences(draw: st.DrawFn) -> list[Outcome]:
    n = draw(st.integers(0, 120))
    return [
        Outcome(
            at=NOW - draw(st.floats(0, 9 * DAY)),
            ours=draw(st.booleans()),
            hard_bounce=draw(st.booleans()),
            complaint=draw(st.integers(0, 9)) == 0,
        )
        for _ in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(sequences(), st.sampled_from([0.003, 0.05, 0.1, 0.25]), st.sampled_from([0.05, 0.2, 0.5]))
def test_trips_exactly_when_a_rate_of_the_window_reaches_its_threshold(
    seq: list[Outcome], complaint_rate: float, bounce_rate: float
) -> None:
    cfg = BreakerConfig(
        complaint_rate=complaint_rate, bounce_rate=bounce_rate, min_sends=20, window_sends=50
    )
    verdict = judge(seq, now=NOW, config=cfg)
    window = sorted((o for o in seq if o.ours and o.at >= NOW - 7 * DAY), key=lambda o: -o.at)
    window = window[:50]
    n = len(window)
    bounces = sum(o.hard_bounce for o in window)
    complaints = sum(o.complaint for o in window)
    assert (verdict.sends, verdict.hard_bounces, verdict.complaints) == (n, bounces, complaints)
    # integer thresholds: the smallest counts that reach each rate
    need_c = math.ceil(round(complaint_rate * n, 9))
    need_b = math.ceil(round(bounce_rate * n, 9))
    expected = n >= 20 and (complaints >= need_c or bounces >= need_b)
    assert verdict.trip is expected


@settings(max_examples=200, deadline=None)
@given(st.integers(20, 50), st.sampled_from([0.05, 0.1, 0.2]))
def test_one_bounce_fewer_than_the_threshold_never_trips(n: int, rate: float) -> None:
    cfg = BreakerConfig(bounce_rate=rate, complaint_rate=1.0, min_sends=20, window_sends=50)
    need = math.ceil(round(rate * n, 9))
    assert judge(outcomes(n, bounces=need), now=NOW, config=cfg).trip
    assert not judge(outcomes(n, bounces=need - 1), now=NOW, config=cfg).trip
