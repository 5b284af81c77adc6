"""MTA-STS grammar (RFC 8461 §3.1, §3.2, §4.1) as pure functions, and the
applied policy (configuration only tightens)."""

from __future__ import annotations

import pytest

from mailer.config import TLSPolicy
from mailer.delivery.tls.applied import Applied, apply_policy
from mailer.delivery.tls.policy import (
    MAX_AGE_LIMIT,
    Mode,
    STSPolicy,
    parse_policy,
    parse_txt,
    pattern_matches,
)
from mailer.errors import PolicyError

GOOD = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 604800\n"


def test_policy_with_lf_line_ends_parses() -> None:
    policy = parse_policy(GOOD)
    assert policy == STSPolicy(Mode.ENFORCE, ("mx1.example.com", "*.example.net"), 604800)


def test_policy_with_crlf_line_ends_parses_the_same() -> None:
    assert parse_policy(GOOD.replace("\n", "\r\n")) == parse_policy(GOOD)


def test_unknown_keys_are_ignored_and_fields_may_come_in_any_order() -> None:
    text = "max_age: 86400\nfuture_key: anything at all\nmx: MX.Example.COM.\nmode: testing\n"
    policy = parse_policy("version: STSv1\n" + text)
    assert policy == STSPolicy(Mode.TESTING, ("mx.example.com",), 86400)


def test_mode_none_needs_no_mx() -> None:
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n").mode is Mode.NONE


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n", "version", "STSv1"),
        ("mode: enforce\nmx: a.b\nmax_age: 1\n", "version", "STSv1"),
        ("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n", "mode", "enforce, testing"),
        ("version: STSv1\nmode: enforce\nmx: a.b\n", "max_age", "whole number"),
        ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -5\n", "max_age", "whole number"),
        ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1e5\n", "max_age", "whole number"),
        (
            f"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: {MAX_AGE_LIMIT + 1}\n",
            "max_age",
            "above the limit",
        ),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", "mx", "at least one"),
        ("version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 1\n", "mx", "pattern"),
        ("version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 1\n", "mx", "pattern"),
        ("version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", "mx", "pattern"),
        ("version: STSv1\nmode: enforce\nmx: *.com\nmax_age: 1\n", "mx", "two labels"),
        ("version: STSv1\nmode: enforce\nmx: -bad-.example.com\nmax_age: 1\n", "mx", "pattern"),
        ("version: STSv1\nmode enforce\nmx: a.b\nmax_age: 1\n", "policy", "line 2"),
    ],
)
def test_malformed_policy_names_the_field_and_the_reason(text: str, field: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert caught.value.field == field
    assert words in caught.value.reason


def test_max_age_at_the_limit_and_zero_are_accepted() -> None:
    for age in (0, MAX_AGE_LIMIT):
        text = f"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: {age}\n"
        assert parse_policy(text).max_age == age


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mx.example.com", "mx.example.com", True),
        ("mx.example.com", "MX.example.com.", True),
        ("mx.example.com", "mx2.example.com", False),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.mx1.example.com", False),
        ("*.example.com", "mx1.example.org", False),
    ],
)
def test_wildcard_matches_exactly_one_leading_label(pattern: str, host: str, matches: bool) -> None:
    assert pattern_matches(pattern, host) is matches


@pytest.mark.parametrize(
    ("records", "policy_id"),
    [
        (["v=STSv1; id=20260101T000000;"], "20260101T000000"),
        (["v=STSv1; id=abc123"], "abc123"),
        (["v=STSv1;id=abc123;"], "abc123"),
        (["v=STSv1; id=abc123; ext=ignored"], "abc123"),
        (["v=spf1 -all", "v=STSv1; id=abc"], "abc"),
        (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two records: no policy
        (["v=STSv1;"], None),  # no id
        (["v=STSv1; id=" + "a" * 33], None),  # id too long
        (["v=STSv1; id=a-b"], None),  # id not alphanumeric
        (["id=abc; v=STSv1"], None),  # v= must come first
        ([], None),
    ],
)
def test_txt_record_gives_the_id_or_none(records: list[str], policy_id: str | None) -> None:
    assert parse_txt(records) == policy_id


ENFORCE = STSPolicy(Mode.ENFORCE, ("mx.example.com",), 86400)
TESTING = STSPolicy(Mode.TESTING, ("mx.example.com",), 86400)


def test_enforce_wins_over_either_configured_level() -> None:
    for level in TLSPolicy:
        applied = apply_policy(level, ENFORCE)
        assert applied.name is Applied.MTA_STS_ENFORCE
        assert applied.level is TLSPolicy.VERIFY
        assert applied.mx == ("mx.example.com",)


def test_configured_verify_tightens_a_testing_policy() -> None:
    applied = apply_policy(TLSPolicy.VERIFY, TESTING)
    assert (applied.name, applied.level, applied.mx) == (Applied.VERIFY, TLSPolicy.VERIFY, None)


def test_testing_policy_delivers_as_encrypt_and_reports() -> None:
    applied = apply_policy(TLSPolicy.ENCRYPT, TESTING)
    assert applied.name is Applied.MTA_STS_TESTING
    assert applied.level is TLSPolicy.ENCRYPT
    assert applied.mx is None
    assert applied.report == ("mx.example.com",)


def test_without_a_published_policy_the_configured_level_applies() -> None:
    assert apply_policy(TLSPolicy.ENCRYPT, None).name is Applied.ENCRYPT
    assert apply_policy(TLSPolicy.VERIFY, None).name is Applied.VERIFY
