"""TLS reporting (RFC 8460) of DANE (RFC 7672) sessions: the TLSA policy
string, which policy a DANE failure is counted under, and what the
connector counts against real sinks and the test DNS server standing in
for a validating resolver."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailer.config import SourceConfig, TLSPolicy
from mailer.delivery.connector import Connector, RouteFailure
from mailer.delivery.tls.applied import Applied, AppliedPolicy, apply_dane, apply_policy
from mailer.delivery.tls.counter import TLSCounter
from mailer.delivery.tls.dane import TLSASet, association, presentation
from mailer.delivery.tls.policy import Mode, STSPolicy
from mailer.delivery.tls.report import build_report
from mailer.delivery.tls.results import ResultType
from mailer.delivery.tls.tlsa import DaneLookup, DaneStatus
from mailer.dev.certs import CertFiles, TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dns import TLSA, Resolver
from mailer.sink.runner import Sink

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "tlsrpt-rfc8460.json").read_text())
SOURCE = SourceConfig(public_ip="192.0.2.10")
DAY_START = 1796428800.0  # 2026-12-05T00:00:00Z
EE = TLSA(3, 1, 1, hashlib.sha256(b"key").digest())
TA = TLSA(2, 0, 1, hashlib.sha256(b"anchor").digest())
PKIX = TLSA(1, 1, 1, hashlib.sha256(b"pkix").digest())
STS_TESTING = STSPolicy(Mode.TESTING, ("*.dest.test",), 86400)
STS_ENFORCE = STSPolicy(Mode.ENFORCE, ("*.dest.test",), 86400)


def validate(report: dict[str, object]) -> None:
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(report)


# the policy string (RFC 8460 §4.4, RFC 6698 §2.3) ------------------------------------


def test_policy_string_is_the_whole_rrset_in_presentation_format_in_one_order() -> None:
    one = TLSASet.of("_25._tcp.mx1.dest.test", [PKIX, EE, TA], chain=False)
    other = TLSASet.of("_25._tcp.mx1.dest.test.", [TA, EE, PKIX], chain=False)
    assert one.records == (EE,)  # only DANE-EE is usable here
    strings = presentation(one)
    # every published record, usable or not, owner name absolute once
    assert strings == (
        f"_25._tcp.mx1.dest.test. IN TLSA 1 1 1 {PKIX.data.hex()}",
        f"_25._tcp.mx1.dest.test. IN TLSA 2 0 1 {TA.data.hex()}",
        f"_25._tcp.mx1.dest.test. IN TLSA 3 1 1 {EE.data.hex()}",
    )
    # the resolver's order does not make another policy
    assert presentation(other) == strings


def counter() -> TLSCounter:
    return TLSCounter(clock=lambda: DAY_START + 60)


def failure(c: TLSCounter, applied: AppliedPolicy, result: ResultType, ip: str | None) -> None:
    c.failure(
        "dest.test",
        applied,
        result,
        sending_ip="192.0.2.10",
        receiving_mx="mx1.dest.test",
        receiving_ip=ip,
        reason_code="dane",
    )


def test_dane_sessions_count_under_tlsa_with_the_rrset() -> None:
    tlsa = TLSASet.of("_25._tcp.mx1.dest.test", [EE, PKIX])
    base = apply_policy(TLSPolicy.ENCRYPT, STS_TESTING)
    dane = apply_dane(base, DaneLookup(DaneStatus.USABLE, tlsa))
    c = counter()
    c.success("dest.test", dane)
    c.success("dest.test", dane)
    failure(c, dane, ResultType.TLSA_INVALID, "127.0.0.2")
    counts = {(x.policy_type, x.policy_string, x.result_type): x.count for x in c.drain()}
    assert counts == {
        ("tlsa", presentation(tlsa), ""): 2,
        ("tlsa", presentation(tlsa), "tlsa-invalid"): 1,
    }


def test_an_unusable_rrset_is_a_tlsa_invalid_failure_of_the_tlsa_policy() -> None:
    """RFC 7672 §2.2: TLS goes ahead unauthenticated; the report says the
    TLSA policy failed, naming the records, whatever the host's other
    policy was (not a failure of an MTA-STS policy it may have met)."""
    tlsa = TLSASet.of("_25._tcp.mx1.dest.test", [PKIX])
    for base in (
        apply_policy(TLSPolicy.ENCRYPT, None),
        apply_policy(TLSPolicy.ENCRYPT, STS_ENFORCE),
    ):
        applied = apply_dane(base, DaneLookup(DaneStatus.UNUSABLE, tlsa))
        assert applied.tlsa is None
        assert applied.unusable is tlsa
        assert applied.result is ResultType.TLSA_INVALID
        c = counter()
        failure(c, applied, applied.result, "127.0.0.2")
        [count] = c.drain()
        assert (count.policy_type, count.policy_string, count.mx_host) == (
            "tlsa",
            presentation(tlsa),
            (),
        )
        assert count.result_type == "tlsa-invalid"


def test_other_failures_beside_an_unusable_rrset_stay_with_the_policy_that_checked() -> None:
    tlsa = TLSASet.of("_25._tcp.mx1.dest.test", [PKIX])
    applied = apply_dane(
        apply_policy(TLSPolicy.ENCRYPT, STS_ENFORCE), DaneLookup(DaneStatus.UNUSABLE, tlsa)
    )
    c = counter()
    failure(c, applied, ResultType.CERTIFICATE_EXPIRED, "127.0.0.2")
    [count] = c.drain()
    assert (count.policy_type, count.mx_host) == ("sts", ("*.dest.test",))


def test_a_failed_tlsa_lookup_is_dnssec_invalid_under_tlsa() -> None:
    c = counter()
    failure(c, apply_policy(TLSPolicy.ENCRYPT, None), ResultType.DNSSEC_INVALID, None)
    [count] = c.drain()
    assert (count.policy_type, count.policy_string, count.result_type) == (
        "tlsa",
        (),
        "dnssec-invalid",
    )
    assert count.receiving_ip == ""


def test_a_report_with_tlsa_policies_validates_against_the_schema() -> None:
    good = TLSASet.of("_25._tcp.mx1.dest.test", [EE])
    bad = TLSASet.of("_25._tcp.mx2.dest.test", [PKIX])
    c = counter()
    c.success("dest.test", AppliedPolicy(Applied.DANE, TLSPolicy.ENCRYPT, tlsa=good))
    base = apply_policy(TLSPolicy.ENCRYPT, None)
    failure(
        c,
        apply_dane(base, DaneLookup(DaneStatus.UNUSABLE, bad)),
        ResultType.TLSA_INVALID,
        "127.0.0.3",
    )
    failure(c, base, ResultType.DNSSEC_INVALID, None)
    report = build_report(
        c.drain(),
        day="2026-12-05",
        domain="dest.test",
        organization="Example",
        contact="postmaster@mailer.test",
        report_id="2026-12-05.dest.test@mailer.test",
    )
    validate(report)
    by_string = {tuple(p["policy"].get("policy-string", ())): p for p in report["policies"]}
    assert {p["policy"]["policy-type"] for p in report["policies"]} == {"tlsa"}
    assert by_string[presentation(good)]["summary"]["total-successful-session-count"] == 1
    assert by_string[presentation(bad)]["failure-details"][0]["result-type"] == "tlsa-invalid"
    assert by_string[()]["failure-details"][0]["result-type"] == "dnssec-invalid"


# what the connector counts --------------------------------------------------------------


def der(files: CertFiles) -> bytes:
    [leaf, *_] = x509.load_pem_x509_certificates(files[0].read_bytes())
    return leaf.public_bytes(Encoding.DER)


def dane_connector(dns: DNSServer, port: int, certs: TestCerts, c: TLSCounter) -> Connector:
    return Connector(
        Resolver([dns.address], timeout=2.0, trust_ad=True),
        helo="mailer.test",
        port=port,
        timeout=5,
        cafile=str(certs.ca_path),
        tls_counter=c,
    )


async def test_connector_counts_dane_matches_mismatches_and_failed_lookups(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts, make_sink: Callable[..., Sink]
) -> None:
    files = certs.self_signed(["mx1.dest.test"])
    make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    name = f"_{smtp_port}._tcp.mx1.dest.test"
    good = f"3 1 1 {association(der(files), 1, 1).hex()}"
    dns_server.set(name, "TLSA", [good])
    c = counter()
    conn = dane_connector(dns_server, smtp_port, certs, c)
    # a testing policy that names no MX: DANE decides, no sts failure
    testing = apply_policy(TLSPolicy.ENCRYPT, STSPolicy(Mode.TESTING, ("mx.other.test",), 86400))
    session = await conn.connect("dest.test", testing, SOURCE)
    await session.close()
    [ok] = c.drain()
    assert (ok.policy_type, ok.result_type, ok.count) == ("tlsa", "", 1)
    assert ok.policy_string == (f"{name}. IN TLSA {good}",)

    # a record of another key: the session fails the policy (mx2 has no
    # secure addresses and takes the mail)
    make_sink("127.0.0.3", hostname="mx2.dest.test")
    dns_server.secure("mx2.dest.test", on=False)
    other = "3 1 1 " + "11" * 32
    dns_server.set(name, "TLSA", [other])
    conn = dane_connector(dns_server, smtp_port, certs, c)
    session = await conn.connect("dest.test", TLSPolicy.ENCRYPT, SOURCE)
    await session.close()
    counts = {(x.policy_type, x.result_type, x.receiving_mx): x for x in c.drain()}
    mismatch = counts[("tlsa", "tlsa-invalid", "mx1.dest.test")]
    assert (mismatch.count, mismatch.receiving_ip, mismatch.reason_code) == (1, "127.0.0.2", "dane")
    assert mismatch.policy_string == (f"{name}. IN TLSA {other}",)
    assert counts[("no-policy-found", "", "")].count == 1  # mx2, plain encrypt

    # the resolver answers SERVFAIL (bogus data): dnssec-invalid, once for the host
    dns_server.fail(name, rdtype="TLSA")
    dns_server.secure("mx2.dest.test", on=False)
    conn = dane_connector(dns_server, smtp_port, certs, c)
    session = await conn.connect("dest.test", TLSPolicy.ENCRYPT, SOURCE)
    await session.close()
    counts = {(x.policy_type, x.result_type, x.receiving_mx): x for x in c.drain()}
    bogus = counts[("tlsa", "dnssec-invalid", "mx1.dest.test")]
    assert (bogus.count, bogus.policy_string, bogus.receiving_ip) == (1, (), "")
    assert bogus.sending_ip == "192.0.2.10"


async def test_a_failed_lookup_with_no_host_left_is_counted_and_defers(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts
) -> None:
    dns_server.secure()
    for host in ("mx1.dest.test", "mx2.dest.test"):
        dns_server.fail(f"_{smtp_port}._tcp.{host}", rdtype="TLSA")
    c = counter()
    conn = dane_connector(dns_server, smtp_port, certs, c)
    with pytest.raises(RouteFailure) as failed:
        await conn.connect("dest.test", TLSPolicy.ENCRYPT, SOURCE)
    assert failed.value.result is ResultType.DNSSEC_INVALID
    counts = c.drain()
    assert {(x.policy_type, x.result_type, x.receiving_mx, x.count) for x in counts} == {
        ("tlsa", "dnssec-invalid", "mx1.dest.test", 1),
        ("tlsa", "dnssec-invalid", "mx2.dest.test", 1),
    }
