"""The pure parts of ``mailer check-domain``: fix records, DMARC parsing,
certificate names, judging and the human rendering."""

from __future__ import annotations

import datetime

import pytest

from mailer.checkdomain.dmarc import is_dmarc_record, organisational_domain, parse_dmarc
from mailer.checkdomain.report import (
    Check,
    DomainReport,
    Fix,
    RecordFix,
    Status,
    render_text,
    worst,
)
from mailer.checkdomain.spf import merge_records, suggest_record
from mailer.checkdomain.spf_tree import how_authorised
from mailer.checkdomain.tls import judge_probe
from mailer.checkdomain.tls_probe import (
    CertificateInfo,
    MXProbe,
    describe_certificate,
    name_matches,
)
from mailer.config import TLSPolicy
from mailer.dev.certs import TestCerts
from mailer.errors import ValidationError
from mailer.identity.check_host import SPFOutcome, SPFResult
from mailer.identity.spf_record import parse_record

INCLUDE = "include:_spf.netigate.se"


# --- SPF fix records -------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 mx ~all", f"v=spf1 mx {INCLUDE} ~all"),
        ("v=spf1 a mx -all", f"v=spf1 a mx {INCLUDE} -all"),
        (
            "v=spf1 ip4:203.0.113.0/24 ?all exp=why.example.test",
            f"v=spf1 ip4:203.0.113.0/24 {INCLUDE} ?all exp=why.example.test",
        ),
        (
            "v=spf1 mx redirect=_spf.provider.test",
            f"v=spf1 mx {INCLUDE} redirect=_spf.provider.test",
        ),
        ("v=spf1 mx", f"v=spf1 mx {INCLUDE}"),
        ("v=spf1   mx    ~ALL", f"v=spf1 mx {INCLUDE} ~ALL"),
    ],
)
def test_suggested_record_puts_the_include_before_all_or_redirect(
    record: str, expected: str
) -> None:
    suggested = suggest_record(record, [INCLUDE])
    assert suggested == expected
    parse_record(suggested)


def test_suggested_record_moves_an_include_stuck_after_all() -> None:
    assert suggest_record(f"v=spf1 -all {INCLUDE}", [INCLUDE]) == f"v=spf1 {INCLUDE} -all"


def test_suggested_record_drops_the_listed_ips_it_replaces() -> None:
    record = "v=spf1 ip4:192.0.2.10 ip4:203.0.113.0/24 ip4:192.0.2.11 -all"
    suggested = suggest_record(record, [INCLUDE], drop={"ip4:192.0.2.10", "ip4:192.0.2.11"})
    assert suggested == f"v=spf1 ip4:203.0.113.0/24 {INCLUDE} -all"


def test_two_records_merge_into_one_ending_with_the_softer_all() -> None:
    records = ["v=spf1 mx -all", "v=spf1 ip4:203.0.113.7 mx ~all"]
    merged = merge_records(records, [INCLUDE])
    assert merged == f"v=spf1 ip4:203.0.113.7 mx {INCLUDE} ~all"
    assert merge_records(list(reversed(records)), [INCLUDE]) == merged


def test_merged_records_without_all_keep_a_redirect() -> None:
    merged = merge_records(["v=spf1 mx redirect=_spf.a.test", "v=spf1 a"], [INCLUDE])
    assert merged == f"v=spf1 a mx {INCLUDE} redirect=_spf.a.test"


def test_records_that_do_not_parse_are_not_merged() -> None:
    assert merge_records(["v=spf1 mx -all", "v=spf1 bogus:x ~all"], [INCLUDE]) is None


def outcome(result: SPFResult, mechanism: str | None) -> SPFOutcome:
    return SPFOutcome(result, "d.test", mechanism, "", 1, 0, 60)


@pytest.mark.parametrize(
    ("result", "mechanism", "how"),
    [
        (SPFResult.PASS, "include:_spf.netigate.se", "include"),
        (SPFResult.PASS, "+include:_SPF.netigate.se", "include"),
        (SPFResult.PASS, "ip4:192.0.2.10", "ip"),
        (SPFResult.PASS, "ip6:2001:db8::1", "ip"),
        (SPFResult.PASS, "mx", "other"),
        (SPFResult.PASS, "include:spf.provider.test", "other"),
        (SPFResult.SOFTFAIL, "~all", "no"),
        (SPFResult.PERMERROR, None, "no"),
    ],
)
def test_how_our_ip_is_authorised(result: SPFResult, mechanism: str | None, how: str) -> None:
    assert how_authorised(outcome(result, mechanism), "_spf.netigate.se") == how


# --- DMARC -------------------------------------------------------------------------


def test_dmarc_record_parses_policy_modes_and_reports() -> None:
    record = parse_dmarc(
        "v=DMARC1; p=Quarantine; sp=reject; adkim=s; pct=50; rua=mailto:a@x.test,mailto:b@x.test"
    )
    assert (record.policy, record.subdomain_policy, record.adkim, record.aspf, record.pct) == (
        "quarantine",
        "reject",
        "s",
        "r",
        50,
    )
    assert record.rua == ("mailto:a@x.test", "mailto:b@x.test")


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("p=none; v=DMARC1", "v=DMARC1 must come first"),
        ("v=DMARC1; rua=mailto:a@x.test", "no p= tag"),
        ("v=DMARC1; p=block", "p=block"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; pct=150", "pct=150"),
        ("v=DMARC1;; p=none", "empty element"),
    ],
)
def test_bad_dmarc_records_name_the_problem(text: str, complaint: str) -> None:
    with pytest.raises(ValidationError, match="dmarc") as info:
        parse_dmarc(text)
    assert complaint in info.value.reason


def test_only_v_dmarc1_strings_count_as_dmarc_records() -> None:
    assert is_dmarc_record("v=DMARC1; p=none")
    assert is_dmarc_record("v = dmarc1;p=none")
    assert not is_dmarc_record("v=spf1 -all")
    assert not is_dmarc_record("v=DMARC10; p=none")


def test_organisational_domain_comes_from_the_public_suffix_list() -> None:
    from publicsuffixlist import PublicSuffixList

    psl = PublicSuffixList()
    assert organisational_domain(psl, "mail.example.co.uk") == "example.co.uk"
    assert organisational_domain(psl, "a.b.acme.test") == "acme.test"
    assert organisational_domain(psl, "co.uk") == "co.uk"


# --- certificates and probes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mx.acme.test", "MX.acme.test.", True),
        ("*.acme.test", "mx.acme.test", True),
        ("*.acme.test", "acme.test", False),
        ("*.acme.test", "a.mx.acme.test", False),
        ("mx.*.test", "mx.acme.test", False),
        ("other.test", "mx.acme.test", False),
    ],
)
def test_certificate_names_match_like_rfc_6125(pattern: str, host: str, matches: bool) -> None:
    assert name_matches(pattern, host) is matches


NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def test_describe_certificate_reads_names_expiry_and_issuer(certs: TestCerts) -> None:
    chain, _key = certs.expired(["mx.acme.test", "*.acme.test"])
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificates(chain.read_bytes())[0].public_bytes(
        serialization.Encoding.DER
    )
    now = datetime.datetime.now(datetime.UTC)
    info = describe_certificate(der, "mx.acme.test", now)
    assert info.names == ("mx.acme.test", "*.acme.test")
    assert info.matches_host
    assert info.expired
    assert info.days_left == -1
    assert not info.self_signed
    assert not describe_certificate(der, "mx.other.test", now).matches_host


def cert(days_left: int, *, matches: bool = True, self_signed: bool = False) -> CertificateInfo:
    return CertificateInfo(
        subject="CN=mx.acme.test",
        issuer="CN=CA",
        names=("mx.acme.test",),
        not_before=NOW - datetime.timedelta(days=30),
        not_after=NOW + datetime.timedelta(days=days_left),
        days_left=days_left,
        matches_host=matches,
        self_signed=self_signed,
        expired=days_left < 0,
        not_yet_valid=False,
    )


def tls_probe(certificate: CertificateInfo | None = None, **kw: object) -> MXProbe:
    fields: dict[str, object] = {
        "connected": True,
        "starttls_offered": True,
        "handshake_ok": True,
        "tls_version": "TLSv1.3",
        "certificate": certificate,
    }
    fields.update(kw)
    return MXProbe("mx.acme.test", "127.0.0.2", 25, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("probe", "policy", "status", "words"),
    [
        (tls_probe(cert(90)), TLSPolicy.ENCRYPT, Status.OK, "valid 90 days"),
        (tls_probe(cert(5)), TLSPolicy.ENCRYPT, Status.WARNING, "expires in 5 day"),
        (tls_probe(cert(-3)), TLSPolicy.ENCRYPT, Status.ACTION_NEEDED, "expired 3 day"),
        (tls_probe(cert(90, matches=False)), TLSPolicy.ENCRYPT, Status.WARNING, "not the MX"),
        (tls_probe(cert(90, matches=False)), TLSPolicy.VERIFY, Status.ACTION_NEEDED, "not the MX"),
        (tls_probe(cert(90, self_signed=True)), TLSPolicy.ENCRYPT, Status.WARNING, "self-signed"),
        (
            tls_probe(starttls_offered=False, handshake_ok=None),
            TLSPolicy.ENCRYPT,
            Status.ACTION_NEEDED,
            "does not offer STARTTLS",
        ),
        (
            tls_probe(handshake_ok=False, error="TLS handshake failed: x"),
            TLSPolicy.ENCRYPT,
            Status.ACTION_NEEDED,
            "handshake failed",
        ),
    ],
)
def test_each_mx_is_judged_by_starttls_handshake_and_certificate(
    probe: MXProbe, policy: TLSPolicy, status: Status, words: str
) -> None:
    verdict = judge_probe(probe, policy)
    assert verdict.status is status
    assert words in verdict.text


# --- the report ---------------------------------------------------------------------


def test_worst_status_decides_and_none_is_ok() -> None:
    assert worst([]) is Status.OK
    assert worst([Status.OK, Status.WARNING]) is Status.WARNING
    assert worst([Status.ACTION_NEEDED, Status.WARNING, Status.OK]) is Status.ACTION_NEEDED


def sample_report() -> DomainReport:
    return DomainReport(
        "acme.test",
        "azure",
        (
            Check(
                "spf",
                Status.ACTION_NEEDED,
                "does not authorise 192.0.2.10",
                {},
                (
                    Fix(
                        "spf",
                        Status.ACTION_NEEDED,
                        "publish this record instead",
                        RecordFix("acme.test", "v=spf1 include:_spf.netigate.se ~all"),
                    ),
                ),
            ),
            Check("sender", Status.WARNING, "neutral sender"),
            Check(
                "dkim",
                Status.WARNING,
                "no key",
                {},
                (Fix("dkim", Status.WARNING, "run `mailer keys generate acme.test`"),),
            ),
            Check("dmarc", Status.OK, "p=reject"),
            Check("tls", Status.OK, "1 MX"),
        ),
    )


def test_human_report_is_a_title_one_line_per_check_and_numbered_fixes() -> None:
    lines = render_text(sample_report())
    assert lines[0].startswith("acme.test (region azure): ACTION NEEDED")
    check_lines = lines[1:6]
    assert [line.split("]")[0].strip(" [") for line in check_lines] == [
        "action needed",
        "warning",
        "warning",
        "ok",
        "ok",
    ]
    assert lines[6] == "Fixes:"
    assert lines[7].startswith("  1. [spf] publish this record instead")
    assert lines[8] == '     acme.test. IN TXT "v=spf1 include:_spf.netigate.se ~all"'
    assert lines[9].startswith("  2. [dkim] run `mailer keys generate acme.test`")
    assert len(lines) == 10


def test_long_records_are_rendered_as_zone_file_strings_of_255_bytes() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 400
    report = DomainReport(
        "acme.test",
        "azure",
        (
            Check(
                "dkim",
                Status.ACTION_NEEDED,
                "x",
                {},
                (
                    Fix(
                        "dkim",
                        Status.ACTION_NEEDED,
                        "publish",
                        RecordFix("s._domainkey.acme.test", value),
                    ),
                ),
            ),
        ),
    )
    record_line = render_text(report)[-1]
    strings = record_line.split("( ")[1].rstrip(" )").split('" "')
    assert [len(s.strip('"')) for s in strings] == [255, len(value) - 255]


def test_exit_code_is_1_only_when_something_needs_action() -> None:
    assert sample_report().exit_code == 1
    fine = DomainReport("a.test", "azure", (Check("spf", Status.WARNING, "x"),))
    assert fine.exit_code == 0
