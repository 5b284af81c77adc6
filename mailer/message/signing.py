"""DKIM signing with dkimpy's canonicalisation and OpenSSL's arithmetic.

dkimpy 1.1 signs RSA in pure Python, some twenty times slower than OpenSSL
through ``cryptography`` (docs/performance.md). dkimpy has no seam for the
private-key operation alone: its
``DomainSigner.gen_header`` builds the header, hashes it and calls the
module function ``RSASSA_PKCS1_v1_5_sign`` in one piece, and ``DKIM.sign``
parses the PEM key on every call. So this module drives dkimpy's own
building blocks — ``rfc822_parse`` and ``default_sign_headers`` (through a
``dkim.DKIM`` instance), ``CanonicalizationPolicy``, ``fold`` and
``RE_BTAG`` — in the order ``DKIM.sign``/``gen_header`` do, makes dkimpy's
``select_headers``/``hash_headers`` selection once per message in one pass
(:func:`_select`), and
signs the SHA-256 header digest with ``cryptography``: RSA PKCS#1 v1.5 over
the digest (``Prehashed``) and Ed25519 over the digest (RFC 8463). Both are
deterministic, so a signature here is byte-identical to ``dkim.sign``'s for
the same key, message, header list and ``t=`` (the tests compare them).

Per message the body is canonicalised and hashed once and the headers
canonicalised once, however many signatures are made; keys are parsed once,
when the :class:`Signer` is built. For a message with CRLF line ends only
(what the composer makes) dkimpy parses the header block alone, and header
fields and a body with no blank runs for relaxed canonicalisation to fold
skip dkimpy's substitutions, which would change nothing there; a property
test holds the result to ``dkim.sign``'s bytes.

Verification is dkimpy's, with its RSA arithmetic done by OpenSSL too
(:mod:`mailer.message.dkim_rsa`, installed on import).

dkimpy errors are translated into :mod:`mailer.errors` here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
)
from dkim.util import InvalidTagValueList, parse_tag_value

from mailer.errors import DNSError, DNSTemporaryError, KeyMaterialError, ValidationError
from mailer.message import dkim_rsa
from mailer.message.keys import SigningKey, TxtResolver, dns_name, normalise_domain

# every DKIM check made through this module (and any other dkimpy check in
# the process) does its RSA arithmetic in OpenSSL
dkim_rsa.install()

__all__ = [
    "DEFAULT_SIGNED_HEADERS",
    "OVERSIGNED_HEADERS",
    "SignatureCheck",
    "Signer",
    "digest_signer",
    "naive_sign",
    "records_dnsfunc",
    "signed_header_names",
    "verify",
    "verify_with_resolver",
]

#: Signed when present, in the message's order (dkimpy's default_sign_headers).
DEFAULT_SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"reply-to",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"feedback-id",
)
#: Listed once more than present (absent ones once), in this order after
#: the present ones: a copy added anywhere, or one added where there was
#: none, then breaks the signature. A verifier takes a header field's
#: instances from the bottom up, so an attacker's copy above the original
#: would otherwise go unsigned and be what a reader shows.
OVERSIGNED_HEADERS: tuple[bytes, ...] = (
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
)

CANONICALIZE = (b"relaxed", b"relaxed")
_CANON = CanonicalizationPolicy.from_c_value(b"/".join(CANONICALIZE))
_HEADER_NAME = b"DKIM-Signature"
_CRLF = b"\r\n"

DnsFunc = Callable[..., bytes | str | None]


@dataclass(frozen=True)
class _Key:
    """A key bound to its signing operation, made once per Signer."""

    domain: bytes
    selector: bytes
    algorithm: bytes
    sign_digest: Callable[[bytes], bytes]


def _bind(key: SigningKey) -> _Key:
    private = key.private_key
    if isinstance(private, rsa.RSAPrivateKey):
        pkcs1v15 = padding.PKCS1v15()
        sha256 = Prehashed(hashes.SHA256())

        def sign_rsa(digest: bytes) -> bytes:
            return private.sign(digest, pkcs1v15, sha256)

        return _Key(key.domain.encode(), key.selector.encode(), b"rsa-sha256", sign_rsa)
    return _Key(key.domain.encode(), key.selector.encode(), b"ed25519-sha256", private.sign)


def digest_signer(key: SigningKey) -> Callable[[bytes], bytes]:
    """The private-key operation of ``key`` alone, over a SHA-256 digest:
    the part of a signature :meth:`Signer.sign_beside` runs off the loop."""
    return _bind(key).sign_digest


def _parse(message: bytes, headers: Iterable[bytes]) -> tuple[dkim.DKIM, tuple[bytes, ...]]:
    """dkimpy's parse of ``message`` and the header names to sign.

    Raises ValidationError("message") for a message dkimpy cannot parse or
    one without a From header field.
    """
    parsed = _parse_any(message)
    wanted = {h.lower() for h in headers}
    present = [name.lower() for name, _ in parsed.headers if name.lower() in wanted]
    if b"from" not in present:
        raise ValidationError("message", "no From header field")
    # dkimpy's own frozen_sign lists only the names present; an absent Cc
    # or Reply-To is listed too, so that adding one fails.
    include = (*present, *(name for name in OVERSIGNED_HEADERS if name in wanted))
    return parsed, include


def signed_header_names(
    message: bytes, headers: Sequence[bytes] = DEFAULT_SIGNED_HEADERS
) -> list[bytes]:
    """The ``h=`` list a signature of ``message`` gets: each of ``headers``
    present, in message order, then each of :data:`OVERSIGNED_HEADERS` that
    ``headers`` has once more, present or not.

    Raises ValidationError("message") as :class:`Signer.sign`.
    """
    return list(_parse(message, headers)[1])


def _split(message: bytes) -> tuple[bytes, bytes] | None:
    """The header block (with the empty line ending it) and the body of a
    message whose every line ends in CRLF, as dkimpy's ``rfc822_parse``
    divides them; None for any other message. dkimpy splits the whole
    message into lines and joins the body's up again; for a message built
    here only the header block needs parsing."""
    end = message.find(b"\r\n\r\n")
    if end <= 0 or message.count(b"\n") != message.count(b"\r\n"):
        return None
    return message[: end + 4], message[end + 4 :]


def _canonical_body(body: bytes) -> bytes:
    """dkimpy's relaxed body canonicalisation. Its two substitutions (runs
    of blanks to one space, blanks before a line end removed) change nothing
    in a body without tabs, double spaces or a space before CRLF, which is
    what the composer's quoted-printable and base64 parts are; there only
    the trailing empty lines go (docs/performance.md)."""
    canonical: bytes
    if b"\t" in body or b"  " in body or b" \r\n" in body:
        canonical = _CANON.canonicalize_body(body)
    else:
        canonical = correct_empty_body(strip_trailing_lines(body))
    return canonical


def _canonical_headers(headers: list[list[bytes]]) -> list[tuple[bytes, bytes]]:
    """dkimpy's relaxed header canonicalisation for header fields of a
    message with CRLF line ends only (see :func:`_split`): unfolding is
    removing each CRLF, and dkimpy's blank-run substitution runs only on a
    value that has a tab or two spaces in a row, the others it leaves as
    they are."""
    canonical = []
    for name, value in headers:
        flat = value.replace(b"\r\n", b"")
        if b"\t" in flat or b"  " in flat:
            flat = compress_whitespace(flat)
        canonical.append((name.lower().rstrip(), flat.strip() + b"\r\n"))
    return canonical


def _select(
    headers: Sequence[tuple[bytes, bytes]], include: Sequence[bytes]
) -> list[tuple[bytes, bytes]]:
    """dkimpy's ``select_headers`` in one pass (pure): for each name of
    ``include``, the next instance of that field from the bottom up that
    an earlier listing of the name has not taken; a name with none left
    selects nothing. dkimpy's scans the header block once per name, with a
    ``lower()`` per field looked at: a fifth of canonicalising a message."""
    instances: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for field in headers:
        instances.setdefault(field[0].lower(), []).append(field)
    selected = []
    for name in include:
        left = instances.get(name)
        if left:
            selected.append(left.pop())
    return selected


class _Prepared:
    """One message, canonicalised once for all its signatures."""

    def __init__(self, message: bytes, headers: frozenset[bytes]) -> None:
        split = _split(message)
        parsed, self.include = _parse(message if split is None else split[0], headers)
        self.h_value = b" : ".join(self.include)
        if split is None:
            self.headers = _CANON.canonicalize_headers(parsed.headers)
        else:
            self.headers = _canonical_headers(parsed.headers)
        body = _canonical_body(parsed.body if split is None else split[1])
        self.body_hash = base64.b64encode(hashlib.sha256(body).digest())
        # the signed header fields as dkimpy's hash_headers feeds them to the
        # hash, the same for every signature of the message
        self.signed = b"".join(
            name + b":" + value for name, value in _select(self.headers, self.include)
        )

    def unsigned(self, key: _Key, timestamp: int) -> _Unsigned:
        """The signature's tags with ``b=`` still to fill, and the digest to
        sign for it."""
        # The tags, their order and both folds are DKIM.sign's and
        # gen_header's (dkimpy 1.1), so the bytes come out the same.
        fields = [
            (b"v", b"1"),
            (b"a", key.algorithm),
            (b"c", _CANON.to_c_value()),
            (b"d", key.domain),
            (b"i", b"@" + key.domain),
            (b"q", b"dns/txt"),
            (b"s", key.selector),
            (b"t", str(timestamp).encode("ascii")),
            (b"h", self.h_value),
            (b"bh", self.body_hash),
            # dkimpy's placeholder puts b= on a line of its own, so that
            # refolding after filling it in leaves the other tags alone.
            (b"b", b"0" * 60),
        ]
        template = dkim.fold(_join(fields), namelen=len(_HEADER_NAME), linesep=_CRLF)
        template = dkim.RE_BTAG.sub(b"\\1", template)
        # dkimpy's hash_headers, with the selection made once per message:
        # the signature field canonicalised by dkimpy, hashed without its
        # CRLF (its b= already emptied above)
        [(name, value)] = _CANON.canonicalize_headers([(_HEADER_NAME, b" " + template)])
        hasher = hashlib.sha256(self.signed)
        hasher.update(name + b":" + value.rstrip())
        return _Unsigned(key, fields, hasher.digest())


@dataclass(frozen=True)
class _Unsigned:
    key: _Key
    fields: list[tuple[bytes, bytes]]
    digest: bytes

    def header(self, signature: bytes) -> bytes:
        """The DKIM-Signature header field with ``signature`` as ``b=``."""
        fields = [*self.fields[:-1], (b"b", base64.b64encode(signature))]
        value: bytes = dkim.fold(_join(fields) + _CRLF, namelen=len(_HEADER_NAME), linesep=_CRLF)
        return _HEADER_NAME + b": " + value


def _private_key_operations(unsigned: Sequence[_Unsigned]) -> list[bytes]:
    return [u.key.sign_digest(u.digest) for u in unsigned]


def _join(fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)


class Signer:
    """Signs every message with our domain's keys and, where it has any, the
    customer domain's: per domain one rsa-sha256 signature and, when the
    domain also has an Ed25519 key, one ed25519-sha256 signature.

    Of several keys of one algorithm for a domain the first listed signs
    (KeyStore.load lists them by selector).
    """

    def __init__(
        self,
        keys: Mapping[str, Sequence[SigningKey]],
        *,
        our_domain: str,
        headers: Sequence[bytes] = DEFAULT_SIGNED_HEADERS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Raises ValidationError("headers"/"our_domain") for a bad header list
        or domain, KeyMaterialError when our domain (or any domain with keys)
        lacks an RSA key or a key is filed under another domain."""
        self.our_domain = normalise_domain(our_domain, "our_domain")
        self._headers = _check_headers(headers)
        self._clock = clock
        self._keys: dict[str, tuple[SigningKey, ...]] = {}
        for domain, domain_keys in keys.items():
            if domain_keys:
                name = normalise_domain(domain)
                self._keys[name] = _choose(name, domain_keys)
        if self.our_domain not in self._keys:
            raise KeyMaterialError(f"no DKIM key for our domain {self.our_domain}")
        self._bound = {name: tuple(map(_bind, ks)) for name, ks in self._keys.items()}

    def keys_for(self, customer_domain: str | None = None) -> list[SigningKey]:
        """The keys :meth:`sign` uses, in the order its headers appear."""
        return [k for domain in self._domains(customer_domain) for k in self._keys[domain]]

    def sign(self, message: bytes, *, customer_domain: str | None = None) -> bytes:
        """``message`` (CRLF line ends) with DKIM-Signature header fields
        prepended: the customer domain's first when it has keys, then ours.

        Raises ValidationError("message") for a message without a From header
        field or one dkimpy cannot parse.
        """
        unsigned = self._unsigned(message, customer_domain)
        signatures = _private_key_operations(unsigned)
        return (
            b"".join(u.header(sig) for u, sig in zip(unsigned, signatures, strict=True)) + message
        )

    async def sign_beside(
        self, message: bytes, executor: Executor, *, customer_domain: str | None = None
    ) -> bytes:
        """:meth:`sign` with only the private-key operations run on
        ``executor``. They release the GIL (OpenSSL), so a thread runs them
        beside the event loop on another core; parsing and canonicalisation
        stay on the caller's thread, which keeps the executor thread from
        holding the GIL, and the loop waiting for it, for more than an
        instant."""
        unsigned = self._unsigned(message, customer_domain)
        loop = asyncio.get_running_loop()
        signatures = await loop.run_in_executor(executor, _private_key_operations, unsigned)
        return (
            b"".join(u.header(sig) for u, sig in zip(unsigned, signatures, strict=True)) + message
        )

    def _unsigned(self, message: bytes, customer_domain: str | None) -> list[_Unsigned]:
        prepared = _Prepared(message, self._headers)
        timestamp = int(self._clock())
        return [
            prepared.unsigned(key, timestamp)
            for domain in self._domains(customer_domain)
            for key in self._bound[domain]
        ]

    def _domains(self, customer_domain: str | None) -> list[str]:
        if customer_domain is not None:
            customer = customer_domain.strip().lower().rstrip(".")
            if customer != self.our_domain and customer in self._keys:
                return [customer, self.our_domain]
        return [self.our_domain]


def _check_headers(headers: Sequence[bytes]) -> frozenset[bytes]:
    names = frozenset(h.lower() for h in headers)
    if b"from" not in names:
        raise ValidationError("headers", "From must be signed (RFC 6376 §5.4)")
    forbidden = names & set(dkim.DKIM.SHOULD_NOT)
    if forbidden:
        listed = ", ".join(sorted(h.decode("ascii", "replace") for h in forbidden))
        raise ValidationError("headers", f"must not sign {listed}")
    return names


def _choose(domain: str, keys: Sequence[SigningKey]) -> tuple[SigningKey, ...]:
    for key in keys:
        if key.domain != domain:
            raise KeyMaterialError(f"key {key.selector} of {key.domain} listed under {domain}")
    rsa_key = next((k for k in keys if k.algorithm == "rsa"), None)
    ed_key = next((k for k in keys if k.algorithm == "ed25519"), None)
    if rsa_key is None:
        # RSA is what every verifier knows; Ed25519 alone would go unverified.
        raise KeyMaterialError(f"no RSA key for {domain}")
    return (rsa_key,) if ed_key is None else (rsa_key, ed_key)


def naive_sign(
    message: bytes, keys: Sequence[SigningKey], *, headers: Sequence[bytes] = DEFAULT_SIGNED_HEADERS
) -> bytes:
    """The benchmark's baseline: the same signatures as :meth:`Signer.sign`
    made by plain ``dkim.sign``, which parses the key and does the RSA
    arithmetic in Python on every call. Pass ``signer.keys_for(domain)``.

    Raises ValidationError("message") as :meth:`Signer.sign`.
    """
    include = signed_header_names(message, headers)
    signatures = []
    for key in keys:
        private = key.private_key
        if isinstance(private, ed25519.Ed25519PrivateKey):
            # dkimpy takes an Ed25519 key as the base64 of its 32-byte seed.
            raw = private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            privkey, algorithm = base64.b64encode(raw), b"ed25519-sha256"
        else:
            privkey, algorithm = key.private_pem, b"rsa-sha256"
        signatures.append(
            dkim.sign(
                message,
                key.selector.encode(),
                key.domain.encode(),
                privkey,
                canonicalize=CANONICALIZE,
                signature_algorithm=algorithm,
                include_headers=include,
            )
        )
    return b"".join(signatures) + message


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of one DKIM-Signature header field, top first."""

    domain: str
    selector: str
    algorithm: str
    ok: bool
    detail: str


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def verify(message: bytes, *, dnsfunc: DnsFunc) -> list[SignatureCheck]:
    """Verify every DKIM-Signature of ``message`` with dkimpy.

    ``dnsfunc(name: bytes, timeout=...)`` returns the TXT record at ``name``
    (or None); :func:`records_dnsfunc` makes one from a mapping. Raises
    ValidationError("message") for a message dkimpy cannot parse.
    """
    return _verify_parsed(_Parsed(message), dnsfunc)


class _Parsed:
    """A message dkimpy has parsed once, for every signature's check and
    the key lookups before them (a parse is a tenth of a verification)."""

    def __init__(self, message: bytes) -> None:
        """Raises ValidationError("message") when dkimpy cannot parse it."""
        # dkimpy reports key and DNS problems only to its logger: collect
        # them on a logger of our own (made directly, so not registered
        # globally).
        self.collect = _Collect()
        logger = logging.Logger("mailer.message.signing.verify", logging.WARNING)
        logger.addHandler(self.collect)
        try:
            self.checker = dkim.DKIM(message, logger=logger, minkey=1024)
        # IndexError: rfc822_parse on a message whose first line is a continuation.
        except (dkim.DKIMException, IndexError) as exc:
            raise ValidationError("message", f"not an RFC 5322 message: {exc}") from exc

    def signatures(self) -> list[bytes]:
        return [value for name, value in self.checker.headers if name.lower() == b"dkim-signature"]


def _parse_any(message: bytes) -> dkim.DKIM:
    """Raises ValidationError("message") when dkimpy cannot parse it."""
    try:
        return dkim.DKIM(message)
    # IndexError: rfc822_parse on a message whose first line is a continuation.
    except (dkim.DKIMException, IndexError) as exc:
        raise ValidationError("message", f"not an RFC 5322 message: {exc}") from exc


def _verify_parsed(parsed: _Parsed, dnsfunc: DnsFunc) -> list[SignatureCheck]:
    return [_verify_one(parsed, idx, dnsfunc) for idx in range(len(parsed.signatures()))]


def _verify_one(parsed: _Parsed, idx: int, dnsfunc: DnsFunc) -> SignatureCheck:
    checker, collect = parsed.checker, parsed.collect
    collect.messages.clear()
    checker.signature_fields = {}  # what an earlier signature left
    try:
        ok = bool(checker.verify(idx=idx, dnsfunc=dnsfunc))
        detail = "pass" if ok else (collect.messages[-1:] or ["signature does not match"])[0]
    # ValueError: pynacl's, for an Ed25519 b= that is not 64 bytes long.
    except (dkim.DKIMException, ValueError) as exc:
        ok, detail = False, str(exc)
    fields = checker.signature_fields or {}
    return SignatureCheck(
        domain=_text(fields.get(b"d")),
        selector=_text(fields.get(b"s")),
        algorithm=_text(fields.get(b"a")),
        ok=ok,
        detail=detail,
    )


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("ascii", "replace")


def records_dnsfunc(records: Mapping[str, str | DNSError | None]) -> DnsFunc:
    """A dkimpy ``dnsfunc`` answering from ``records`` (name → TXT text;
    a DNSTemporaryError there reads as a DNS timeout, anything else missing
    as no record). Names match case-insensitively, trailing dot optional."""
    table = {name.lower().rstrip("."): value for name, value in records.items()}

    def lookup(name: bytes | str, timeout: float = 5) -> str | None:
        key = (name.decode("ascii") if isinstance(name, bytes) else name).lower().rstrip(".")
        value = table.get(key)
        if isinstance(value, DNSTemporaryError):
            raise dkim.DnsTimeoutError(str(value))
        return value if isinstance(value, str) else None

    return lookup


async def verify_with_resolver(message: bytes, resolver: TxtResolver) -> list[SignatureCheck]:
    """:func:`verify`, with the key records fetched through ``resolver``
    first (dkimpy's lookups are synchronous).

    Raises ValidationError("message") as :func:`verify`.
    """
    parsed = _Parsed(message)
    records: dict[str, str | DNSError | None] = {}
    for value in parsed.signatures():
        try:
            tags = parse_tag_value(value)
            where = dns_name(tags[b"d"].decode("ascii"), tags[b"s"].decode("ascii"))
        except (InvalidTagValueList, KeyError, UnicodeDecodeError):
            continue  # verify() reports the malformed signature
        if where in records:
            continue
        try:
            answer = await resolver.txt(where)
        except DNSError as exc:
            records[where] = exc
            continue
        records[where] = None if answer.nxdomain or not answer.records else answer.records[0]
    return _verify_parsed(parsed, records_dnsfunc(records))
