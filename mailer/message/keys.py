"""The DKIM key store and the DNS side of a key.

Layout under the store's root (default ``keys/``)::

    keys/<domain>/<selector>.key     PEM private key, mode 0600
    keys/<domain>/                   directory, mode 0700

A key is parsed once, when it is loaded; a :class:`SigningKey` carries the
parsed ``cryptography`` key object so that signing never reads or parses PEM
again. ``cryptography`` errors are translated into :class:`KeyMaterialError`
here, naming the file.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailer.errors import KeyMaterialError, ValidationError, shown

Algorithm = Literal["rsa", "ed25519"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

KEY_SUFFIX = ".key"
RSA_SIZES = (2048, 3072, 4096)
# RFC 8301 §3.2: verifiers must accept 1024-bit keys; signers should use 2048.
MIN_RSA_BITS = 1024
# Bytes per DNS TXT character-string (RFC 1035 §3.3).
TXT_STRING_MAX = 255

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_SELECTOR_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_TAG_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_FWS = " \t\r\n"
# a tag value holds VALCHAR (%x21-3A / %x3C-7E) and folding white space
_BAD_VALUE_CHAR = re.compile(r"[^!-:<-~ \t\r\n]")


def normalise_domain(value: str, field: str = "domain") -> str:
    """Lower-case ``value``, drop one trailing dot, and check it is an ASCII
    host name of at least two labels.

    Raises ValidationError(field) if it is not.
    """
    domain = value.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain.isascii():
        raise ValidationError(field, f"{shown(value)} is not ASCII; use the A-label (xn--) form")
    if len(domain) > 253 or not _DOMAIN_RE.fullmatch(domain):
        raise ValidationError(field, f"{shown(value)} is not a domain name")
    return domain


def check_selector(value: str) -> str:
    """Return the lower-cased selector.

    Raises ValidationError("selector") unless it is dot-separated LDH labels.
    """
    selector = value.strip().lower()
    if not selector.isascii() or len(selector) > 63 or not _SELECTOR_RE.fullmatch(selector):
        raise ValidationError("selector", f"{value!r} is not a DKIM selector (letters, digits, -)")
    return selector


@dataclass(frozen=True)
class KeyInfo:
    domain: str
    selector: str
    algorithm: Algorithm
    bits: int | None
    path: Path


@dataclass(frozen=True)
class SigningKey:
    """A private key ready to sign: ``private_key`` is parsed once, here."""

    domain: str
    selector: str
    algorithm: Algorithm
    private_pem: bytes = field(repr=False)
    private_key: PrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_pem(cls, domain: str, selector: str, pem: bytes, *, source: str) -> SigningKey:
        """Parse ``pem`` (PKCS#8 or PKCS#1, unencrypted).

        Raises KeyMaterialError naming ``source`` when it is not a usable RSA
        or Ed25519 private key.
        """
        key = _parse_private_key(pem, source)
        return cls(domain, selector, _algorithm_of(key), pem, key)

    @property
    def bits(self) -> int | None:
        return (
            self.private_key.key_size if isinstance(self.private_key, rsa.RSAPrivateKey) else None
        )

    def public_key_b64(self) -> str:
        """The ``p=`` value: base64 of the DER SubjectPublicKeyInfo for RSA
        (RFC 6376 §3.6.1), of the raw 32-byte public key for Ed25519
        (RFC 8463 §4.2)."""
        return base64.b64encode(_public_bytes(self.private_key)).decode("ascii")


def _parse_private_key(pem: bytes, source: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError as exc:
        raise KeyMaterialError(f"{source}: encrypted keys are not supported") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyMaterialError(f"{source}: not a PEM private key ({exc})") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(f"{source}: RSA key of {key.key_size} bits is too short")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise KeyMaterialError(f"{source}: {type(key).__name__} is neither RSA nor Ed25519")


def _algorithm_of(key: PrivateKey) -> Algorithm:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"


def _public_bytes(key: PrivateKey) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class KeyStore:
    """DKIM private keys in ``root/<domain>/<selector>.key``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, domain: str, selector: str) -> Path:
        """Raises ValidationError("domain"/"selector") on bad syntax."""
        return self.root / normalise_domain(domain) / f"{check_selector(selector)}{KEY_SUFFIX}"

    # Named like the CLI verb (`mailer keys list`); hence builtins.list below.
    def list(self, domain: str | None = None) -> builtins.list[KeyInfo]:
        """Every key in the store (or of one domain), sorted by domain and
        selector.

        Raises KeyMaterialError naming the file of any key that cannot be read,
        ValidationError("domain") for a malformed ``domain``.
        """
        return [
            KeyInfo(k.domain, k.selector, k.algorithm, k.bits, path)
            for path, k in self._walk(domain)
        ]

    def load(self, domain: str) -> builtins.list[SigningKey]:
        """All keys of ``domain`` (empty when it has none), sorted by selector.

        Raises KeyMaterialError naming the file of any key that cannot be read,
        ValidationError("domain") for a malformed ``domain``.
        """
        return [k for _, k in self._walk(domain)]

    def load_all(self) -> dict[str, builtins.list[SigningKey]]:
        """Every key, by domain. Raises KeyMaterialError as :meth:`load`."""
        keys: dict[str, builtins.list[SigningKey]] = {}
        for _, k in self._walk(None):
            keys.setdefault(k.domain, []).append(k)
        return keys

    def load_usable(
        self, needed: str | None = None
    ) -> tuple[dict[str, builtins.list[SigningKey]], builtins.list[KeyMaterialError]]:
        """Every key that can be read, by domain, and the problems of those
        that cannot: a bad file stops only its own domain's signing (every
        key of that domain is left out, so that no half of a rotation signs
        alone). Raises KeyMaterialError for a bad key of ``needed`` (our own
        signing domain, without which nothing may be signed)."""
        keys: dict[str, builtins.list[SigningKey]] = {}
        problems: builtins.list[KeyMaterialError] = []
        bad: set[str] = set()
        if not self.root.is_dir():
            return keys, problems
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and _visible(p)):
            try:
                name = normalise_domain(directory.name)
            except ValidationError:
                problems.append(KeyMaterialError(f"{directory}: not named after a domain"))
                continue
            for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
                if not _visible(path):
                    continue
                try:
                    keys.setdefault(name, []).append(_load_file(path, name))
                except KeyMaterialError as exc:
                    if name == needed:
                        raise
                    problems.append(exc)
                    bad.add(name)
        for name in bad:
            keys.pop(name, None)
        return keys, problems

    def generate(
        self,
        domain: str,
        selector: str = "mailer",
        *,
        algorithm: str = "rsa",
        bits: int = 2048,
    ) -> KeyInfo:
        """Create a new key file; never overwrites one.

        Raises ValidationError naming "domain", "selector", "algorithm" or
        "bits" for bad input, ValidationError("selector") when that key
        already exists, KeyMaterialError when the file cannot be written.
        """
        path = self.path(domain, selector)
        if algorithm not in get_args(Algorithm):
            raise ValidationError("algorithm", f"{algorithm!r} is not one of rsa, ed25519")
        key: PrivateKey
        if algorithm == "rsa":
            if bits not in RSA_SIZES:
                raise ValidationError("bits", f"{bits} is not one of {RSA_SIZES}")
            key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_new_file(path, pem)
        return KeyInfo(
            path.parent.name,
            path.name[: -len(KEY_SUFFIX)],
            _algorithm_of(key),
            key.key_size if isinstance(key, rsa.RSAPrivateKey) else None,
            path,
        )

    def _walk(self, domain: str | None) -> builtins.list[tuple[Path, SigningKey]]:
        if domain is not None:
            dirs = [self.root / normalise_domain(domain)]
        elif self.root.is_dir():
            dirs = sorted(p for p in self.root.iterdir() if p.is_dir() and _visible(p))
        else:
            dirs = []
        found = []
        for directory in dirs:
            if not directory.is_dir():
                continue
            try:
                name = normalise_domain(directory.name)
            except ValidationError as exc:
                raise KeyMaterialError(f"{directory}: not named after a domain") from exc
            for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
                if _visible(path):
                    found.append((path, _load_file(path, name)))
        return found


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _load_file(path: Path, domain: str) -> SigningKey:
    try:
        selector = check_selector(path.name[: -len(KEY_SUFFIX)])
    except ValidationError as exc:
        raise KeyMaterialError(f"{path}: file name is not <selector>{KEY_SUFFIX}") from exc
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise KeyMaterialError(f"{path}: not a regular file")
        # Like ssh: a key others can read is a key that may have leaked.
        if mode & 0o077:
            raise KeyMaterialError(
                f"{path}: mode {stat.S_IMODE(mode):04o} lets others read it; chmod 600"
            )
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyMaterialError(f"{path}: {exc.strerror or exc}") from exc
    return SigningKey.from_pem(domain, selector, pem, source=str(path))


def _write_new_file(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for existing dirs.
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ValidationError("selector", f"a key already exists at {path}") from exc
    except OSError as exc:
        raise KeyMaterialError(f"{path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise KeyMaterialError(f"{path}: {exc.strerror or exc}") from exc


def _key_of(key: SigningKey | KeyInfo) -> SigningKey:
    if isinstance(key, SigningKey):
        return key
    return _load_file(key.path, key.domain)


def dns_name(domain: str, selector: str) -> str:
    """``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.2.1)."""
    return f"{selector}._domainkey.{domain}"


def dns_record_value(key: SigningKey | KeyInfo) -> str:
    """The TXT record to publish for ``key``: ``v=DKIM1; k=rsa; p=...``.

    Raises KeyMaterialError when a KeyInfo's file cannot be read.
    """
    signing = _key_of(key)
    return f"v=DKIM1; k={signing.algorithm}; p={signing.public_key_b64()}"


def dns_record_strings(value: str) -> list[str]:
    """Split ``value`` into TXT character-strings of at most 255 bytes.

    Raises ValidationError("value") for non-ASCII text, which DKIM records
    never contain.
    """
    if not value.isascii():
        raise ValidationError("value", "a DKIM record is ASCII")
    if not value:
        return [""]
    return [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]


def format_txt_record(domain: str, selector: str, value: str) -> str:
    """A zone-file line: ``sel._domainkey.domain. IN TXT ( "..." "..." )``.

    Raises ValidationError as :func:`dns_record_strings`.
    """
    quoted = " ".join(
        '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in dns_record_strings(value)
    )
    return f"{dns_name(domain, selector)}. IN TXT ( {quoted} )"


def parse_dkim_record(text: str) -> dict[str, str]:
    """Parse an RFC 6376 §3.2 tag=value list (a key record's TXT text).

    Tag names are case-sensitive; values keep inner whitespace, lose the
    folding whitespace around them. Raises ValidationError("record") for an
    empty list, an empty element (``;;``), a bad tag name or value character, or a
    duplicate tag.
    """
    specs = text.split(";")
    if specs and not specs[-1].strip(_FWS):
        specs.pop()  # a trailing ";" is allowed
    if not specs:
        raise ValidationError("record", "empty tag list")
    tags: dict[str, str] = {}
    for spec in specs:
        name, eq, value = spec.partition("=")
        name = name.strip(_FWS)
        value = value.strip(_FWS)
        if not eq:
            what = repr(name) if name else "an empty element"
            raise ValidationError("record", f"{what} is not tag=value")
        if not _TAG_NAME_RE.fullmatch(name):
            raise ValidationError("record", f"bad tag name {name!r}")
        bad = _BAD_VALUE_CHAR.search(value)
        if bad:
            raise ValidationError("record", f"tag {name}: bad character {bad.group()!r}")
        if name in tags:
            raise ValidationError("record", f"tag {name} appears twice")
        tags[name] = value
    return tags


class TxtAnswer(Protocol):
    @property
    def records(self) -> tuple[str, ...]: ...

    @property
    def nxdomain(self) -> bool: ...


class TxtResolver(Protocol):
    async def txt(self, name: str) -> TxtAnswer: ...


Problem = Literal[
    "missing",
    "multiple-records",
    "bad-syntax",
    "revoked",
    "wrong-algorithm",
    "wrong-service",
    "different-key",
]


@dataclass(frozen=True)
class KeyCheck:
    ok: bool
    problem: Problem | None
    detail: str
    published: str | None


async def check_published(resolver: TxtResolver, key: SigningKey | KeyInfo) -> KeyCheck:
    """Compare what DNS publishes at ``<selector>._domainkey.<domain>`` with
    ``key``.

    Raises DNSTemporaryError (from the resolver) when DNS gave no answer,
    KeyMaterialError when a KeyInfo's file cannot be read.
    """
    key = _key_of(key)
    name = dns_name(key.domain, key.selector)
    answer = await resolver.txt(name)
    if answer.nxdomain or not answer.records:
        return KeyCheck(False, "missing", f"no TXT record at {name}", None)
    if len(answer.records) > 1:
        return KeyCheck(
            False,
            "multiple-records",
            f"{len(answer.records)} TXT records at {name}; publish one",
            "\n".join(answer.records),
        )
    return compare_record(key, answer.records[0])


def compare_record(key: SigningKey, published: str) -> KeyCheck:
    """Judge one published TXT record against ``key`` (pure)."""

    def bad(problem: Problem, detail: str) -> KeyCheck:
        return KeyCheck(False, problem, detail, published)

    try:
        tags = parse_dkim_record(published)
    except ValidationError as exc:
        return bad("bad-syntax", exc.reason)
    if "v" in tags and (next(iter(tags)) != "v" or tags["v"] != "DKIM1"):
        return bad("bad-syntax", "v= must come first and be DKIM1")
    if "p" not in tags:
        return bad("bad-syntax", "no p= tag")
    p = "".join(tags["p"].split())
    if not p:
        return bad("revoked", "p= is empty: the key is revoked")
    k = tags.get("k", "rsa")
    if k != key.algorithm:
        return bad("wrong-algorithm", f"k={k} but the key is {key.algorithm}")
    if "h" in tags and "sha256" not in _colon_list(tags["h"]):
        return bad("wrong-algorithm", f"h={tags['h']} does not allow sha256")
    services = _colon_list(tags.get("s", "*"))
    if "*" not in services and "email" not in services:
        return bad("wrong-service", f"s={tags['s']} excludes email")
    try:
        raw = base64.b64decode(p, validate=True)
    except binascii.Error:
        return bad("bad-syntax", "p= is not base64")
    same = _same_public_key(key.private_key, raw)
    if same is None:
        return bad("bad-syntax", f"p= is not a {key.algorithm} public key")
    if not same:
        return bad("different-key", "the published key is not this key")
    testing = " (t=y: testing mode)" if "y" in _colon_list(tags.get("t", "")) else ""
    return KeyCheck(True, None, f"published record matches{testing}", published)


def _colon_list(value: str) -> list[str]:
    return [item.strip(_FWS) for item in value.split(":")]


def _same_public_key(key: PrivateKey, raw: bytes) -> bool | None:
    """None when ``raw`` does not parse as a public key of ``key``'s kind."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None if len(raw) != 32 else raw == _public_bytes(key)
    try:
        # Reads SubjectPublicKeyInfo and the bare PKCS#1 RSAPublicKey some
        # records carry (verifiers accept both).
        published = serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm):
        return None
    if not isinstance(published, rsa.RSAPublicKey):
        return None
    return published.public_numbers() == key.public_key().public_numbers()
