"""The DKIM key store, key records, and checking what DNS publishes."""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import DNSTemporaryError, KeyMaterialError, ValidationError
from mailer.message.keys import (
    KeyInfo,
    KeyStore,
    SigningKey,
    check_published,
    compare_record,
    dns_record_strings,
    dns_record_value,
    format_txt_record,
    parse_dkim_record,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    """One RSA and one Ed25519 key, generated once for the module."""
    keys = KeyStore(tmp_path_factory.mktemp("keys"))
    keys.generate("example.test", "rsa1")
    keys.generate("example.test", "ed1", algorithm="ed25519")
    return keys


@pytest.fixture(scope="module")
def rsa_key(store: KeyStore) -> SigningKey:
    return next(k for k in store.load("example.test") if k.algorithm == "rsa")


@pytest.fixture(scope="module")
def ed_key(store: KeyStore) -> SigningKey:
    return next(k for k in store.load("example.test") if k.algorithm == "ed25519")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- generate and the file layout ------------------------------------------


def test_generate_writes_a_0600_pem_in_a_0700_domain_directory(tmp_path: Path) -> None:
    info = KeyStore(tmp_path).generate("Example.TEST.", "s1")
    assert info == KeyInfo("example.test", "s1", "rsa", 2048, tmp_path / "example.test" / "s1.key")
    assert mode(info.path) == 0o600
    assert mode(info.path.parent) == 0o700
    assert info.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_generated_rsa_record_parses_and_carries_the_public_key(store: KeyStore) -> None:
    info = store.list("example.test")[1]
    tags = parse_dkim_record(dns_record_value(info))
    assert (tags["v"], tags["k"]) == ("DKIM1", "rsa")
    published = serialization.load_der_public_key(base64.b64decode(tags["p"]))
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.key_size == 2048
    loaded = store.load("example.test")[1].private_key
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert published.public_numbers() == loaded.public_key().public_numbers()


def test_ed25519_record_is_k_ed25519_with_the_raw_32_byte_key(ed_key: SigningKey) -> None:
    tags = parse_dkim_record(dns_record_value(ed_key))
    assert tags["k"] == "ed25519"
    raw = ed_key.private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert base64.b64decode(tags["p"]) == raw
    assert len(raw) == 32


def test_generate_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    info = keys.generate("example.test", "s1", algorithm="ed25519")
    before = info.path.read_bytes()
    with pytest.raises(ValidationError) as caught:
        keys.generate("example.test", "s1", algorithm="ed25519")
    assert caught.value.field == "selector"
    assert info.path.read_bytes() == before


@pytest.mark.parametrize(
    ("domain", "selector", "options", "field"),
    [
        ("not a domain", "s1", {}, "domain"),
        ("localhost", "s1", {}, "domain"),
        ("../etc", "s1", {}, "domain"),
        ("bücher.test", "s1", {}, "domain"),
        ("example.test", "../s1", {}, "selector"),
        ("example.test", "s_1", {}, "selector"),
        ("example.test", "", {}, "selector"),
        ("example.test", "s1", {"algorithm": "dsa"}, "algorithm"),
        ("example.test", "s1", {"bits": 1024}, "bits"),
    ],
)
def test_generate_names_the_bad_field(
    tmp_path: Path, domain: str, selector: str, options: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyStore(tmp_path).generate(domain, selector, **options)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert list(tmp_path.iterdir()) == []


def test_list_sorts_and_ignores_files_beside_the_domain_directories(store: KeyStore) -> None:
    (store.root / "README.md").write_text("not a key")
    (store.root / ".gitignore").write_text("*")
    listed = [(k.domain, k.selector, k.algorithm, k.bits) for k in store.list()]
    assert listed == [
        ("example.test", "ed1", "ed25519", None),
        ("example.test", "rsa1", "rsa", 2048),
    ]


def test_load_all_groups_keys_by_domain(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path)
    keys.generate("a.test", "s1", algorithm="ed25519")
    keys.generate("b.test", "s1", algorithm="ed25519")
    keys.generate("b.test", "s2", algorithm="ed25519")
    loaded = keys.load_all()
    assert {d: [k.selector for k in ks] for d, ks in loaded.items()} == {
        "a.test": ["s1"],
        "b.test": ["s1", "s2"],
    }


def test_a_domain_without_keys_loads_as_empty(tmp_path: Path) -> None:
    assert KeyStore(tmp_path).load("nokeys.test") == []
    assert KeyStore(tmp_path / "absent").list() == []


def write_key(root: Path, name: str, data: bytes, file_mode: int = 0o600) -> Path:
    path = root / "example.test" / name
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(file_mode)
    return path


def test_a_pkcs1_rsa_key_from_openssl_loads(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    write_key(tmp_path, "old.key", pem)
    [key] = KeyStore(tmp_path).load("example.test")
    assert (key.selector, key.algorithm, key.bits) == ("old", "rsa", 2048)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b"garbage", "not a PEM private key"),
        (
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "neither RSA nor Ed25519",
        ),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
            "encrypted",
        ),
    ],
)
def test_a_bad_key_file_is_an_error_naming_the_file(
    tmp_path: Path, data: bytes, complaint: str
) -> None:
    path = write_key(tmp_path, "bad.key", data)
    with pytest.raises(KeyMaterialError, match=complaint) as caught:
        KeyStore(tmp_path).load("example.test")
    assert str(path) in str(caught.value)


def test_a_key_readable_by_others_is_refused(tmp_path: Path, ed_key: SigningKey) -> None:
    path = write_key(tmp_path, "open.key", ed_key.private_pem, file_mode=0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600") as caught:
        KeyStore(tmp_path).list()
    assert str(path) in str(caught.value)


# -- TXT record text -------------------------------------------------------


def test_dns_record_strings_split_at_255_bytes() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 582
    strings = dns_record_strings(value)
    assert [len(s) for s in strings] == [255, 255, 90]
    assert "".join(strings) == value
    assert dns_record_strings("x" * 255) == ["x" * 255]
    assert [len(s) for s in dns_record_strings("x" * 256)] == [255, 1]


def test_dns_record_strings_refuse_non_ascii() -> None:
    with pytest.raises(ValidationError):
        dns_record_strings("p=ä")


def test_a_2048_bit_record_needs_two_strings(rsa_key: SigningKey) -> None:
    value = dns_record_value(rsa_key)
    assert len(value) > 255
    assert len(dns_record_strings(value)) == 2


def test_format_txt_record_is_a_zone_file_line() -> None:
    line = format_txt_record("example.test", "s1", "v=DKIM1; p=" + "B" * 300)
    first, second = "v=DKIM1; p=" + "B" * 244, "B" * 56
    assert line == f's1._domainkey.example.test. IN TXT ( "{first}" "{second}" )'


def test_format_txt_record_escapes_quotes_and_backslashes() -> None:
    assert format_txt_record("example.test", "s1", 'n="a\\b"') == (
        's1._domainkey.example.test. IN TXT ( "n=\\"a\\\\b\\"" )'
    )


# -- tag=value parsing -----------------------------------------------------


def test_parse_dkim_record_strips_folding_whitespace_around_tags_and_values() -> None:
    text = "v=DKIM1;\tk = rsa ;\r\n p=MIIB\r\n IjAN ; n=a note;"
    assert parse_dkim_record(text) == {
        "v": "DKIM1",
        "k": "rsa",
        "p": "MIIB\r\n IjAN",
        "n": "a note",
    }


def test_parse_dkim_record_keeps_tag_name_case() -> None:
    assert parse_dkim_record("P=x; p=y") == {"P": "x", "p": "y"}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "empty"),
        ("  ;", "an empty element"),
        ("v=DKIM1; p=abc; p=def", "twice"),
        ("v=DKIM1;; p=abc", "an empty element"),
        ("v=DKIM1; justtext", "not tag=value"),
        ("1v=DKIM1", "bad tag name"),
        ("v-x=DKIM1", "bad tag name"),
        ("p=ab\x00c", "bad character"),
        ("n=caf\u00e9", "bad character"),
    ],
)
def test_parse_dkim_record_rejects_bad_syntax(text: str, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint) as caught:
        parse_dkim_record(text)
    assert caught.value.field == "record"


# -- judging a published record (pure) -------------------------------------


def p_of(key: SigningKey) -> str:
    return parse_dkim_record(dns_record_value(key))["p"]


def test_a_record_in_pkcs1_form_or_folded_still_matches(rsa_key: SigningKey) -> None:
    pkcs1 = rsa_key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    assert compare_record(rsa_key, "p=" + base64.b64encode(pkcs1).decode()).ok
    p = p_of(rsa_key)
    assert compare_record(rsa_key, f"v=DKIM1; k=rsa; p={p[:100]} {p[100:]}").ok


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ("k=rsa; p=AAAA", "bad-syntax"),
        ("k=rsa; p=!!!", "bad-syntax"),
        ("v=DKIM2; p=AAAA", "bad-syntax"),
        ("k=rsa; v=DKIM1; p=AAAA", "bad-syntax"),
        ("v=DKIM1; k=rsa", "bad-syntax"),
        ("v=DKIM1; k=rsa; p=", "revoked"),
        ("v=DKIM1; k=ed25519; p=AAAA", "wrong-algorithm"),
        ("v=DKIM1; h=sha1; p={p}", "wrong-algorithm"),
        ("v=DKIM1; s=tlsrpt; p={p}", "wrong-service"),
    ],
)
def test_compare_record_names_the_problem(rsa_key: SigningKey, record: str, problem: str) -> None:
    check = compare_record(rsa_key, record.format(p=p_of(rsa_key)))
    assert (check.ok, check.problem) == (False, problem)


def test_compare_record_accepts_testing_mode_and_says_so(rsa_key: SigningKey) -> None:
    check = compare_record(rsa_key, f"v=DKIM1; t=y; p={p_of(rsa_key)}")
    assert check.ok
    assert "t=y" in check.detail


# -- check_published against the loopback DNS server -----------------------


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    with DNSServer({"example.test": {"A": ["127.0.0.1"]}}) as server:
        yield server


@pytest.fixture
def resolver(dns_server: DNSServer) -> Resolver:
    return Resolver([dns_server.address], timeout=2.0, negative_ttl=0, max_ttl=0)


RSA_NAME = "rsa1._domainkey.example.test"


async def test_check_published_ok_when_dns_serves_the_key(
    dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    value = dns_record_value(rsa_key)
    # as publishers do: the record split into 255-byte character-strings
    dns_server.set(RSA_NAME, "TXT", [tuple(dns_record_strings(value))])
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem, check.published) == (True, None, value)


async def test_check_published_ed25519_ok_from_the_listed_key_info(
    dns_server: DNSServer, resolver: Resolver, store: KeyStore, ed_key: SigningKey
) -> None:
    dns_server.set("ed1._domainkey.example.test", "TXT", [dns_record_value(ed_key)])
    [info] = [k for k in store.list("example.test") if k.algorithm == "ed25519"]
    assert (await check_published(resolver, info)).ok


async def test_check_published_missing_when_the_name_does_not_exist(
    resolver: Resolver, rsa_key: SigningKey
) -> None:
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem, check.published) == (False, "missing", None)


async def test_check_published_different_key_when_dns_has_another(
    tmp_path: Path, dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    other = KeyStore(tmp_path).generate("example.test", "rsa1")
    dns_server.set(RSA_NAME, "TXT", [dns_record_value(other)])
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem) == (False, "different-key")


async def test_check_published_bad_syntax(
    dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    dns_server.set(RSA_NAME, "TXT", ["v=DKIM1; k=rsa; p"])
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem, check.published) == (False, "bad-syntax", "v=DKIM1; k=rsa; p")


async def test_check_published_revoked_when_p_is_empty(
    dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    dns_server.set(RSA_NAME, "TXT", ["v=DKIM1; k=rsa; p="])
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem) == (False, "revoked")


async def test_check_published_refuses_two_records_at_the_name(
    dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    dns_server.set(RSA_NAME, "TXT", [dns_record_value(rsa_key), "v=DKIM1; p="])
    check = await check_published(resolver, rsa_key)
    assert (check.ok, check.problem) == (False, "multiple-records")


async def test_check_published_raises_when_dns_fails(
    dns_server: DNSServer, resolver: Resolver, rsa_key: SigningKey
) -> None:
    dns_server.fail(RSA_NAME)
    with pytest.raises(DNSTemporaryError):
        await check_published(resolver, rsa_key)
