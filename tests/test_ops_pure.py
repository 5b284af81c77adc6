"""The pure parts of the operator tools: times, filters, suppression CSV,
the replayable-state rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailer.client import parse_suppression_csv
from mailer.errors import ValidationError
from mailer.reasons import Reason, State
from mailer.store.models import ReplayPlan, SendFilter
from mailer.store.rules import FilterArgs, parse_when, replay_filter

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("30m", NOW - 1800),
        ("2h", NOW - 7200),
        ("1.5d", NOW - 1.5 * 86400),
        ("1w", NOW - 7 * 86400),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC).timestamp()),
        ("2024-05-01T10:30", datetime(2024, 5, 1, 10, 30, tzinfo=UTC).timestamp()),
        ("2024-05-01 10:30:00+02:00", datetime(2024, 5, 1, 8, 30, tzinfo=UTC).timestamp()),
    ],
)
def test_when_is_a_duration_ago_or_an_iso_time_in_utc(text: str, expected: float) -> None:
    assert parse_when("since", text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "5 minutes", "-3h", "2024-13-01", ""])
def test_unreadable_times_name_the_option(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_when("until", text, NOW)
    assert err.value.field == "until"


def test_filter_args_build_a_send_filter() -> None:
    args = FilterArgs(
        states=("bounced",),
        reasons=("policy-block", "expired"),
        distribution="d1",
        domain=" Dest.TEST ",
        since="1h",
        until="2024-05-01T12:00",
    )
    assert args.build(NOW) == SendFilter(
        states=(State.BOUNCED,),
        reasons=(Reason.POLICY_BLOCK, Reason.EXPIRED),
        distribution_id="d1",
        domain="dest.test",
        since=NOW - 3600,
        until=NOW,
    )
    assert FilterArgs().empty
    assert not args.empty


def test_since_must_come_before_until() -> None:
    with pytest.raises(ValidationError) as err:
        FilterArgs(since="1h", until="2h").build(NOW)
    assert err.value.field == "until"


def test_replay_takes_bounced_and_failed_only() -> None:
    assert replay_filter(SendFilter(domain="d.test")).states == (State.BOUNCED, State.FAILED)
    assert replay_filter(SendFilter(states=(State.FAILED,))).states == (State.FAILED,)
    with pytest.raises(ValidationError, match="delivered"):
        replay_filter(SendFilter(states=(State.FAILED, State.DELIVERED)))


def test_replay_plan_skips_global_entries_even_with_include_suppressed() -> None:
    plan = ReplayPlan(matching=10, suppressed=3, globally_suppressed=1)
    assert plan.replayable(include_suppressed=False) == 7
    assert plan.replayable(include_suppressed=True) == 9


def parse(text: str, account: str = "acme") -> list[tuple[str, str, Reason]]:
    rows = parse_suppression_csv(text, account=account, reason=Reason.SUPPRESSED_BOUNCE, now=5.0)
    return [(r.account, r.address, r.reason) for r in rows]


def test_suppression_csv_positional_columns_with_defaults() -> None:
    text = "A@Dest.test\n\nb@dest.test,suppressed-unsubscribe\nc@dest.test,,globex\n"
    assert parse(text) == [
        ("acme", "a@dest.test", Reason.SUPPRESSED_BOUNCE),
        ("acme", "b@dest.test", Reason.SUPPRESSED_UNSUBSCRIBE),
        ("globex", "c@dest.test", Reason.SUPPRESSED_BOUNCE),
    ]


def test_suppression_csv_header_names_and_orders_columns() -> None:
    text = "account,email\n,a@dest.test\nglobex,b@dest.test\n"
    with pytest.raises(ValidationError):
        parse(text)  # a header must start with the address column
    assert parse("email,account\na@dest.test,\nb@dest.test,globex\n", account="") == [
        ("", "a@dest.test", Reason.SUPPRESSED_BOUNCE),
        ("globex", "b@dest.test", Reason.SUPPRESSED_BOUNCE),
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a@dest.test\nnot an address\n", "line 2"),
        ("address,reason\na@dest.test,complained\n", "line 2"),
        ("a@dest.test,suppressed-bounce,acme,extra\n", "line 1"),
        ("address,colour\n", "line 1"),
        ('a@dest.test\n"b@dest.test\n"\nbad\n', "line 4"),
        ('a@dest.test\n"b@dest\n.test"\n', "line 2"),
    ],
)
def test_a_bad_suppression_line_is_named(text: str, line: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse(text)
    assert err.value.field == line


def test_a_suppression_csv_without_addresses_is_refused() -> None:
    with pytest.raises(ValidationError) as err:
        parse("address\n\n")
    assert err.value.field == "csv"
