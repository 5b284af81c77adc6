"""The console's pure parts: the chart of the last hour, the form fields,
the signed cookies and the timeline's order."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeTimedSerializer

from mailer.client import Story
from mailer.errors import ValidationError
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Distribution, Event, Send, Throughput
from mailer.store.rules import FilterArgs
from mailer.ui.app import timeline
from mailer.ui.chart import chart_of, deferral_rate
from mailer.ui.forms import filter_args, filter_query, one_line
from mailer.ui.session import Sessions, same_token


def test_the_chart_scales_bars_to_the_busiest_minute_and_plots_the_deferral_rate() -> None:
    minutes = [
        Throughput(minute=600.0, delivered=10, deferred=0),
        Throughput(minute=660.0, delivered=5, deferred=5),
        Throughput(minute=720.0),
    ]
    chart = chart_of(minutes)
    assert chart.peak == 10
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == pytest.approx(2 * heights[1])
    assert heights[2] == 0
    # every bar stands on the baseline
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    rates = [float(point.split(",")[1]) for point in chart.rate_points.split()]
    assert rates[0] == pytest.approx(chart.baseline)  # 0 % deferred
    assert rates[1] < rates[0]  # 50 % deferred
    assert chart.delivered == 15
    assert chart.deferred == 5
    assert chart.rate == pytest.approx(0.25)
    assert "deferral rate 25.0%" in chart.summary
    assert [label for _, label in chart.ticks] == ["00:10"]


def test_an_empty_hour_draws_without_dividing_by_zero() -> None:
    chart = chart_of([Throughput(minute=60.0 * m) for m in range(60)])
    assert chart.peak == 0
    assert all(bar.height == 0 for bar in chart.bars)
    assert deferral_rate([]) == 0.0
    assert len(chart.ticks) == 6


def test_filter_fields_become_the_cli_filters_and_go_back_into_links() -> None:
    args = filter_args(
        {"domain": " Dest.TEST ", "since": "2h", "account": "acme", "distribution": ""},
        ["failed"],
        ["expired"],
    )
    assert args == FilterArgs(
        states=("failed",), reasons=("expired",), domain="dest.test", since="2h", account="acme"
    )
    assert filter_query(args) == [
        ("state", "failed"),
        ("reason", "expired"),
        ("domain", "dest.test"),
        ("since", "2h"),
        ("account", "acme"),
    ]
    assert args.build(7200.0).account == "acme"


@pytest.mark.parametrize(
    ("single", "states", "field"),
    [
        ({"domain": "exa mple"}, [], "domain"),
        ({"domain": "a\r\nb.test"}, [], "domain"),
        ({"distribution": "d1\n"}, [], "distribution"),
        ({"since": "x\r"}, [], "since"),
        ({}, ["failed\n"], "state"),
    ],
)
def test_a_bad_filter_field_is_named(single: dict[str, str], states: list[str], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        filter_args(single, states, [])
    assert err.value.field == field


def test_unknown_states_and_reasons_are_named_when_built() -> None:
    with pytest.raises(ValidationError) as err:
        FilterArgs(states=("lost",)).build(0.0)
    assert err.value.field == "state"
    with pytest.raises(ValidationError) as err:
        FilterArgs(reasons=("gremlins",)).build(0.0)
    assert err.value.field == "reason"


def test_one_line_refuses_line_breaks_and_overlong_values() -> None:
    assert one_line("note", "  fine  ") == "fine"
    for bad in ("a\rb", "a\nb"):
        with pytest.raises(ValidationError, match="CR or LF"):
            one_line("note", bad)
    with pytest.raises(ValidationError, match="at most"):
        one_line("note", "x" * 501)


def test_a_session_cookie_carries_the_keys_digest_never_the_key() -> None:
    sessions = Sessions("secret-one")
    cookie, session = sessions.issue("mk_the-operator-key")
    assert "mk_the-operator-key" not in cookie
    assert sessions.read(cookie) == session
    assert Sessions("secret-two").read(cookie) is None
    assert sessions.read(cookie[:-2] + "xx") is None
    assert sessions.read(None) is None
    forged = URLSafeTimedSerializer("secret-one", salt="mailer.ui.login").dumps({"k": "x"})
    assert sessions.read(forged) is None  # a login cookie is no session
    login_cookie, nonce = sessions.login_nonce()
    assert sessions.login_nonce_of(login_cookie) == nonce
    assert sessions.login_nonce_of(cookie) is None
    assert same_token(session.csrf, session.csrf)
    assert not same_token(None, session.csrf)
    assert not same_token("", session.csrf)


def test_an_expired_session_is_no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = Sessions("secret")
    cookie, _ = sessions.issue("mk_key")
    import mailer.ui.session as session_module

    monkeypatch.setattr(session_module, "SESSION_SECONDS", -1)
    assert sessions.read(cookie) is None


def test_the_timeline_interleaves_attempts_and_events_in_time_order() -> None:
    send = Send(
        id="s1",
        distribution_id="d1",
        account="acme",
        recipient="a@dest.test",
        domain="dest.test",
        name="Anna",
        variables={},
        reference=None,
        state=State.BOUNCED,
        reason=Reason.MAILBOX_UNKNOWN,
        attempts=1,
        created_at=1.0,
        updated_at=5.0,
        due_at=1.0,
        message_id="<m@x>",
    )
    events = [
        Event(1, "s1", "d1", 1.0, State.QUEUED, Reason.QUEUED),
        Event(2, "s1", "d1", 3.0, State.DELIVERED, Reason.DELIVERED),
        Event(3, "s1", "d1", 9.0, State.BOUNCED, Reason.MAILBOX_UNKNOWN, detail="late bounce"),
    ]
    attempts = [Attempt(started_at=2.0, finished_at=2.5, reason=Reason.DELIVERED)]
    story = Story(send, _distribution(), attempts, events, [], [])
    kinds = [(item["kind"], item.get("number")) for item in timeline(story)]
    assert kinds == [("event", None), ("attempt", 1), ("event", None), ("event", None)]
    assert timeline(story)[-1]["e"].detail == "late bounce"


def _distribution() -> Distribution:
    return Distribution(
        id="d1",
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="s",
        html=None,
        text="t",
        unsubscribe_url=None,
        send_at=None,
        tags=(),
        created_at=1.0,
    )
