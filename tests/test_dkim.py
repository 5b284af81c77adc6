"""DKIM signing: byte-identical to dkimpy, verifiable, the headers that matter over-signed."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import DNSTemporaryError, KeyMaterialError, ValidationError
from mailer.message.keys import KeyStore, SigningKey, dns_name, dns_record_value
from mailer.message.signing import (
    DEFAULT_SIGNED_HEADERS,
    OVERSIGNED_HEADERS,
    Signer,
    _select,
    naive_sign,
    records_dnsfunc,
    signed_header_names,
    verify,
    verify_with_resolver,
)

OURS = "netigate.test"
CUSTOMER = "customer.test"
NOW = 1_700_000_000

SIMPLE = (
    b"From: Survey <survey@netigate.test>\r\n"
    b"To: Ann <ann@example.org>\r\n"
    b"Subject: Your opinion\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <1@netigate.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Please answer our survey.\r\n"
)
BULK = (
    b"Return-Path: <bounce@netigate.test>\r\n"
    b'From: "Customer AB" <survey@netigate.test>\r\n'
    b"Reply-To: info@customer.test\r\n"
    b"To: bo@example.org\r\n"
    b"Cc: someone@example.org\r\n"
    b"Subject:   A  long subject that goes on and on and is folded\r\n"
    b"\tonto a second line\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <2@netigate.test>\r\n"
    b"List-Unsubscribe: <https://netigate.test/u/abc>, <mailto:u@netigate.test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Mailer-Id: 42\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello  Bo,   with   runs of spaces   \r\n"
    + b"line of text with a trailing tab\t\r\n" * 60
    + b"--b1--\r\n\r\n\r\n"
)
LF_ONLY = SIMPLE.replace(b"\r\n", b"\n")
EMPTY_BODY = b"From: a@netigate.test\r\nSubject: nothing\r\n\r\n"
MESSAGES = {"simple": SIMPLE, "bulk": BULK, "lf-only": LF_ONLY, "empty-body": EMPTY_BODY}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    keys = KeyStore(tmp_path_factory.mktemp("keys"))
    keys.generate(OURS, "rsa1")
    keys.generate(OURS, "ed1", algorithm="ed25519")
    keys.generate(CUSTOMER, "cust")
    return keys


@pytest.fixture(scope="module")
def keys(store: KeyStore) -> dict[str, list[SigningKey]]:
    return store.load_all()


@pytest.fixture(scope="module")
def records(keys: dict[str, list[SigningKey]]) -> dict[str, str]:
    return {dns_name(k.domain, k.selector): dns_record_value(k) for ks in keys.values() for k in ks}


def only(keys: dict[str, list[SigningKey]], algorithm: str) -> dict[str, list[SigningKey]]:
    return {d: [k for k in ks if k.algorithm == algorithm] for d, ks in keys.items()}


def signatures(signed: bytes) -> list[bytes]:
    """The DKIM-Signature header fields, each with its folded lines."""
    return re.findall(rb"DKIM-Signature:.*?\r\n(?! )", signed, re.DOTALL)


def tag(signature: bytes, name: bytes) -> bytes:
    match = re.search(rb"[;\s]" + name + rb"=([^;]*)", signature)
    assert match is not None
    return re.sub(rb"\s+", b"", match.group(1))


# -- identical to dkimpy ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_rsa_signature_is_byte_identical_to_dkimpy(
    keys: dict[str, list[SigningKey]], name: str
) -> None:
    assert_signed_as_dkimpy_signs(keys, MESSAGES[name])


def assert_signed_as_dkimpy_signs(keys: dict[str, list[SigningKey]], message: bytes) -> None:
    [key] = only(keys, "rsa")[OURS]
    reference = dkim.sign(
        message,
        b"rsa1",
        OURS.encode(),
        key.private_pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=signed_header_names(message),
    )
    # dkimpy stamps t= from the clock; sign at the same second
    timestamp = int(tag(reference, b"t"))
    signer = Signer(only(keys, "rsa"), our_domain=OURS, clock=lambda: timestamp)
    assert signer.sign(message) == reference + message


_BODY_LINE = st.one_of(
    st.sampled_from([b"", b" ", b"\t", b"a  b", b"a \t b", b"tail ", b"tail\t", b"=C3=BC", b"."]),
    st.text("ab \t=.-", max_size=30).map(str.encode),
)
_EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    subject=st.text("ab \t", max_size=20).map(str.encode),
    folded=st.booleans(),
    lines=st.lists(st.tuples(_BODY_LINE, _EOL), max_size=8),
    trailing=st.integers(0, 3),
)
def test_signature_of_any_body_is_byte_identical_to_dkimpy(
    keys: dict[str, list[SigningKey]],
    subject: bytes,
    folded: bool,
    lines: list[tuple[bytes, bytes]],
    trailing: int,
) -> None:
    """The header block is parsed apart from the body, and a body with no
    blanks to fold skips dkimpy's substitutions: neither may change a byte,
    whatever the blanks and line ends."""
    head = b"From: a@netigate.test\r\nSubject: " + subject
    head += b"\r\n\tcontinued  here\r\n" if folded else b"\r\n"
    message = head + b"\r\n" + b"".join(a + b for a, b in lines) + b"\r\n" * trailing
    assert_signed_as_dkimpy_signs(keys, message)


def test_ed25519_signature_is_byte_identical_to_dkimpy(keys: dict[str, list[SigningKey]]) -> None:
    signer = Signer(keys, our_domain=OURS, clock=lambda: NOW)
    reference = naive_sign(BULK, signer.keys_for())
    timestamp = int(tag(signatures(reference)[1], b"t"))
    signer = Signer(keys, our_domain=OURS, clock=lambda: timestamp)
    assert signatures(signer.sign(BULK))[1] == signatures(reference)[1]


def test_naive_sign_makes_the_same_signatures_as_the_fast_path(
    keys: dict[str, list[SigningKey]],
) -> None:
    signer = Signer(keys, our_domain=OURS)
    naive = naive_sign(SIMPLE, signer.keys_for(CUSTOMER))
    fast = Signer(keys, our_domain=OURS, clock=lambda: int(tag(naive, b"t"))).sign(
        SIMPLE, customer_domain=CUSTOMER
    )
    # the naive path reads the clock once per signature: compare all but t=
    assert [tag(s, b"d") + tag(s, b"a") for s in signatures(naive)] == [
        tag(s, b"d") + tag(s, b"a") for s in signatures(fast)
    ]
    assert {tag(s, b"bh") for s in signatures(naive)} == {tag(s, b"bh") for s in signatures(fast)}


def test_signing_uses_the_key_parsed_at_load_not_the_pem(
    keys: dict[str, list[SigningKey]],
) -> None:
    # Signer must not parse PEM per message: a key whose PEM is garbage
    # still signs with the key object parsed when it was loaded.
    broken = {
        d: [dataclasses.replace(k, private_pem=b"not a key") for k in ks] for d, ks in keys.items()
    }
    reference = Signer(keys, our_domain=OURS, clock=lambda: NOW).sign(SIMPLE)
    assert Signer(broken, our_domain=OURS, clock=lambda: NOW).sign(SIMPLE) == reference


# -- which headers are signed ----------------------------------------------


def test_the_listed_headers_are_over_signed_and_only_listed_headers_are_signed() -> None:
    present = [
        b"from",
        b"reply-to",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"mime-version",
        b"content-type",
    ]
    assert signed_header_names(BULK) == present + list(OVERSIGNED_HEADERS)
    assert set(OVERSIGNED_HEADERS) == {
        b"from",
        b"to",
        b"cc",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"content-type",
        b"mime-version",
        b"feedback-id",
    }


def test_h_tag_lists_the_signed_headers(keys: dict[str, list[SigningKey]]) -> None:
    [signature] = signatures(Signer(only(keys, "rsa"), our_domain=OURS).sign(SIMPLE))
    assert tag(signature, b"h") == (
        b"from:to:subject:date:message-id:mime-version:content-type:"
        + b":".join(OVERSIGNED_HEADERS)
    )
    assert tag(signature, b"c") == b"relaxed/relaxed"
    assert tag(signature, b"a") == b"rsa-sha256"


def test_a_message_without_from_is_refused(keys: dict[str, list[SigningKey]]) -> None:
    with pytest.raises(ValidationError, match="no From") as caught:
        Signer(keys, our_domain=OURS).sign(b"To: a@example.org\r\n\r\nhi\r\n")
    assert caught.value.field == "message"


def test_a_message_dkimpy_cannot_parse_is_refused(keys: dict[str, list[SigningKey]]) -> None:
    with pytest.raises(ValidationError) as caught:
        Signer(keys, our_domain=OURS).sign(b"From a@example.org\r\nbroken header\r\n\r\nhi")
    assert caught.value.field == "message"


@pytest.mark.parametrize("headers", [(b"to", b"subject"), (*DEFAULT_SIGNED_HEADERS, b"Received")])
def test_a_header_list_without_from_or_with_trace_headers_is_refused(
    keys: dict[str, list[SigningKey]], headers: tuple[bytes, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        Signer(keys, our_domain=OURS, headers=headers)
    assert caught.value.field == "headers"


# -- which keys sign -------------------------------------------------------


def test_our_domain_signs_with_rsa_and_ed25519(keys: dict[str, list[SigningKey]]) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    assert [(tag(s, b"d"), tag(s, b"s"), tag(s, b"a")) for s in signatures(signed)] == [
        (b"netigate.test", b"rsa1", b"rsa-sha256"),
        (b"netigate.test", b"ed1", b"ed25519-sha256"),
    ]


def test_customer_key_present_means_both_domains_sign(
    keys: dict[str, list[SigningKey]],
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE, customer_domain="Customer.TEST")
    assert [(tag(s, b"d"), tag(s, b"a")) for s in signatures(signed)] == [
        (b"customer.test", b"rsa-sha256"),
        (b"netigate.test", b"rsa-sha256"),
        (b"netigate.test", b"ed25519-sha256"),
    ]


async def test_signing_beside_the_loop_gives_the_same_bytes_from_the_executor_thread(
    keys: dict[str, list[SigningKey]],
) -> None:
    signer = Signer(keys, our_domain=OURS, clock=lambda: NOW)
    threads: list[str] = []

    class Recording(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            def run():  # type: ignore[no-untyped-def]
                threads.append(threading.current_thread().name)
                return fn(*args, **kwargs)

            return super().submit(run)

    with Recording(1, thread_name_prefix="dkim-test") as pool:
        beside = await signer.sign_beside(SIMPLE, pool, customer_domain="customer.test")
    assert beside == signer.sign(SIMPLE, customer_domain="customer.test")
    assert len(signatures(beside)) == 3
    assert threads
    assert all(name.startswith("dkim-test") for name in threads)


@pytest.mark.parametrize("customer", ["nokeys.test", OURS, None])
def test_without_customer_keys_only_our_domain_signs(
    keys: dict[str, list[SigningKey]], customer: str | None
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE, customer_domain=customer)
    assert {tag(s, b"d") for s in signatures(signed)} == {b"netigate.test"}
    assert len(signatures(signed)) == 2


def test_a_domain_listed_with_no_keys_does_not_sign(keys: dict[str, list[SigningKey]]) -> None:
    signer = Signer({OURS: keys[OURS], CUSTOMER: []}, our_domain=OURS)
    assert {k.domain for k in signer.keys_for(CUSTOMER)} == {OURS}


def test_our_domain_without_an_rsa_key_is_refused(keys: dict[str, list[SigningKey]]) -> None:
    with pytest.raises(KeyMaterialError, match="no RSA key"):
        Signer(only(keys, "ed25519"), our_domain=OURS)
    with pytest.raises(KeyMaterialError, match="no DKIM key"):
        Signer({CUSTOMER: keys[CUSTOMER]}, our_domain=OURS)


def test_a_key_filed_under_another_domain_is_refused(keys: dict[str, list[SigningKey]]) -> None:
    with pytest.raises(KeyMaterialError, match="listed under"):
        Signer({OURS: keys[CUSTOMER]}, our_domain=OURS)


# -- verification ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_dkimpy_verifies_every_signature(
    keys: dict[str, list[SigningKey]], records: dict[str, str], name: str
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(MESSAGES[name], customer_domain=CUSTOMER)
    results = verify(signed, dnsfunc=records_dnsfunc(records))
    assert [(r.domain, r.algorithm, r.ok) for r in results] == [
        ("customer.test", "rsa-sha256", True),
        ("netigate.test", "rsa-sha256", True),
        ("netigate.test", "ed25519-sha256", True),
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Please answer", b"Please ignore"),
        (b"Subject: Your opinion", b"Subject: Your  opinions"),
        (b"To: Ann <ann@", b"To: Bob <ann@"),
    ],
)
def test_a_message_altered_after_signing_fails(
    keys: dict[str, list[SigningKey]], records: dict[str, str], old: bytes, new: bytes
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    results = verify(signed.replace(old, new), dnsfunc=records_dnsfunc(records))
    assert [r.ok for r in results] == [False, False]


def test_whitespace_changes_survive_relaxed_canonicalisation(
    keys: dict[str, list[SigningKey]], records: dict[str, str]
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    changed = signed.replace(b"Subject: Your opinion", b"subject:   Your \t opinion  ")
    assert [r.ok for r in verify(changed, dnsfunc=records_dnsfunc(records))] == [True, True]


def add_header(signed: bytes, field: bytes) -> bytes:
    head, _, body = signed.partition(b"\r\n\r\n")
    return head + b"\r\n" + field + b"\r\n\r\n" + body


@pytest.mark.parametrize("where", ["top", "bottom"])
def test_a_second_from_added_after_signing_fails(
    keys: dict[str, list[SigningKey]], records: dict[str, str], where: str
) -> None:
    # dkimpy's verifier also counts one From more than h= lists, so this
    # holds even without over-signing; the h= test above and the OpenDKIM
    # test pin the over-signing itself.
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    forged_from = b"From: ceo@netigate.test"
    top = where == "top"
    forged = forged_from + b"\r\n" + signed if top else add_header(signed, forged_from)
    assert [r.ok for r in verify(forged, dnsfunc=records_dnsfunc(records))] == [False, False]


# A second copy of each over-signed header, put at the very top where an
# attacker would put it (a reader shows the first). BULK has no Feedback-ID:
# adding one where there was none must fail too.
FORGED_COPIES = {
    b"from": b"From: ceo@netigate.test",
    b"to": b"To: victim@example.org",
    b"cc": b"Cc: other@example.org",
    b"subject": b"Subject: Urgent: confirm your password",
    b"date": b"Date: Wed, 15 Nov 2023 08:00:00 +0000",
    b"message-id": b"Message-ID: <forged@netigate.test>",
    b"reply-to": b"Reply-To: thief@evil.test",
    b"list-unsubscribe": b"List-Unsubscribe: <https://evil.test/u>",
    b"list-unsubscribe-post": b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    b"content-type": b"Content-Type: text/html; charset=utf-8",
    b"mime-version": b"MIME-Version: 1.0",
    b"feedback-id": b"Feedback-ID: 1:evil:survey:netigate",
}


def test_every_over_signed_header_has_a_forged_copy_under_test() -> None:
    assert set(FORGED_COPIES) == set(OVERSIGNED_HEADERS)


@pytest.mark.parametrize("name", list(FORGED_COPIES), ids=lambda n: n.decode())
def test_dkimpy_fails_a_second_copy_of_a_signed_header_added_at_the_top(
    keys: dict[str, list[SigningKey]], records: dict[str, str], name: bytes
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(BULK, customer_domain=CUSTOMER)
    assert [r.ok for r in verify(signed, dnsfunc=records_dnsfunc(records))] == [True] * 3
    forged = FORGED_COPIES[name] + b"\r\n" + signed
    assert [r.ok for r in verify(forged, dnsfunc=records_dnsfunc(records))] == [False] * 3


def test_an_added_unsigned_header_still_verifies(
    keys: dict[str, list[SigningKey]], records: dict[str, str]
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    relayed = add_header(signed, b"X-Relay: seen")
    assert [r.ok for r in verify(relayed, dnsfunc=records_dnsfunc(records))] == [True, True]


def test_verify_says_why_a_key_is_missing(keys: dict[str, list[SigningKey]]) -> None:
    signed = Signer(only(keys, "rsa"), our_domain=OURS).sign(SIMPLE)
    [result] = verify(signed, dnsfunc=records_dnsfunc({}))
    assert not result.ok
    assert "missing public key" in result.detail
    assert (result.domain, result.selector) == ("netigate.test", "rsa1")


def test_a_mangled_ed25519_signature_is_a_failure_not_an_exception(
    keys: dict[str, list[SigningKey]], records: dict[str, str]
) -> None:
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE)
    ed = signatures(signed)[1]
    mangled = signed.replace(ed, re.sub(rb"b=[^;]*$", b"b=AAAA\r\n", ed))
    results = verify(mangled, dnsfunc=records_dnsfunc(records))
    assert [r.ok for r in results] == [True, False]
    assert "64 bytes" in results[1].detail


def test_verify_of_an_unsigned_message_is_empty() -> None:
    assert verify(SIMPLE, dnsfunc=records_dnsfunc({})) == []


# -- verification through the loopback DNS server --------------------------


@pytest.fixture
def dns_server(records: dict[str, str]) -> Iterator[DNSServer]:
    with DNSServer({name: {"TXT": [value]} for name, value in records.items()}) as server:
        yield server


async def test_signatures_verify_with_keys_from_the_loopback_dns_server(
    keys: dict[str, list[SigningKey]], dns_server: DNSServer
) -> None:
    resolver = Resolver([dns_server.address], timeout=2.0)
    signed = Signer(keys, our_domain=OURS).sign(BULK, customer_domain=CUSTOMER)
    results = await verify_with_resolver(signed, resolver)
    assert [(r.domain, r.selector, r.ok) for r in results] == [
        ("customer.test", "cust", True),
        ("netigate.test", "rsa1", True),
        ("netigate.test", "ed1", True),
    ]


async def test_a_revoked_key_in_dns_fails_verification(
    keys: dict[str, list[SigningKey]], dns_server: DNSServer
) -> None:
    dns_server.set("cust._domainkey.customer.test", "TXT", ["v=DKIM1; k=rsa; p="])
    resolver = Resolver([dns_server.address], timeout=2.0)
    signed = Signer(keys, our_domain=OURS).sign(SIMPLE, customer_domain=CUSTOMER)
    results = await verify_with_resolver(signed, resolver)
    assert [r.ok for r in results] == [False, True, True]


async def test_a_dns_failure_is_reported_as_such(
    keys: dict[str, list[SigningKey]], dns_server: DNSServer
) -> None:
    dns_server.fail("rsa1._domainkey.netigate.test")
    resolver = Resolver([dns_server.address], timeout=1.0)
    signed = Signer(only(keys, "rsa"), our_domain=OURS).sign(SIMPLE)
    [result] = await verify_with_resolver(signed, resolver)
    assert not result.ok
    assert "DnsTimeoutError" in result.detail


def test_records_dnsfunc_raises_dkimpy_timeout_for_temporary_failures() -> None:
    lookup = records_dnsfunc({"s._domainkey.a.test": DNSTemporaryError("s", "SERVFAIL")})
    with pytest.raises(dkim.DnsTimeoutError):
        lookup(b"s._domainkey.a.test.", timeout=5)
    assert lookup(b"S._DOMAINKEY.B.TEST.") is None


def test_keys_are_read_from_disk_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.generate(OURS, "solo")
    signer = Signer(store.load_all(), our_domain=OURS)
    (tmp_path / OURS / "solo.key").unlink()
    assert len(signatures(signer.sign(SIMPLE))) == 1


_NAMES = st.sampled_from([b"from", b"to", b"subject", b"cc", b"x-a"])


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(st.tuples(_NAMES, st.binary(max_size=3)), max_size=10),
    include=st.lists(_NAMES, max_size=12),
    upper=st.booleans(),
)
def test_header_selection_is_dkimpys(
    fields: list[tuple[bytes, bytes]], include: list[bytes], upper: bool
) -> None:
    headers = [(name.upper() if upper else name, value) for name, value in fields]
    assert _select(headers, include) == dkim.select_headers(headers, include)


def test_a_message_with_repeated_fields_is_signed_as_dkimpy_signs(
    keys: dict[str, list[SigningKey]],
) -> None:
    message = (
        b"Received: one\r\nFrom: a@netigate.test\r\nTo: b@x.test\r\nSubject: first\r\n"
        b"To: c@x.test\r\nSubject: second\r\nReceived: two\r\n\r\nbody\r\n"
    )
    assert_signed_as_dkimpy_signs(keys, message)
