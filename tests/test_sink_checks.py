"""What the developer sink tells about a message: the pure header checks,
DKIM verification with the keys_dir fallback, flag parsing, the printed
forms; and a signed message delivered over STARTTLS to a running sink."""

from __future__ import annotations

import email.policy
import smtplib
import ssl
from email import message_from_bytes
from pathlib import Path

import pytest

from mailer.delivery.smtp import open_session
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import ValidationError
from mailer.message.keys import KeyStore
from mailer.message.signing import SignatureCheck, Signer
from mailer.sink import DevSink, Faults, KeySource, SinkOptions, parse_reply_rule
from mailer.sink.checks import (
    check_date,
    check_from,
    check_list_unsubscribe,
    check_message_id,
    check_text_part,
    dkim_signed_headers,
    parse_message,
    run_checks,
)
from mailer.sink.options import BadCert, ReplyRule
from mailer.sink.record import SinkMessage
from mailer.sink.report import format_line, message_json, trace_headers
from mailer.sink.verify import DkimResult, LocalKeys, Verifier, dkim_result
from tests.conftest import CUSTOMER_DOMAIN, OUR_DOMAIN

HEAD = (
    "From: ACME HR <hr@acme.test>\r\n"
    "To: anna@dest.test\r\n"
    "Subject: Ihre Meinung zählt\r\n"
    "Date: Mon, 06 May 2024 10:00:00 +0000\r\n"
    "Message-ID: <abc.1@mailer.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "List-Unsubscribe: <https://survey.test/u/1>, <mailto:u@survey.test>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
)
TEXT_BODY = "Content-Type: text/plain; charset=utf-8\r\n\r\nHallo Anna\r\n"
GOOD = (HEAD + TEXT_BODY).encode()
ALTERNATIVE = (
    HEAD
    + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
    + "--b\r\nContent-Type: text/plain\r\n\r\nHallo\r\n"
    + "--b\r\nContent-Type: text/html\r\n\r\n<p>Hallo</p>\r\n--b--\r\n"
).encode()
SIGNED_H = (
    "DKIM-Signature: v=1; a=rsa-sha256; d=mailer.test; s=x;\r\n"
    " h=from:list-unsubscribe:list-unsubscribe-post; bh=x; b=x\r\n"
)


def parsed(data: bytes | str) -> email.message.EmailMessage:
    return parse_message(data.encode() if isinstance(data, str) else data)


def without(data: bytes, header: str) -> bytes:
    return b"".join(
        line + b"\r\n"
        for line in data.split(b"\r\n")[:-1]
        if not line.lower().startswith(header.lower().encode() + b":")
    )


def signer(keys_dir: Path) -> Signer:
    return Signer(KeyStore(keys_dir).load_all(), our_domain=OUR_DOMAIN)


# -- header checks -------------------------------------------------------------


def test_a_complete_signed_invitation_passes_every_check() -> None:
    checks = run_checks(parsed(SIGNED_H.encode() + GOOD))
    assert [c.name for c in checks] == [
        "date",
        "message-id",
        "list-unsubscribe",
        "text-part",
        "from",
    ]
    assert all(c.ok for c in checks), checks


@pytest.mark.parametrize(
    ("date", "why"),
    [
        (None, "no Date header"),
        ("yesterday", "not an RFC 5322 date"),
        ("Mon, 06 May 2024 10:00:00 -0000", "no time zone"),
    ],
)
def test_date_must_be_present_parseable_and_zoned(date: str | None, why: str) -> None:
    data = without(GOOD, "Date")
    if date is not None:
        data = f"Date: {date}\r\n".encode() + data
    check = check_date(parsed(data))
    assert not check.ok
    assert why in check.detail


def test_two_date_headers_fail() -> None:
    check = check_date(parsed(b"Date: Mon, 06 May 2024 10:00:00 +0000\r\n" + GOOD))
    assert (check.ok, check.detail) == (False, "2 Date headers (RFC 5322 allows one)")


def test_message_id_needs_angle_brackets_and_an_at() -> None:
    assert check_message_id(parsed(GOOD)).detail == "<abc.1@mailer.test>"
    bad = b"Message-ID: abc.1-mailer.test\r\n" + without(GOOD, "Message-ID")
    assert not check_message_id(parsed(bad)).ok
    assert check_message_id(parsed(without(GOOD, "Message-ID"))).detail == "no Message-ID header"


def test_one_click_unsubscribe_needs_https_post_header_and_dkim_coverage() -> None:
    ok = check_list_unsubscribe(parsed(SIGNED_H.encode() + GOOD))
    assert (ok.ok, ok.detail) == (True, "one-click https://survey.test/u/1")
    unsigned = check_list_unsubscribe(parsed(GOOD))
    assert not unsigned.ok
    assert "DKIM" in unsigned.detail
    no_post = check_list_unsubscribe(
        parsed(SIGNED_H.encode() + without(GOOD, "List-Unsubscribe-Post"))
    )
    assert not no_post.ok
    assert "List-Unsubscribe-Post" in no_post.detail
    mailto_only = (
        SIGNED_H.encode()
        + b"List-Unsubscribe: <mailto:u@survey.test>\r\n"
        + without(GOOD, "List-Unsubscribe")
    )
    assert "https" in check_list_unsubscribe(parsed(mailto_only)).detail
    wrong_post = (
        SIGNED_H.encode()
        + b"List-Unsubscribe-Post: yes\r\n"
        + without(GOOD, "List-Unsubscribe-Post")
    )
    assert check_list_unsubscribe(parsed(wrong_post)).detail == "List-Unsubscribe-Post is 'yes'"
    missing = check_list_unsubscribe(parsed(without(GOOD, "List-Unsubscribe")))
    assert missing.detail == "no List-Unsubscribe header"


def test_list_unsubscribe_with_two_web_uris_fails() -> None:
    two = (
        SIGNED_H.encode()
        + b"List-Unsubscribe: <https://mailer.test/u/1>, <https://survey.test/u/1>\r\n"
        + without(GOOD, "List-Unsubscribe")
    )
    result = check_list_unsubscribe(parsed(two))
    assert not result.ok
    assert "more than one web URI" in result.detail


def test_the_dev_servers_loopback_http_link_passes_as_a_dev_link() -> None:
    dev = (
        SIGNED_H.encode()
        + b"List-Unsubscribe: <http://127.0.0.1:8025/u/AbC>\r\n"
        + without(GOOD, "List-Unsubscribe")
    )
    result = check_list_unsubscribe(parsed(dev))
    assert result.ok
    assert result.detail == "one-click http://127.0.0.1:8025/u/AbC (dev; https in production)"
    elsewhere = (
        SIGNED_H.encode()
        + b"List-Unsubscribe: <http://survey.test/u/1>\r\n"
        + without(GOOD, "List-Unsubscribe")
    )
    assert not check_list_unsubscribe(parsed(elsewhere)).ok


def test_dkim_signed_headers_reads_each_signatures_h_tag() -> None:
    data = (
        SIGNED_H.encode() + b"DKIM-Signature: v=1; d=x.test; s=y;\r\n h=From : To; b=z\r\n" + GOOD
    )
    assert dkim_signed_headers(parsed(data)) == [
        {"from", "list-unsubscribe", "list-unsubscribe-post"},
        {"from", "to"},
    ]


def test_text_part_found_in_plain_and_alternative_messages() -> None:
    assert check_text_part(parsed(GOOD)).ok
    assert check_text_part(parsed(ALTERNATIVE)).ok


def test_html_only_or_empty_text_fails_the_text_part_check() -> None:
    html_only = HEAD + "Content-Type: text/html\r\n\r\n<p>Hallo</p>\r\n"
    check = check_text_part(parsed(html_only))
    assert (check.ok, check.detail) == (False, "no text/plain part in text/html")
    empty = HEAD + "Content-Type: text/plain\r\n\r\n \r\n"
    assert check_text_part(parsed(empty)).detail == "the text/plain part is empty"


def test_from_and_reply_to_are_named_in_the_detail() -> None:
    data = b"Reply-To: Kunde <kunde@acme.test>\r\n" + GOOD
    check = check_from(parsed(data))
    assert (check.ok, check.detail) == (True, "From: hr@acme.test, Reply-To: kunde@acme.test")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (b"From: a@acme.test, b@acme.test\r\n", "2 mailboxes"),
        (b"From: nobody\r\n", "no domain"),
        (b"From: a@acme.test\r\nFrom: b@acme.test\r\n", "2 From headers"),
        (b"From: a@acme.test\r\nReply-To: <<broken\r\n", "Reply-To"),
        (b"", "no From header"),
    ],
)
def test_from_must_be_one_mailbox_and_reply_to_valid(headers: bytes, why: str) -> None:
    check = check_from(parsed(headers + without(GOOD, "From")))
    assert not check.ok
    assert why in check.detail


def test_a_headerless_message_fails_the_header_checks_without_raising() -> None:
    checks = run_checks(parsed(b"\x00\xff not a message \r\n\r\n"))
    failed = {c.name for c in checks if not c.ok}
    assert failed == {"date", "message-id", "list-unsubscribe", "from"}


# -- DKIM results --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ok", "source", "result"),
    [
        (True, KeySource.DNS, "pass"),
        (True, KeySource.KEYS_DIR, "pass"),
        (False, KeySource.DNS, "fail"),
        (False, KeySource.MISSING, "permerror"),
        (False, KeySource.DNS_ERROR, "temperror"),
        (False, None, "fail"),
    ],
)
def test_dkim_result_words(ok: bool, source: KeySource | None, result: str) -> None:
    check = SignatureCheck("d.test", "s1", "rsa-sha256", ok, "detail")
    assert dkim_result(check, source).result == result


async def test_every_signature_passes_against_the_published_keys(
    dns_server: DNSServer, keys_dir: Path
) -> None:
    signed = signer(keys_dir).sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    results = await Verifier(Resolver([dns_server.address]), keys_dir=None).verify(signed)
    assert [(r.domain, r.selector, r.result, r.key_source) for r in results] == [
        (CUSTOMER_DOMAIN, "cust1", "pass", KeySource.DNS),
        (OUR_DOMAIN, "rsa1", "pass", KeySource.DNS),
        (OUR_DOMAIN, "ed1", "pass", KeySource.DNS),
    ]


async def test_a_message_altered_after_signing_fails(dns_server: DNSServer, keys_dir: Path) -> None:
    signed = signer(keys_dir).sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    altered = signed.replace(b"Hallo Anna", b"Hallo Eve!")
    results = await Verifier(Resolver([dns_server.address]), keys_dir=None).verify(altered)
    assert [r.result for r in results] == ["fail", "fail", "fail"]
    assert all("body hash" in r.detail for r in results)


async def test_selector_missing_in_dns_is_verified_with_the_local_key(
    dns_server: DNSServer, keys_dir: Path
) -> None:
    dns_server.remove(f"cust1._domainkey.{CUSTOMER_DOMAIN}")
    signed = signer(keys_dir).sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    results = await Verifier(Resolver([dns_server.address]), keys_dir).verify(signed)
    assert [(r.result, r.key_source) for r in results] == [
        ("pass", KeySource.KEYS_DIR),
        ("pass", KeySource.DNS),
        ("pass", KeySource.DNS),
    ]


async def test_key_nowhere_is_permerror_and_dns_failure_temperror(
    dns_server: DNSServer, keys_dir: Path, tmp_path: Path
) -> None:
    dns_server.remove(f"cust1._domainkey.{CUSTOMER_DOMAIN}")
    dns_server.fail(f"rsa1._domainkey.{OUR_DOMAIN}")
    signed = signer(keys_dir).sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    verifier = Verifier(Resolver([dns_server.address], timeout=1), tmp_path / "empty")
    results = await verifier.verify(signed)
    assert [(r.result, r.key_source) for r in results] == [
        ("permerror", KeySource.MISSING),
        ("temperror", KeySource.DNS_ERROR),
        ("pass", KeySource.DNS),
    ]


async def test_unsigned_message_has_no_dkim_results(tmp_path: Path) -> None:
    assert await Verifier(None, tmp_path).verify(GOOD) == []


def test_local_keys_finds_a_key_generated_after_the_first_lookup(tmp_path: Path) -> None:
    local = LocalKeys(tmp_path)
    assert local.record("new._domainkey.late.test") is None
    KeyStore(tmp_path).generate("late.test", "new", algorithm="ed25519")
    record = local.record("NEW._domainkey.late.test.")
    assert record is not None
    assert record.startswith("v=DKIM1; k=ed25519; p=")
    assert local.record("not-a-dkim-name.late.test") is None


# -- options, printed forms ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("unknown*@*=550 5.1.1 no such user", ReplyRule("unknown*@*", "550 5.1.1 no such user")),
        ("data:*@spam.test=554 5.7.1 spam", ReplyRule("*@spam.test", "554 5.7.1 spam", "data")),
        ("a=b@x.test=452 4.2.2 full", ReplyRule("a=b@x.test", "452 4.2.2 full")),
        ("*=421", ReplyRule("*", "421")),
    ],
)
def test_reply_rules_parse(text: str, rule: ReplyRule) -> None:
    assert parse_reply_rule(text) == rule


@pytest.mark.parametrize(
    "text", ["no-equals", "x@y=250 2.0.0 ok", "x@y=550 4.1.1 mixed classes", "=550 5.1.1 x"]
)
def test_malformed_reply_rules_are_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_reply_rule(text)
    assert caught.value.field == "reply"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"faults": Faults(no_starttls=True), "bad_cert": BadCert.EXPIRED}, "no-starttls"),
        ({"cert": (Path("a"), Path("b")), "bad_cert": BadCert.EXPIRED}, "bad-cert"),
    ],
)
def test_contradicting_or_out_of_range_options_name_the_flag(kw: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SinkOptions(**kw)
    assert caught.value.field == field


def sample_message(dkim: tuple[DkimResult, ...]) -> SinkMessage:
    return SinkMessage(
        id="1",
        mail_from="bounce@mailer.test",
        rcpt_tos=("anna@dest.test",),
        data=GOOD,
        tls_version="TLSv1.3",
        peer="127.0.0.1:4000",
        received_at=1715000000.0,
        dkim=dkim,
        checks=run_checks(parsed(GOOD)),
    )


def test_printed_line_tells_envelope_subject_tls_dkim_and_checks() -> None:
    dkim = (
        DkimResult(OUR_DOMAIN, "rsa1", "rsa-sha256", "pass", "pass", KeySource.KEYS_DIR),
        DkimResult(CUSTOMER_DOMAIN, "c", "rsa-sha256", "fail", "body hash mismatch", KeySource.DNS),
    )
    line = format_line(sample_message(dkim))
    assert line.startswith("2024-05-06T12:53:20.000Z <bounce@mailer.test> → <anna@dest.test> ")
    assert '"Ihre Meinung zählt" TLSv1.3' in line
    assert (
        "dkim: d=mailer.test s=rsa1 pass (key: keys_dir), d=acme.test s=c fail (body hash mismatch)"
        in line
    )
    assert "list-unsubscribe FAIL (not covered by a DKIM signature" in line
    assert "\n" not in line


def test_json_form_has_the_same_facts() -> None:
    data = message_json(sample_message(()))
    assert data["subject"] == "Ihre Meinung zählt"
    assert data["dkim"] == []
    assert data["dkim_pass"] is False
    assert data["checks_ok"] is False
    assert {c["name"]: c["ok"] for c in data["checks"]}["date"] is True


def test_trace_headers_carry_authentication_results() -> None:
    dkim = (DkimResult(OUR_DOMAIN, "rsa1", "rsa-sha256", "pass", "pass", KeySource.DNS),)
    trace = trace_headers(
        hostname="mx.sink.test",
        mail_from="b@mailer.test",
        rcpt_tos=("anna@dest.test", "bob@dest.test"),
        peer="127.0.0.1:4000",
        tls_version="TLSv1.3",
        received_at=1715000000.0,
        dkim=dkim,
        checks=run_checks(parsed(SIGNED_H.encode() + GOOD)),
    )
    msg = message_from_bytes(trace + b"\n", policy=email.policy.default)
    assert msg["Return-Path"] == "<b@mailer.test>"
    assert msg.get_all("Delivered-To") == ["anna@dest.test", "bob@dest.test"]
    assert "with ESMTPS (TLSv1.3)" in msg["Received"]
    assert (
        msg["Authentication-Results"]
        == "mx.sink.test; dkim=pass header.d=mailer.test header.s=rsa1"
    )
    assert msg["X-Mailer-Sink-Checks"] == "ok"


# -- a running sink --------------------------------------------------------------


async def test_signed_message_received_over_starttls_shows_pass_and_altered_shows_fail(
    dns_server: DNSServer, keys_dir: Path, certs: TestCerts, tmp_path: Path
) -> None:
    signed = signer(keys_dir).sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    altered = signed.replace(b"Subject: Ihre Meinung", b"Subject: Deine Meinung")
    options = SinkOptions(maildir=tmp_path / "Maildir")
    async with DevSink(options, nameservers=[dns_server.address], certs=certs) as sink:
        session = await open_session(
            "mx.sink.test", sink.host, sink.port, helo="client.test", timeout=10
        )
        async with session:
            await session.send("bounce@mailer.test", "anna@dest.test", signed)
            await session.send("bounce@mailer.test", "anna@dest.test", altered)
        first, second = await sink.await_messages(2)
    assert first.tls_version in ("TLSv1.2", "TLSv1.3")
    assert [(r.domain, r.result) for r in first.dkim] == [
        (CUSTOMER_DOMAIN, "pass"),
        (OUR_DOMAIN, "pass"),
        (OUR_DOMAIN, "pass"),
    ]
    assert first.dkim_pass
    assert first.checks_ok
    assert [r.result for r in second.dkim] == ["fail", "fail", "fail"]
    assert not second.dkim_pass


def test_sink_without_dns_uses_only_the_key_store(keys_dir: Path) -> None:
    signed = signer(keys_dir).sign(GOOD)
    with DevSink(nameservers=None, keys_dir=keys_dir) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.starttls(context=ssl._create_unverified_context())
            client.sendmail("bounce@mailer.test", ["anna@dest.test"], signed)
        [message] = sink.wait_for(1)
    assert [(r.result, r.key_source) for r in message.dkim] == [
        ("pass", KeySource.KEYS_DIR),
        ("pass", KeySource.KEYS_DIR),
    ]


async def test_a_failed_key_lookup_is_not_repeated_for_a_while(
    dns_server: DNSServer, keys_dir: Path
) -> None:
    name = f"rsa1._domainkey.{OUR_DOMAIN}"
    dns_server.fail(name)
    now = [0.0]
    verifier = Verifier(
        Resolver([dns_server.address], timeout=1), keys_dir, retry_failed=30, clock=lambda: now[0]
    )
    signed = signer(keys_dir).sign(GOOD)

    def asked() -> int:
        return sum(1 for qname, _ in dns_server.queries if qname == name)

    first = await verifier.verify(signed)
    asked_once = asked()
    second = await verifier.verify(signed)
    assert asked() == asked_once
    now[0] = 31.0
    await verifier.verify(signed)
    assert asked() > asked_once
    expected = [("pass", KeySource.KEYS_DIR), ("pass", KeySource.DNS)]
    assert [(r.result, r.key_source) for r in first] == expected
    assert [(r.result, r.key_source) for r in second] == expected
