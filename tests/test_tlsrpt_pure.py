"""TLS reporting (RFC 8460), the pure part: the ``_smtp._tls`` record, the
vocabulary, a worker's counter, the report JSON against the RFC's schema."""

from __future__ import annotations

import email
import email.policy
import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mailer.config import TLSPolicy, load_config
from mailer.delivery.tls.applied import Applied, AppliedPolicy, apply_policy
from mailer.delivery.tls.counter import TLSCounter, policy_lines, utc_day
from mailer.delivery.tls.policy import Mode, STSPolicy
from mailer.delivery.tls.report import (
    ReportURI,
    build_report,
    encode_report,
    parse_record,
    report_filename,
    select_record,
)
from mailer.delivery.tls.results import (
    POLICY_TYPES,
    PolicyType,
    ResultType,
    certificate_result,
    policy_type,
    result_type,
)
from mailer.errors import ConfigError, ValidationError
from mailer.reasons import Reason
from mailer.tlsrpt.mail import REPORT_SIGNED_HEADERS, ReportMail, compose

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "tlsrpt-rfc8460.json").read_text())
DAY_START = 1796428800.0  # 2026-12-05T00:00:00Z


def validate(report: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(report)


# the _smtp._tls record (§3) ---------------------------------------------------------


def test_record_with_mailto_and_https_uris() -> None:
    record = parse_record(
        "v=TLSRPTv1; rua=mailto:tlsrpt@dest.test , https://reports.dest.test/v1/tlsrpt;"
    )
    assert record.rua == (
        ReportURI("mailto", "tlsrpt@dest.test"),
        ReportURI("https", "https://reports.dest.test/v1/tlsrpt"),
    )


def test_record_keeps_known_schemes_and_extensions_are_ignored() -> None:
    record = parse_record("v=TLSRPTv1;rua=ftp://x.test/r,mailto:a%2Bb@dest.test;ext_1=v")
    assert record.rua == (ReportURI("mailto", "a+b@dest.test"),)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("v=TLSRPTv2; rua=mailto:a@dest.test", "v"),
        ("v=TLSRPTv1 rua=mailto:a@dest.test", "v"),
        ("v=TLSRPTv1;", "rua"),
        ("v=TLSRPTv1; ext=1", "rua"),
        ("v=TLSRPTv1; rua=", "rua"),
        ("v=TLSRPTv1; rua=mailto:nobody", "rua"),
        ("v=TLSRPTv1; rua=mailto:a@b", "rua"),
        ("v=TLSRPTv1; rua=https:///path", "rua"),
        ("v=TLSRPTv1; rua=ftp://x.test/", "rua"),
        ("v=TLSRPTv1; rua=mailto:a@dest.test; rua=mailto:b@dest.test", "rua"),
        ("v=TLSRPTv1; rua=mailto:a@dest.test;;", "record"),
        ("v=TLSRPTv1; rua=mailto:a@dest.test; bad name=1", "bad name"),
        ("v=TLSRPTv1; rua=mailto:a@dest.test; x=a b", "x"),
        ("v=TLSRPTv1; rua=mailto:a@dest.test\r\nBcc: x@evil.test", "rua"),
    ],
)
def test_bad_records_are_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_record(text)
    assert caught.value.field == field


def test_not_exactly_one_record_means_no_reports() -> None:
    one = "v=TLSRPTv1; rua=mailto:a@dest.test"
    assert select_record([one, "v=spf1 -all"]) is not None
    assert select_record([one, one]) is None
    assert select_record(["v=spf1 -all"]) is None
    assert select_record([]) is None
    with pytest.raises(ValidationError):
        select_record(["v=TLSRPTv1; nothing"])


# vocabulary ------------------------------------------------------------------------


def test_applied_policies_map_to_report_policy_types() -> None:
    assert policy_type("mta-sts testing") is PolicyType.STS
    assert policy_type("mta-sts enforce") is PolicyType.STS
    assert policy_type("encrypt") is PolicyType.NO_POLICY_FOUND
    assert policy_type("verify") is PolicyType.NO_POLICY_FOUND
    assert POLICY_TYPES["dane"] is PolicyType.TLSA
    assert policy_type("something new") is None
    # every applied name the delivery side uses today is known
    assert all(policy_type(name.value) is not None for name in Applied)


def test_failure_reasons_map_to_result_types() -> None:
    assert result_type(Reason.TLS_UNAVAILABLE) is ResultType.STARTTLS_NOT_SUPPORTED
    assert result_type(Reason.MTA_STS_MISMATCH) is ResultType.VALIDATION_FAILURE
    assert result_type(Reason.CONNECTION) is None
    assert result_type(Reason.DNS) is None
    assert certificate_result(62) is ResultType.CERTIFICATE_HOST_MISMATCH
    assert certificate_result(10) is ResultType.CERTIFICATE_EXPIRED
    assert certificate_result(20) is ResultType.CERTIFICATE_NOT_TRUSTED
    assert certificate_result(None) is ResultType.CERTIFICATE_NOT_TRUSTED


# the counter ------------------------------------------------------------------------

TESTING = STSPolicy(Mode.TESTING, ("*.dest.test",), 86400)


def sts_testing() -> AppliedPolicy:
    return apply_policy(TLSPolicy.ENCRYPT, TESTING)


def test_counter_aggregates_sessions_and_forgets_what_it_handed_over() -> None:
    counter = TLSCounter(clock=lambda: DAY_START + 3600)
    applied = sts_testing()
    for _ in range(3):
        counter.success("dest.test", applied)
    for _ in range(2):
        counter.failure(
            "dest.test",
            applied,
            ResultType.CERTIFICATE_HOST_MISMATCH,
            sending_ip="192.0.2.1",
            receiving_mx="mx1.dest.test",
            receiving_ip="127.0.0.2",
            reason_code="certificate",
        )
    counter.success("other.test", AppliedPolicy(Applied.ENCRYPT, TLSPolicy.ENCRYPT))
    counts = {(c.domain, c.policy_type, c.result_type): c for c in counter.drain()}
    assert len(counter) == 0
    success = counts[("dest.test", "sts", "")]
    assert success.count == 3
    assert success.day == "2026-12-05"
    assert success.policy_string == (
        "version: STSv1",
        "mode: testing",
        "mx: *.dest.test",
        "max_age: 86400",
    )
    assert success.mx_host == ("*.dest.test",)
    failure = counts[("dest.test", "sts", "certificate-host-mismatch")]
    assert (failure.count, failure.receiving_ip, failure.sending_ip) == (
        2,
        "127.0.0.2",
        "192.0.2.1",
    )
    plain = counts[("other.test", "no-policy-found", "")]
    assert plain.policy_string == ()
    assert counter.drain() == []


def test_verify_configured_under_a_testing_policy_reports_on_the_policy() -> None:
    applied = apply_policy(TLSPolicy.VERIFY, TESTING)
    assert applied.name is Applied.VERIFY
    counter = TLSCounter(clock=lambda: DAY_START)
    counter.success("dest.test", applied)
    counter.success("plain.test", apply_policy(TLSPolicy.VERIFY, None))
    kinds = {c.domain: (c.policy_type, c.mx_host) for c in counter.drain()}
    assert kinds == {
        "dest.test": ("sts", ("*.dest.test",)),
        "plain.test": ("no-policy-found", ()),
    }


def test_restored_counts_add_to_new_ones() -> None:
    counter = TLSCounter(clock=lambda: DAY_START)
    counter.success("dest.test", sts_testing())
    drained = counter.drain()
    counter.success("dest.test", sts_testing())
    counter.restore(drained)
    [count] = counter.drain()
    assert count.count == 2


def test_report_day_is_utc() -> None:
    assert utc_day(DAY_START - 1) == "2026-12-04"
    assert utc_day(DAY_START) == "2026-12-05"
    assert policy_lines(TESTING)[1] == "mode: testing"


# the report (§4) --------------------------------------------------------------------


def day_counts() -> list[Any]:
    counter = TLSCounter(clock=lambda: DAY_START + 60)
    applied = sts_testing()
    for _ in range(4):
        counter.success("dest.test", applied)
    counter.failure(
        "dest.test",
        applied,
        ResultType.VALIDATION_FAILURE,
        sending_ip="2001:db8::1",
        receiving_mx="mx9.elsewhere.test",
        receiving_ip="127.0.0.9",
        reason_code="mta-sts-mismatch",
    )
    counter.success("dest.test", AppliedPolicy(Applied.ENCRYPT, TLSPolicy.ENCRYPT))
    counter.success("other.test", applied)
    return counter.drain()


def test_report_validates_against_the_rfc_schema_with_the_right_counts() -> None:
    report = build_report(
        day_counts(),
        domain="dest.test",
        day="2026-12-05",
        organization="Example Org",
        report_id="2026-12-05.dest.test@mailer.test",
        contact="postmaster@mailer.test",
    )
    validate(report)
    assert report["date-range"] == {
        "start-datetime": "2026-12-05T00:00:00Z",
        "end-datetime": "2026-12-05T23:59:59Z",
    }
    by_type = {p["policy"]["policy-type"]: p for p in report["policies"]}
    assert set(by_type) == {"sts", "no-policy-found"}
    sts = by_type["sts"]
    assert sts["summary"] == {
        "total-successful-session-count": 4,
        "total-failure-session-count": 1,
    }
    assert sts["policy"]["policy-domain"] == "dest.test"
    assert sts["policy"]["mx-host"] == ["*.dest.test"]
    [detail] = sts["failure-details"]
    assert detail == {
        "result-type": "validation-failure",
        "sending-mta-ip": "2001:db8::1",
        "receiving-mx-hostname": "mx9.elsewhere.test",
        "receiving-ip": "127.0.0.9",
        "failed-session-count": 1,
        "failure-reason-code": "mta-sts-mismatch",
    }
    assert "failure-details" not in by_type["no-policy-found"]
    assert "policy-string" not in by_type["no-policy-found"]["policy"]


def test_schema_refuses_what_the_rfc_does_not_allow() -> None:
    report = build_report(
        day_counts(), domain="dest.test", day="2026-12-05", organization="O", report_id="r",
        contact="c",
    )  # fmt: skip
    broken = json.loads(json.dumps(report))
    broken["policies"][0]["failure-details"] = [
        {"result-type": "made-up", "failed-session-count": 1}
    ]
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    del report["report-id"]
    with pytest.raises(jsonschema.ValidationError):
        validate(report)


def test_encoded_report_is_gzipped_json_and_the_same_every_time() -> None:
    report = build_report(
        day_counts(), domain="dest.test", day="2026-12-05", organization="O", report_id="r",
        contact="c",
    )  # fmt: skip
    body = encode_report(report)
    assert json.loads(gzip.decompress(body)) == report
    assert encode_report(report) == body


def test_filename_follows_rfc_8460_section_5_3() -> None:
    assert report_filename("mailer.test", "dest.test", "2026-12-05", "r1") == (
        "mailer.test!dest.test!1796428800!1796515199!r1.json.gz"
    )


# the report mail and its settings ---------------------------------------------------


def report_mail(**changes: str) -> ReportMail:
    fields: dict[str, Any] = {
        "from_address": "noreply-tlsrpt@mailer.test",
        "to_address": "tlsrpt@dest.test",
        "domain": "dest.test",
        "submitter": "mailer.test",
        "report_id": "2026-12-05.dest.test@mailer.test",
        "filename": "mailer.test!dest.test!1796428800!1796515199.json.gz",
        "body": b"\x1f\x8bgz",
    }
    fields.update(changes)
    return ReportMail(**fields)


def test_report_mail_has_the_rfc_8460_headers_and_parts() -> None:
    data = compose(report_mail(), now=DAY_START, message_id_domain="mailer.test")
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message["TLS-Required"] == "No"
    assert message["TLS-Report-Domain"] == "dest.test"
    assert message["TLS-Report-Submitter"] == "mailer.test"
    assert message["Subject"] == (
        "Report Domain: dest.test Submitter: mailer.test "
        "Report-ID: <2026-12-05.dest.test@mailer.test>"
    )
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "tlsrpt"
    text, attachment = message.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert attachment.get_content_type() == "application/tlsrpt+gzip"
    assert attachment.get_content() == b"\x1f\x8bgz"
    assert b"tls-report-domain" in REPORT_SIGNED_HEADERS


@pytest.mark.parametrize("field", ["to_address", "domain", "report_id", "filename"])
def test_report_mail_refuses_cr_lf_in_header_values(field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        compose(report_mail(**{field: "x\r\nBcc: evil@evil.test"}), now=0, message_id_domain="m")
    assert caught.value.field in {field, "rua"}


@pytest.mark.parametrize("key", ["organization", "submitter", "contact", "from_address"])
def test_report_settings_refuse_cr_lf(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"tlsrpt": {key: "a@b.test\r\nX: y"}})
    assert f"tlsrpt.{key}" in str(caught.value)


def test_report_settings_refuse_a_bad_network() -> None:
    with pytest.raises(ConfigError):
        load_config(environ={}, overrides={"tlsrpt": {"allow": ["not-a-network"]}})
