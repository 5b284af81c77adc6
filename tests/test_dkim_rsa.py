"""dkimpy's RSA signature check done by OpenSSL gives dkimpy's own answers
(and is what dkimpy calls once the signing module is imported)."""

from __future__ import annotations

import hashlib
import itertools

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import mailer.message.signing  # noqa: F401  (installs the check)
from mailer.message import dkim_rsa
from mailer.message.dkim_rsa import DKIMPY_PARSE_PUBLIC_KEY, DKIMPY_VERIFY, rsassa_pkcs1_v1_5_verify


def key_of(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


def public(key: rsa.RSAPrivateKey) -> dict[str, int]:
    numbers = key.public_key().public_numbers()
    return {"modulus": numbers.n, "publicExponent": numbers.e}


def signed(key: rsa.RSAPrivateKey, data: bytes, name: str = "sha256") -> tuple[object, bytes]:
    hasher = hashlib.new(name, data)
    algorithm = hashes.SHA256() if name == "sha256" else hashes.SHA1()
    return hasher, key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(algorithm))


def both(hasher: object, signature: bytes, pk: dict[str, int]) -> tuple[bool, bool]:
    return DKIMPY_VERIFY(hasher, signature, pk), rsassa_pkcs1_v1_5_verify(hasher, signature, pk)


def test_importing_the_signing_module_points_dkimpy_at_the_openssl_check() -> None:
    assert dkim_rsa.installed()
    assert dkim.RSASSA_PKCS1_v1_5_verify is rsassa_pkcs1_v1_5_verify
    dkim_rsa.install()  # again: nothing changes
    assert dkim_rsa.installed()


@pytest.mark.parametrize("bits", [1024, 2048])
@pytest.mark.parametrize("name", ["sha256", "sha1"])
def test_valid_and_altered_signatures_get_dkimpys_answers(bits: int, name: str) -> None:
    key = key_of(bits)
    pk = public(key)
    hasher, signature = signed(key, b"Hallo Anna", name)
    assert both(hasher, signature, pk) == (True, True)
    other = hashlib.new(name, b"Hallo Eve!")
    assert both(other, signature, pk) == (False, False)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert both(hasher, flipped, pk) == (False, False)
    assert both(hasher, signature, public(key_of(bits))) == (False, False)


def test_leading_zero_octets_left_out_or_added_verify_as_in_dkimpy() -> None:
    key = key_of(1024)
    pk = public(key)
    # one signature in 256 starts with a zero octet
    for index in itertools.count():
        hasher, signature = signed(key, b"message %d" % index)
        if signature[0] == 0:
            break
    short = signature.lstrip(b"\0")
    assert len(short) < len(signature)
    assert both(hasher, short, pk) == (True, True)
    assert both(hasher, b"\0" + signature, pk) == (True, True)


def test_a_modulus_too_short_for_the_digest_raises_as_dkimpy_does() -> None:
    # a 400-bit number: no key DKIM allows, too short for a SHA-256 DigestInfo
    pk = {"modulus": (1 << 399) + 1, "publicExponent": 65537}
    hasher = hashlib.sha256(b"x")
    for check in (DKIMPY_VERIFY, rsassa_pkcs1_v1_5_verify):
        with pytest.raises(dkim.crypto.DigestTooLargeError):
            check(hasher, b"\1" * 50, pk)


def test_a_signature_number_not_below_the_modulus_verifies_nothing() -> None:
    # RFC 8017 §5.2.2; dkimpy takes it modulo the modulus and accepts it
    key = key_of(1024)
    pk = public(key)
    hasher, signature = signed(key, b"Hallo Anna")
    beyond = (int.from_bytes(signature, "big") + pk["modulus"]).to_bytes(129, "big")
    assert both(hasher, beyond, pk) == (True, False)


def test_the_key_record_is_parsed_as_dkimpy_parses_it() -> None:
    key = key_of(2048)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert dkim.parse_public_key(der) == DKIMPY_PARSE_PUBLIC_KEY(der) == public(key)
    with pytest.raises(dkim.crypto.UnparsableKeyError):
        dkim.parse_public_key(b"not a key")


def test_an_exponent_that_makes_no_rsa_key_verifies_nothing() -> None:
    # e=1: the "signature" is the padded digest itself, which dkimpy accepts
    modulus = public(key_of(1024))["modulus"]
    pk = {"modulus": modulus, "publicExponent": 1}
    hasher = hashlib.sha256(b"Hallo Anna")
    forged = bytes(dkim.crypto.EMSA_PKCS1_v1_5_encode(hasher, 128))
    assert both(hasher, forged, pk) == (True, False)
