"""DANE's pure parts: which TLSA records are usable, the association data
of every selector and matching type, matching a presented certificate
(DANE-EE, and DANE-TA with a chain), and the policy a host gets."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailer.config import TLSPolicy
from mailer.delivery.connector import HostFailure, summarise
from mailer.delivery.tls.applied import Applied, AppliedPolicy, apply_dane
from mailer.delivery.tls.dane import TLSASet, association, check, tlsa_name, usable
from mailer.delivery.tls.results import ResultType
from mailer.delivery.tls.tlsa import DaneLookup, DaneStatus
from mailer.dev.certs import TestCerts
from mailer.dns import TLSA
from mailer.reasons import Reason

NOW = datetime.datetime.now(datetime.UTC)
HOST = "mx1.dest.test"


def chain_of(path: Path) -> list[bytes]:
    """The DER certificates of a PEM chain file, leaf first."""
    return [
        c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(path.read_bytes())
    ]


def spki(der: bytes) -> bytes:
    return (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.fixture(scope="module")
def leaf(certs: TestCerts) -> bytes:
    return chain_of(certs.issue([HOST])[0])[0]


@pytest.fixture(scope="module")
def ca(certs: TestCerts) -> bytes:
    return chain_of(certs.ca_path)[0]


def ee(selector: int, mtype: int, data: bytes) -> TLSASet:
    return TLSASet.of("_25._tcp.mx1.dest.test", [TLSA(3, selector, mtype, data)])


def test_tlsa_name_is_port_and_protocol_under_the_mx_host() -> None:
    assert tlsa_name("mx1.dest.test.", 25) == "_25._tcp.mx1.dest.test"


@pytest.mark.parametrize(
    ("selector", "mtype", "digest"),
    [
        (1, 1, lambda b: hashlib.sha256(b).digest()),
        (0, 1, lambda b: hashlib.sha256(b).digest()),
        (1, 2, lambda b: hashlib.sha512(b).digest()),
        (1, 0, lambda b: b),
        (0, 0, lambda b: b),
        (0, 2, lambda b: hashlib.sha512(b).digest()),
    ],
)
def test_dane_ee_matches_every_selector_and_matching_type(
    leaf: bytes, selector: int, mtype: int, digest: object
) -> None:
    selected = spki(leaf) if selector == 1 else leaf
    data = digest(selected)  # type: ignore[operator]
    assert association(leaf, selector, mtype) == data
    result = check(ee(selector, mtype, data), leaf, None, HOST, NOW)
    assert result.matched, result.text
    assert result.text == f"DANE-EE 3 {selector} {mtype}"


def test_dane_ee_ignores_names_and_dates(certs: TestCerts) -> None:
    expired = chain_of(certs.expired(["somebody-else.test"])[0])[0]
    data = hashlib.sha256(spki(expired)).digest()
    assert check(ee(1, 1, data), expired, None, HOST, NOW).matched


def test_a_certificate_matching_no_record_is_refused(leaf: bytes, certs: TestCerts) -> None:
    other = chain_of(certs.issue([HOST])[0])[0]  # same name, another key
    tlsa = ee(1, 1, hashlib.sha256(spki(other)).digest())
    result = check(tlsa, leaf, None, HOST, NOW)
    assert not result.matched
    assert "matches none of the TLSA records at _25._tcp.mx1.dest.test (3 1 1)" in result.text
    assert not check(tlsa, None, None, HOST, NOW).matched


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (TLSA(3, 1, 1, b"\x00" * 32), True),
        (TLSA(3, 0, 2, b"\x00" * 64), True),
        (TLSA(3, 1, 0, b"\x30"), True),
        (TLSA(3, 1, 1, b"\x00" * 31), False),  # wrong digest length
        (TLSA(3, 1, 2, b"\x00" * 32), False),
        (TLSA(3, 1, 0, b""), False),
        (TLSA(3, 2, 1, b"\x00" * 32), False),  # unknown selector
        (TLSA(3, 1, 3, b"\x00" * 32), False),  # unknown matching type
        (TLSA(1, 1, 1, b"\x00" * 32), False),  # PKIX-EE: not for SMTP
        (TLSA(0, 1, 1, b"\x00" * 32), False),  # PKIX-TA: not for SMTP
    ],
)
def test_usable_records(record: TLSA, expected: bool) -> None:
    assert usable(record, chain=True) is expected


def test_dane_ta_is_usable_only_with_the_peer_chain() -> None:
    record = TLSA(2, 0, 1, b"\x00" * 32)
    assert usable(record, chain=True)
    assert not usable(record, chain=False)
    only_ta = TLSASet.of("_25._tcp.mx", [record], chain=False)
    assert not only_ta.usable
    assert only_ta.published == 1


def test_dane_ta_matches_an_issuer_in_the_chain_and_checks_the_name(leaf: bytes, ca: bytes) -> None:
    tlsa = TLSASet.of(
        "_25._tcp.mx1.dest.test", [TLSA(2, 0, 1, hashlib.sha256(ca).digest())], chain=True
    )
    result = check(tlsa, leaf, [leaf, ca], HOST, NOW)
    assert result.matched, result.text
    assert result.text == "DANE-TA 2 0 1"
    # the anchor is right, the name is not
    assert not check(tlsa, leaf, [leaf, ca], "mx2.dest.test", NOW).matched
    # no chain: nothing to find the anchor in
    assert not check(tlsa, leaf, None, HOST, NOW).matched
    # the anchor never matches the leaf itself
    own = TLSASet.of("n", [TLSA(2, 0, 1, hashlib.sha256(leaf).digest())], chain=True)
    assert not check(own, leaf, [leaf, ca], HOST, NOW).matched


def test_dane_ta_checks_dates(certs: TestCerts, ca: bytes) -> None:
    expired = chain_of(certs.expired([HOST])[0])[0]
    tlsa = TLSASet.of("n", [TLSA(2, 1, 1, hashlib.sha256(spki(ca)).digest())], chain=True)
    assert not check(tlsa, expired, [expired, ca], HOST, NOW).matched


BASE = AppliedPolicy(Applied.ENCRYPT, TLSPolicy.ENCRYPT)
STS = AppliedPolicy(Applied.MTA_STS_ENFORCE, TLSPolicy.VERIFY, mx=("mx1.dest.test",))


def test_usable_records_win_over_mta_sts_and_the_configured_level(leaf: bytes) -> None:
    tlsa = ee(1, 1, association(leaf, 1, 1))
    for base in (BASE, STS, AppliedPolicy(Applied.VERIFY, TLSPolicy.VERIFY)):
        applied = apply_dane(base, DaneLookup(DaneStatus.USABLE, tlsa))
        assert applied.name is Applied.DANE
        assert applied.label == "dane"
        assert applied.tlsa is tlsa
        assert applied.result is None


def test_unusable_records_leave_tls_unauthenticated_and_say_so() -> None:
    tlsa = TLSASet.of("n", [TLSA(1, 1, 1, b"\x00" * 32)])
    applied = apply_dane(BASE, DaneLookup(DaneStatus.UNUSABLE, tlsa))
    assert applied.level is TLSPolicy.ENCRYPT
    assert applied.tlsa is None
    assert applied.label == "encrypt (dane: tlsa unusable)"
    assert applied.result is ResultType.TLSA_INVALID
    # configuration is never loosened by it
    assert apply_dane(STS, DaneLookup(DaneStatus.UNUSABLE, tlsa)).level is TLSPolicy.VERIFY


def test_without_the_ad_bit_dane_is_not_applied_and_the_label_says_so() -> None:
    applied = apply_dane(STS, DaneLookup(DaneStatus.INSECURE))
    assert applied.name is Applied.MTA_STS_ENFORCE
    assert applied.mx == STS.mx
    assert applied.label == "mta-sts enforce (dane: no AD bit)"
    assert apply_dane(BASE, DaneLookup(DaneStatus.NONE)) == BASE


def test_dane_ta_walks_an_intermediate_sent_by_the_server() -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    issued = intermediate.issue_cert("*.dest.test")
    chain = [
        x509.load_pem_x509_certificate(b.bytes()).public_bytes(Encoding.DER)
        for b in issued.cert_chain_pems
    ]
    root_der = x509.load_pem_x509_certificate(root.cert_pem.bytes()).public_bytes(Encoding.DER)
    assert len(chain) == 2  # leaf, intermediate: the root is not sent
    by_intermediate = TLSASet.of("n", [TLSA(2, 1, 2, association(chain[1], 1, 2))], chain=True)
    assert check(by_intermediate, chain[0], chain, HOST, NOW).matched
    # the root is not in what the server sent, so it cannot be matched there
    by_root = TLSASet.of("n", [TLSA(2, 0, 1, association(root_der, 0, 1))], chain=True)
    assert not check(by_root, chain[0], chain, HOST, NOW).matched
    assert check(by_root, chain[0], [*chain, root_der], HOST, NOW).matched
    # the wildcard stands for one label only
    assert not check(by_intermediate, chain[0], chain, "a.mx1.dest.test", NOW).matched


def test_a_route_failure_carries_the_policy_and_result_type_of_its_reason() -> None:
    failure = summarise(
        [
            HostFailure("mx1.dest.test", "127.0.0.2", Reason.CONNECTION, "refused", "encrypt"),
            HostFailure(
                "mx2.dest.test",
                "127.0.0.3",
                Reason.DANE,
                "no match",
                "dane",
                ResultType.TLSA_INVALID,
            ),
        ]
    )
    assert (failure.reason, failure.policy, failure.result) == (
        Reason.DANE,
        "dane",
        ResultType.TLSA_INVALID,
    )
