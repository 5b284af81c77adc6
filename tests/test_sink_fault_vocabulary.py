"""The sink's one fault vocabulary: each fault validated once, under the
same name in the flags of `mailer sink`, ``set_faults()``, the JSON API and
the inbox's switches."""

from __future__ import annotations

from typing import Any

import pytest

from mailer.cli.main import cli
from mailer.cli.sink import options_from_flags
from mailer.errors import ValidationError
from mailer.sink import FAULTS, Faults
from mailer.sink.faults import fault_changes
from mailer.sink.web.faults import DESCRIPTIONS, Switch


@pytest.mark.parametrize(
    ("values", "field", "reason"),
    [
        ({"tempfail_rate": 1.5}, "tempfail-rate", "above 1"),
        ({"tempfail_rate": -0.1}, "tempfail-rate", "below 0"),
        ({"tempfail_rate": True}, "tempfail-rate", "not a number"),
        ({"slow_banner": -1.0}, "slow-banner", "below 0"),
        ({"slow_replies": -0.5}, "slow-replies", "below 0"),
        ({"drop_after_data": -1}, "drop-after-data", "below 0"),
        ({"drop_after_data": 1.5}, "drop-after-data", "not a whole number"),
        ({"greylist": "yes"}, "greylist", "not true or false"),
        ({"seed": "7"}, "seed", "not a whole number"),
        ({"no_starttls": None}, "no-starttls", "a value is needed"),
    ],
)
def test_a_bad_fault_value_is_refused_naming_the_fault_and_why(
    values: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        Faults(**values)
    assert (caught.value.field, reason in caught.value.reason) == (field, True)


def test_replace_changes_only_the_named_faults_and_refuses_unknown_names() -> None:
    faults = Faults(greylist=True).replace(tempfail_rate=0.5, seed=3)
    assert faults == Faults(greylist=True, tempfail_rate=0.5, seed=3)
    for bad in ("tempfail", "tempfail-rate", "delay"):
        with pytest.raises(ValidationError) as caught:
            faults.replace(**{bad: 1})
        assert (caught.value.field, caught.value.reason) == (bad, "no such fault")


def test_json_changes_take_the_flag_names() -> None:
    assert fault_changes({"tempfail-rate": 0.3, "seed": 7, "no-starttls": True}) == {
        "tempfail_rate": 0.3,
        "seed": 7,
        "no_starttls": True,
    }
    assert Faults(slow_banner=2).to_json()["slow-banner"] == 2
    assert list(Faults().to_json()) == [fault.name for fault in FAULTS]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"tempfail_rate": 0.3}, "tempfail_rate"),  # the JSON name has hyphens
        ({"slow-banner": "2"}, "slow-banner"),
        ({"drop-after-data": -3}, "drop-after-data"),
        ([1, 2], "body"),
    ],
)
def test_bad_json_changes_name_the_key(data: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        fault_changes(data)
    assert caught.value.field == field


def test_every_fault_is_a_flag_of_mailer_sink_under_its_name() -> None:
    command = cli.commands["sink"]
    flags = {opt for param in command.params for opt in param.opts}
    assert {f"--{fault.name}" for fault in FAULTS} <= flags


def test_flags_become_the_same_faults_python_takes() -> None:
    options = options_from_flags(tempfail_rate=0.25, seed=3, no_pipelining=True)
    assert options.faults == Faults(tempfail_rate=0.25, seed=3, no_pipelining=True)
    assert not options.pipelining
    with pytest.raises(ValidationError) as caught:
        options_from_flags(slow_replies=-2.0)
    assert caught.value.field == "slow-replies"


def test_the_inbox_switches_are_named_as_the_faults_they_turn() -> None:
    names = {fault.name for fault in FAULTS}
    scripted = {Switch.DEFER, Switch.REJECT}
    assert {s.value for s in Switch if s not in scripted} <= names


def test_the_drop_switch_says_it_drops_every_message_not_n() -> None:
    assert DESCRIPTIONS[Switch.DROP_AFTER_DATA].startswith("every message")
