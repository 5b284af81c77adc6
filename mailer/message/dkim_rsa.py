"""dkimpy's RSA signature check, with OpenSSL's arithmetic.

dkimpy 1.1 verifies an RSA signature in pure Python: it parses the key
record's ASN.1 on every check, raises the signature to the public exponent
with Python integers and converts the numbers to bytes and back one octet
at a time. That is about a fifth of what the developer sink spends checking
a message (docs/performance.md); OpenSSL does the same check some ten times
faster. dkimpy has no seam for it: ``DKIM.verify`` calls the module
functions ``parse_public_key`` and ``RSASSA_PKCS1_v1_5_verify`` by name.
:func:`install` points those two names at the functions here, which give
dkimpy the same answers (the tests hold them to dkimpy's own over valid,
altered, SHA-1, short-written and too-small-key signatures); everything else
of a verification (parsing, canonicalisation, hashes, the checks on the
key record and its size) stays dkimpy's. Two answers are stricter than
dkimpy's, as OpenSSL is: a signature number not below the modulus, and an
exponent that makes no RSA key, verify nothing. The names exist
throughout the dkimpy versions the project allows (1.1.x).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

__all__ = ["install", "installed", "rsassa_pkcs1_v1_5_verify"]

# dkimpy's own, which the tests hold these to
DKIMPY_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
DKIMPY_PARSE_PUBLIC_KEY = dkim.crypto.parse_public_key

# the hashes DKIM signs with (RFC 6376 §3.3, RFC 8301 keeps sha1 for
# verifiers), each as the digest OpenSSL is handed, and the length of its
# DER DigestInfo (RFC 8017 §9.2)
_HASHES: dict[str, tuple[Prehashed, int]] = {
    "sha256": (Prehashed(hashes.SHA256()), 51),
    "sha1": (Prehashed(hashes.SHA1()), 35),
}
_PKCS1V15 = padding.PKCS1v15()


@functools.lru_cache(maxsize=256)
def _public_key(modulus: int, exponent: int) -> rsa.RSAPublicKey | None:
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except ValueError:  # numbers OpenSSL takes for no RSA key
        return None


def rsassa_pkcs1_v1_5_verify(hasher: Any, signature: bytes, public_key: Mapping[str, int]) -> bool:
    """Whether ``signature`` is the RSASSA-PKCS1-v1_5 signature (RFC 8017
    §8.2.2) of ``hasher``'s digest under ``public_key`` (dkimpy's dict of
    ``modulus`` and ``publicExponent``): dkimpy's function of that name.

    Raises dkimpy's DigestTooLargeError, as dkimpy's does, for a modulus too
    short to hold the encoded digest, and KeyError for a hash DKIM does not
    use.
    """
    prehashed, info_length = _HASHES[hasher.name.lower()]
    modulus = public_key["modulus"]
    length = (modulus.bit_length() + 7) // 8
    if info_length + 11 > length:
        raise dkim.crypto.DigestTooLargeError()
    key = _public_key(modulus, public_key["publicExponent"])
    if key is None:
        return False
    # dkimpy reads the signature as a number, so one written with fewer or
    # more leading zero octets than the modulus has verifies there; OpenSSL
    # wants exactly as many. A number not below the modulus is no signature
    # (RFC 8017 §5.2.2; dkimpy would take it modulo the modulus).
    number = int.from_bytes(signature, "big")
    if number >= modulus:
        return False
    try:
        key.verify(number.to_bytes(length, "big"), hasher.digest(), _PKCS1V15, prehashed)
    except InvalidSignature:
        return False
    return True


# the same key record comes with message after message; dkimpy parses its
# DER on every check (the dict it returns is only read)
_parse_public_key = functools.lru_cache(maxsize=256)(DKIMPY_PARSE_PUBLIC_KEY)


def install() -> None:
    """Have dkimpy check RSA signatures with the functions here, in this
    process (once is enough; again changes nothing)."""
    dkim.RSASSA_PKCS1_v1_5_verify = rsassa_pkcs1_v1_5_verify
    dkim.parse_public_key = _parse_public_key


def installed() -> bool:
    """Whether dkimpy checks RSA signatures with the functions here."""
    return (
        dkim.RSASSA_PKCS1_v1_5_verify is rsassa_pkcs1_v1_5_verify
        and dkim.parse_public_key is _parse_public_key
    )
