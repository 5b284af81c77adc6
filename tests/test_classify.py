"""Reply classification from codes only (mailer.replycodes)."""

from __future__ import annotations

import pytest

from mailer.reasons import Reason
from mailer.replycodes import ReplyClass, classify, parse_reply

R = Reason


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (550, "5.1.1 no such user", ("5.1.1", "no such user")),
        (451, "4.7.1 greylisted, try later", ("4.7.1", "greylisted, try later")),
        (250, "2.0.0 Ok: queued as 1234", ("2.0.0", "Ok: queued as 1234")),
        (554, "5.7.28 ", ("5.7.28", "")),
        (550, "5.1.10 null MX", ("5.1.10", "null MX")),
        (552, "5.123.456 big numbers", ("5.123.456", "big numbers")),
        # class digit must match the reply's first digit
        (450, "5.1.1 mismatched class", (None, "5.1.1 mismatched class")),
        (550, "4.2.2 mismatched class", (None, "4.2.2 mismatched class")),
        # no enhanced code, or something that only looks like one
        (550, "no such user", (None, "no such user")),
        (550, "5.1.1.1 not a code", (None, "5.1.1.1 not a code")),
        (550, "5.01.1 leading zero", (None, "5.01.1 leading zero")),
        (550, "5.1.1000 detail too long", (None, "5.1.1000 detail too long")),
        (550, "5.1.1no space", (None, "5.1.1no space")),
        (550, "3.1.1 class 3 does not exist", (None, "3.1.1 class 3 does not exist")),
        (550, "", (None, "")),
        (550, "  5.1.1   padded  ", ("5.1.1", "padded")),
        # multi-line replies repeat the code on every line
        (550, "5.1.1 first line\n5.1.1 second line", ("5.1.1", "first line\nsecond line")),
        (550, "5.7.1 first\nsecond without code", ("5.7.1", "first\nsecond without code")),
    ],
)
def test_parse_reply_splits_only_a_class_matching_enhanced_code(
    code: int, message: str, expected: tuple[str | None, str]
) -> None:
    assert parse_reply(code, message) == expected


def V(reason: Reason, *, permanent: bool, suppress: bool = False) -> ReplyClass:
    return ReplyClass(
        permanent=permanent,
        reason=reason,
        suppress=suppress,
        throttle=reason is Reason.THROTTLED,
    )


DELIVERED = ReplyClass(False, R.DELIVERED, False, False)

CASES: list[tuple[int, str | None, ReplyClass]] = [
    # success
    (250, None, DELIVERED),
    (250, "2.0.0", DELIVERED),
    (251, "2.1.5", DELIVERED),
    # mailbox does not exist: the only suppressing replies
    (550, "5.1.1", V(R.MAILBOX_UNKNOWN, permanent=True, suppress=True)),
    (553, "5.1.1", V(R.MAILBOX_UNKNOWN, permanent=True, suppress=True)),
    (550, "5.1.6", V(R.MAILBOX_UNKNOWN, permanent=True, suppress=True)),
    # mailbox-ish but not "does not exist": no suppression
    (550, "5.1.3", V(R.MAILBOX_UNKNOWN, permanent=True)),
    (550, "5.1.4", V(R.MAILBOX_UNKNOWN, permanent=True)),
    (550, "5.2.1", V(R.MAILBOX_UNKNOWN, permanent=True)),
    (550, "5.1.0", V(R.PERMANENT, permanent=True)),
    (450, "4.1.1", V(R.MAILBOX_UNKNOWN, permanent=False)),
    # destination system
    (550, "5.1.2", V(R.DOMAIN_UNKNOWN, permanent=True)),
    (556, "5.1.10", V(R.DOMAIN_UNKNOWN, permanent=True)),
    (554, "5.4.4", V(R.DOMAIN_UNKNOWN, permanent=True)),
    (521, None, V(R.DOMAIN_UNKNOWN, permanent=True)),
    (556, None, V(R.DOMAIN_UNKNOWN, permanent=True)),
    # our sender refused
    (553, "5.1.8", V(R.POLICY_BLOCK, permanent=True)),
    (553, "5.1.7", V(R.POLICY_BLOCK, permanent=True)),
    # mailbox full
    (552, "5.2.2", V(R.MAILBOX_FULL, permanent=True)),
    (452, "4.2.2", V(R.MAILBOX_FULL, permanent=False)),
    (452, None, V(R.MAILBOX_FULL, permanent=False)),
    (552, None, V(R.MAILBOX_FULL, permanent=True)),
    # policy
    (550, "5.7.1", V(R.POLICY_BLOCK, permanent=True)),
    (554, "5.7.1", V(R.POLICY_BLOCK, permanent=True)),
    (550, "5.7.0", V(R.POLICY_BLOCK, permanent=True)),
    (550, "5.7.23", V(R.POLICY_BLOCK, permanent=True)),
    (550, "5.7.26", V(R.POLICY_BLOCK, permanent=True)),
    (550, "5.7.27", V(R.POLICY_BLOCK, permanent=True)),
    (451, "4.7.26", V(R.POLICY_BLOCK, permanent=False)),
    (554, None, V(R.POLICY_BLOCK, permanent=True)),
    (530, None, V(R.POLICY_BLOCK, permanent=True)),
    # spam: only the registered "mail flood detected"
    (550, "5.7.28", V(R.SPAM_BLOCK, permanent=True)),
    # greylisting
    (451, "4.7.1", V(R.TEMPORARY, permanent=False)),
    (450, "4.7.1", V(R.TEMPORARY, permanent=False)),
    # throttling
    (421, None, V(R.THROTTLED, permanent=False)),
    (421, "4.7.0", V(R.THROTTLED, permanent=False)),
    (421, "4.4.2", V(R.THROTTLED, permanent=False)),
    (451, "4.7.0", V(R.THROTTLED, permanent=False)),
    (450, "4.7.28", V(R.THROTTLED, permanent=False)),
    (451, "4.4.5", V(R.THROTTLED, permanent=False)),
    # connection/routing trouble reported by the server
    (451, "4.4.1", V(R.CONNECTION, permanent=False)),
    (451, "4.4.2", V(R.CONNECTION, permanent=False)),
    # protocol, mail system, content
    (501, "5.5.2", V(R.PROTOCOL, permanent=True)),
    (452, "4.5.3", V(R.PROTOCOL, permanent=False)),
    (554, "5.6.0", V(R.PROTOCOL, permanent=True)),
    (553, "5.6.7", V(R.PROTOCOL, permanent=True)),
    (552, "5.3.4", V(R.PROTOCOL, permanent=True)),
    (452, "4.3.1", V(R.PROTOCOL, permanent=False)),
    (552, "5.2.3", V(R.PROTOCOL, permanent=True)),
    (500, None, V(R.PROTOCOL, permanent=True)),
    (502, None, V(R.PROTOCOL, permanent=True)),
    (503, None, V(R.PROTOCOL, permanent=True)),
    (555, None, V(R.PROTOCOL, permanent=True)),
    # no enhanced code: 550 is ambiguous, other 4xx temporary
    (550, None, V(R.PERMANENT, permanent=True)),
    (551, None, V(R.PERMANENT, permanent=True)),
    (553, None, V(R.PERMANENT, permanent=True)),
    (450, None, V(R.TEMPORARY, permanent=False)),
    (451, None, V(R.TEMPORARY, permanent=False)),
    (454, None, V(R.TEMPORARY, permanent=False)),
    # an enhanced code that says nothing specific falls back to the reply code
    (550, "5.0.0", V(R.PERMANENT, permanent=True)),
    (554, "5.0.0", V(R.POLICY_BLOCK, permanent=True)),
    (451, "4.0.0", V(R.TEMPORARY, permanent=False)),
    (452, "4.0.0", V(R.MAILBOX_FULL, permanent=False)),
    (550, "5.1.99", V(R.PERMANENT, permanent=True)),
    # a class-mismatched or malformed enhanced code is ignored
    (550, "4.1.1", V(R.PERMANENT, permanent=True)),
    (450, "5.1.1", V(R.TEMPORARY, permanent=False)),
    (550, "5.1.1.1", V(R.PERMANENT, permanent=True)),
    (550, "junk", V(R.PERMANENT, permanent=True)),
    # not a final reply at all
    (354, None, V(R.PROTOCOL, permanent=False)),
    (-1, None, V(R.PROTOCOL, permanent=False)),
    (999, None, V(R.PROTOCOL, permanent=False)),
]


@pytest.mark.parametrize(("code", "enhanced", "expected"), CASES)
def test_classify_from_codes(code: int, enhanced: str | None, expected: ReplyClass) -> None:
    assert classify(code, enhanced) == expected


@pytest.mark.parametrize(("code", "enhanced", "expected"), CASES)
def test_suppress_only_for_permanent_mailbox_unknown(
    code: int, enhanced: str | None, expected: ReplyClass
) -> None:
    verdict = classify(code, enhanced)
    if verdict.suppress:
        assert verdict.permanent
        assert verdict.reason is Reason.MAILBOX_UNKNOWN
        assert enhanced in {"5.1.1", "5.1.6"}


@pytest.mark.parametrize("code", [*range(400, 460), *range(500, 560)])
def test_reply_class_alone_decides_transient_or_permanent(code: int) -> None:
    verdict = classify(code, None)
    assert verdict.reason is not R.DELIVERED
    assert verdict.permanent is (code >= 500)
    assert not verdict.suppress


def test_parsed_reply_feeds_classify() -> None:
    enhanced, text = parse_reply(550, "5.1.1 <x@example.test>: Recipient address rejected")
    assert classify(550, enhanced) == V(R.MAILBOX_UNKNOWN, permanent=True, suppress=True)
    assert text == "<x@example.test>: Recipient address rejected"
