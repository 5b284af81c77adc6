"""Parsing returned messages: one fixture per layout (written for this
project from public descriptions of each format), RFC 3464, RFC 5965 and
RFC 3834, and input that must not break the parser."""

from __future__ import annotations

import pytest

from mailer.feedback import Action, Kind, parse_message
from mailer.feedback.layouts import DETECTORS
from mailer.feedback.samples import SAMPLES
from mailer.feedback.status import find_reply_code, find_status, recipient, status_from_code
from mailer.reasons import Reason

FIXTURES = SAMPLES

# file → kind, layout, address, action, status, reason, suppress
BOUNCES = {
    "qmail.eml": (
        "bounce",
        "qmail",
        "lena.gone@example.net",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "yahoo.eml": (
        "bounce",
        "yahoo",
        "nobody.here@example-yahoo.test",
        "failed",
        "5.0.0",
        "policy-block",
        False,
    ),
    "exim.eml": (
        "bounce",
        "exim",
        "jan.unknown@example.org",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "exim-delay.eml": (
        "delay",
        "exim",
        "slow.box@example.org",
        "delayed",
        "4.2.2",
        "mailbox-full",
        False,
    ),
    "gmx-de.eml": ("bounce", "gmx", "karl.weg@gmx.example", "failed", "5.0.0", "permanent", False),
    "webde-de-full.eml": (
        "bounce",
        "gmx",
        "voll.postfach@web.example",
        "failed",
        "5.2.2",
        "mailbox-full",
        False,
    ),
    "sendmail.eml": (
        "bounce",
        "sendmail",
        "old.account@example.com",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "sendmail-delay.eml": (
        "delay",
        "sendmail",
        "busy.host@example.com",
        "delayed",
        "4.4.1",
        "connection",
        False,
    ),
    "postfix.eml": (
        "bounce",
        "postfix",
        "moved.away@example.com",
        "failed",
        "5.1.6",
        "mailbox-unknown",
        True,
    ),
    "exchange-legacy.eml": (
        "bounce",
        "exchange-legacy",
        "hans.muster@corp.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "office365.eml": (
        "bounce",
        "office365",
        "anna.left@contoso.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "office365-nocode.eml": (
        "bounce",
        "office365",
        "max.mustermann@fabrikam.example",
        "failed",
        "5.2.2",
        "mailbox-full",
        False,
    ),
    "outlook-com.eml": (
        "bounce",
        "outlook.com",
        "no.such.person@outlook.example",
        "failed",
        "5.5.0",
        "protocol",
        False,
    ),
    "gmail.eml": (
        "bounce",
        "gmail",
        "ghost.user@gmail.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "gmail-delay.eml": (
        "delay",
        "gmail",
        "later.please@example.net",
        "delayed",
        "4.4.0",
        "throttled",
        False,
    ),
    "ses.eml": (
        "bounce",
        "amazon-ses",
        "bounce.me@example.com",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "t-online-de.eml": (
        "bounce",
        "t-online",
        "erna.alt@t-online.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "t-online-full.eml": (
        "bounce",
        "t-online",
        "otto.voll@t-online.example",
        "failed",
        "5.2.2",
        "mailbox-full",
        False,
    ),
    "domino.eml": (
        "bounce",
        "domino",
        "ulrich.ex@lotus.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "courier.eml": (
        "bounce",
        "courier",
        "closed@courier.example",
        "failed",
        "5.2.1",
        "mailbox-unknown",
        False,
    ),
    "groupwise.eml": (
        "bounce",
        "groupwise",
        "gerd.nicht@gw.example",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "rfc3464-postfix.eml": (
        "bounce",
        "rfc3464",
        "first.gone@example.com",
        "failed",
        "5.1.1",
        "mailbox-unknown",
        True,
    ),
    "rfc3464-exchange-de.eml": (
        "bounce",
        "rfc3464",
        "petra.weg@firma.example",
        "failed",
        "5.1.10",
        "domain-unknown",
        False,
    ),
    "rfc3464-ses.eml": (
        "bounce",
        "rfc3464",
        "rita.nope@example.com",
        "failed",
        "5.0.0",
        "permanent",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(BOUNCES))
def test_each_bounce_layout_yields_kind_recipient_status_and_reason(name: str) -> None:
    kind, layout, address, action, status, reason, suppress = BOUNCES[name]
    report = parse_message((FIXTURES / name).read_bytes())
    assert (report.kind.value, report.layout) == (kind, layout), report.problem
    first = report.recipients[0]
    assert first.address == address
    assert first.action.value == action
    assert first.status == status
    assert first.reason.value == reason
    assert first.suppress is suppress


def test_fixtures_cover_every_plain_text_layout_and_at_least_fifteen() -> None:
    layouts = {entry[1] for entry in BOUNCES.values()}
    assert {d.name for d in DETECTORS} <= layouts
    assert len(layouts) >= 15


def test_fixtures_are_in_german_and_english() -> None:
    german = [n for n in BOUNCES if n.endswith("-de.eml") or "-de-" in n]
    assert len(german) >= 3
    assert "Empfänger" in (FIXTURES / "gmx-de.eml").read_text(encoding="utf-8")


def test_dsn_reports_every_recipient_block_envid_and_returned_message_id() -> None:
    report = parse_message((FIXTURES / "rfc3464-postfix.eml").read_bytes())
    assert [(r.address, r.action) for r in report.recipients] == [
        ("first.gone@example.com", Action.FAILED),
        ("second.full@example.com", Action.DELAYED),
    ]
    assert report.envid == "0190abcdef0123456789ab000001"
    assert report.original_message_id == "<dsn0001@mailer.test>"
    assert report.feedback_id == "dist1:acct1:survey:mailer"
    first = report.recipients[0]
    assert first.remote_mta == "mx.example.com"
    assert first.reply_code == 550
    assert "User unknown" in (first.diagnostic or "")


def test_dsn_with_only_delayed_blocks_is_a_delay() -> None:
    raw = (FIXTURES / "rfc3464-postfix.eml").read_bytes()
    raw = raw.replace(b"Action: failed", b"Action: delayed")
    report = parse_message(raw)
    assert report.kind is Kind.DELAY
    assert all(not r.suppress for r in report.recipients)


@pytest.mark.parametrize(
    ("name", "feedback_type", "recipient", "message_id"),
    [
        ("arf-yahoo.eml", "abuse", "complainer@yahoo.example", "<arf0001@mailer.test>"),
        ("arf-microsoft.eml", "abuse", None, "<arf0002@mailer.test>"),
        (
            "arf-dmarc-auth-failure.eml",
            "auth-failure",
            "someone@receiver.example",
            "<arf0003@mailer.test>",
        ),
    ],
)
def test_arf_reports_of_two_providers_and_a_dmarc_failure(
    name: str, feedback_type: str, recipient: str | None, message_id: str
) -> None:
    report = parse_message((FIXTURES / name).read_bytes())
    assert report.kind is Kind.COMPLAINT
    assert report.feedback_type == feedback_type
    assert report.original_recipient == recipient  # a redacted one is no address
    assert report.original_message_id == message_id


@pytest.mark.parametrize(
    ("name", "sender", "in_reply_to"),
    [
        ("autoreply-en.eml", "pat@example.com", "<auto0001@mailer.test>"),
        ("autoreply-de.eml", "gisela@beispiel.example", None),
        ("autoreply-exchange-de.eml", "bernd@firma.example", "<auto0003@mailer.test>"),
    ],
)
def test_german_and_english_auto_replies(name: str, sender: str, in_reply_to: str | None) -> None:
    report = parse_message((FIXTURES / name).read_bytes())
    assert report.kind is Kind.AUTOREPLY
    assert report.recipients == ()
    assert report.original_recipient == sender
    assert report.original_message_id == in_reply_to


def test_a_dsn_marked_auto_submitted_is_a_bounce_not_an_auto_reply() -> None:
    report = parse_message((FIXTURES / "postfix.eml").read_bytes())
    assert b"Auto-Submitted: auto-replied" in (FIXTURES / "postfix.eml").read_bytes()
    assert report.kind is Kind.BOUNCE


def test_a_human_reply_is_unknown_and_says_why() -> None:
    report = parse_message((FIXTURES / "unknown-plain.eml").read_bytes())
    assert report.kind is Kind.UNKNOWN
    assert report.problem == "no known report or bounce layout"


# bad input ------------------------------------------------------------------


def test_broken_mime_is_unknown_not_an_exception() -> None:
    raw = (
        b"From: x@example.com\r\nContent-Type: multipart/report; report-type=delivery-status;"
        b' boundary="never-closed"\r\n\r\n--never-closed\r\n'
        b"Content-Type: message/delivery-status\r\n"
        b"\r\nReporting-MTA dns example\r\n\r\nFinal-Recipient rfc822\r\n"
    )
    report = parse_message(raw)
    assert report.kind is Kind.UNKNOWN
    assert report.problem


def test_undecodable_bytes_and_a_bogus_charset_still_parse() -> None:
    raw = (FIXTURES / "qmail.eml").read_bytes().replace(
        b"Subject: failure notice",
        b"Subject: \xff\xfe\x80 failure\r\nContent-Type: text/plain; charset=x-nonsense",
    ) + b"\n\xc3\x28\xff\xff trailing garbage\n"
    report = parse_message(raw)
    assert report.kind is Kind.BOUNCE
    assert report.recipients[0].address == "lena.gone@example.net"


@pytest.mark.parametrize(
    "raw", [b"", b"\x00\x01\x02", b"\r\n\r\n", b"Subject: x\n\n" + b"A" * 100_000]
)
def test_garbage_is_unknown(raw: bytes) -> None:
    assert parse_message(raw).kind is Kind.UNKNOWN


def test_a_dsn_with_a_thousand_recipient_blocks_reports_them_all() -> None:
    blocks = b"".join(
        b"Final-Recipient: rfc822; user%d@example.com\nAction: failed\nStatus: 5.1.1\n\n" % i
        for i in range(1000)
    )
    raw = (
        b"From: MAILER-DAEMON@example.com\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain\n\nfailed\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; example.com\n\n"
        + blocks
        + b"--b--\n"
    )
    report = parse_message(raw)
    assert report.kind is Kind.BOUNCE
    assert len(report.recipients) == 1000
    assert report.recipients[999].address == "user999@example.com"


# status derivation ------------------------------------------------------------


def test_status_is_found_in_the_quoted_reply_then_derived_from_its_code() -> None:
    assert find_status("said: 550 5.1.1 <a@b> unknown") == "5.1.1"
    assert find_status("version 1.2.3.4 only") is None
    assert find_reply_code("smtp; 552 quota") == 552
    assert status_from_code(552) == "5.2.2"
    assert status_from_code(599) == "5.0.0"
    derived = recipient("a@example.com", Action.FAILED, diagnostic="552 over quota")
    assert (derived.status, derived.reason) == ("5.2.2", Reason.MAILBOX_FULL)


def test_phrases_apply_only_without_any_code() -> None:
    import re

    phrases = ((re.compile("unknown user"), "5.1.1"),)
    with_code = recipient(
        "a@example.com", Action.FAILED, diagnostic="554 unknown user", phrases=phrases
    )
    assert with_code.status == "5.0.0"
    without = recipient("a@example.com", Action.FAILED, diagnostic="unknown user", phrases=phrases)
    assert without.status == "5.1.1"
    assert without.suppress


def test_a_failed_block_with_a_transient_status_is_final_but_suppresses_nobody() -> None:
    gave_up = recipient("a@example.com", Action.FAILED, status="4.4.7", diagnostic="expired")
    assert gave_up.status == "4.4.7"
    assert gave_up.reason is Reason.PERMANENT
    assert not gave_up.suppress


def test_a_delayed_block_never_suppresses() -> None:
    delayed = recipient("a@example.com", Action.DELAYED, status="5.1.1")
    assert not delayed.suppress


# ---- the fast paths keep the parser's answers -------------------------------


def _tree(msg: object) -> list[tuple[str, list[tuple[str, str]], object]]:
    from email.message import Message

    assert isinstance(msg, Message)
    return [
        (
            part.get_content_type(),
            [(k, str(v)) for k, v in part.items()],
            None if part.is_multipart() else part.get_payload(),
        )
        for part in msg.walk()
    ]


ODD_HEADS = [
    b"",
    b"Subject: no body and no blank line",
    b"Subject: x\r\n\r\nbody\r\n",
    b"Subject: x\nthis line is not a header\n\nbody",
    b"\nbody right away",
    b"From envelope@example.org\nSubject: a\n folded\n\nbody\x0cform feed\n\nmore",
    b"Subject: a\x0cb\n\nbody",
    b"X-Raw: \xff\xfe\n\n\xffbody",
    b"Subject: old Macs\rX-A: b\r\rbody\r",
    b"Subject: a\x0bb\x1cX-A: c\n\nbody",
    b"Subject: a\n\x0c\nbody",
    b"Subject: a\n\t\n\nbody",
    b":odd\n\nbody",
    b"Subject: a\r\n\r\n",
    b"Content-Type: text/plain\ncontent-type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n",
    b"Content-Type : multipart/mixed; boundary=b\n\n--b\n\nx\n--b--\n",
]


@pytest.mark.parametrize(
    "raw",
    [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))] + ODD_HEADS,
    ids=[path.name for path in sorted(FIXTURES.glob("*.eml"))]
    + [f"odd-{i}" for i in range(len(ODD_HEADS))],
)
def test_loading_gives_the_tree_and_defects_the_stdlib_parser_gives(raw: bytes) -> None:
    from email import message_from_bytes
    from email.policy import compat32

    from mailer.feedback import mime

    full = message_from_bytes(raw, policy=compat32)
    loaded = mime.load(raw)
    assert _tree(loaded) == _tree(full)
    assert [type(d) for d in loaded.defects] == [type(d) for d in full.defects]
    assert loaded.get_unixfrom() == full.get_unixfrom()


def test_a_part_forgets_its_content_type_when_its_headers_change() -> None:
    from mailer.feedback import mime

    msg = mime.load(b"Content-Type: text/plain\n\nhello\n")
    assert msg.get_content_type() == "text/plain"
    msg.replace_header("Content-Type", "text/html")
    assert msg.get_content_type() == "text/html"
    del msg["Content-Type"]
    assert msg.get_content_type() == "text/plain"
    msg.set_default_type("message/rfc822")
    assert msg.get_content_type() == "message/rfc822"
    msg["Content-Type"] = "multipart/report"
    assert msg.get_content_type() == "multipart/report"


def _variants(text: str) -> list[str]:
    # what case-insensitive matching also accepts: capitals, the Kelvin
    # sign for k, the long s, dotted and dotless capital I
    return [
        text,
        text.upper(),
        text.replace("k", "\u212a"),
        text.replace("s", "\u017f"),
        text.replace("i", "\u0130"),
        text.replace("i", "\u0131"),
        text.upper().replace("I", "\u0130"),
    ]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.eml")), ids=lambda p: p.name)
def test_every_text_a_marker_finds_passes_its_layouts_cheap_test(path: object) -> None:
    from pathlib import Path

    from mailer.feedback import mime
    from mailer.feedback.layouts import Layout, fold

    assert isinstance(path, Path)
    text = mime.first_text(mime.load(path.read_bytes()))
    for variant in _variants(text):
        for detector in DETECTORS:
            assert isinstance(detector, Layout)
            if detector.marker.search(variant):
                assert detector.could_be(fold(variant)), (detector.name, variant[:80])


def test_every_layout_has_its_cheap_test() -> None:
    from mailer.feedback.layouts import Layout

    for detector in DETECTORS:
        assert isinstance(detector, Layout)
        assert detector.hints, detector.name
        assert all(hint == hint.casefold() for hint in detector.hints), detector.name


HEADERS_ONLY_ARF = b"""From: <fbl@provider.test>
To: <fbl@bounces.platform.test>
Subject: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b1"

--b1
Content-Type: text/plain

A complaint.

--b1
Content-Type: message/feedback-report

Feedback-Type: abuse
Version: 1

--b1
Content-Type: text/rfc822-headers

From: survey@netigate.se
To: Someone <someone@inbox.test>
Feedback-ID: 01ab:acct-1:
 survey:mailer
Subject: Your opinion

--b1--
"""


def test_a_complaint_with_only_headers_gives_its_feedback_id_and_recipient() -> None:
    from mailer.feedback.processor import recipient_of

    report = parse_message(HEADERS_ONLY_ARF)
    assert report.kind is Kind.COMPLAINT
    assert report.original_message_id is None
    assert report.original_recipient == "someone@inbox.test"
    # the folded header comes back unfolded: what the reader then rejects
    # is the space folding left, never the line break
    assert report.feedback_id == "01ab:acct-1: survey:mailer"
    assert recipient_of(report) == "someone@inbox.test"


def test_the_recipient_of_a_report_is_the_one_address_it_names() -> None:
    from mailer.feedback.model import RecipientResult, Report
    from mailer.feedback.processor import recipient_of

    def block(address: str) -> RecipientResult:
        return RecipientResult(
            address, Action.FAILED, "5.1.1", 550, None, None, Reason.MAILBOX_UNKNOWN, True
        )

    assert recipient_of(Report(Kind.COMPLAINT, "arf")) is None
    one = Report(Kind.BOUNCE, "rfc3464", recipients=(block("A@x.test"), block("a@x.test")))
    assert recipient_of(one) == "a@x.test"
    two = Report(Kind.BOUNCE, "rfc3464", recipients=(block("a@x.test"), block("b@x.test")))
    assert recipient_of(two) is None


@pytest.mark.parametrize("local", ["anna", "anna+survey", "a.n$n*a?"])
def test_a_gmail_bounce_without_a_response_section_reads_the_reason_for_any_address(
    local: str,
) -> None:
    # the sentence after the address is the reason; an address is text, not
    # a pattern ("+" and "." are common in local parts)
    text = (
        "** Address not found **\n\n"
        f"Your message wasn't delivered to {local}@dest.test because the address "
        "couldn't be found, or is unable to receive mail.\n\nLearn more.\n"
    )
    [gmail] = [d for d in DETECTORS if d.name == "gmail"]
    found = gmail.detect(text)
    assert found is not None
    [result] = found
    assert result.address == f"{local}@dest.test"
    assert (result.status, result.reason, result.suppress) == (
        "5.1.1",
        Reason.MAILBOX_UNKNOWN,
        True,
    )
