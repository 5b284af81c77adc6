"""DKIM verification as a receiver would do it, with one developer comfort:
a selector that DNS does not publish is looked up among the public keys of
the local key store, so a message signed with a freshly generated key
verifies before anyone has published it.

Every signature is reported with its d=/s=, a result in RFC 8601 words
(pass, fail, temperror, permerror) and where its key came from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from mailer.dns import Answer, Resolver
from mailer.errors import DNSError, KeyMaterialError, ValidationError
from mailer.message.keys import (
    KeyStore,
    SigningKey,
    TxtAnswer,
    TxtResolver,
    dns_name,
    dns_record_value,
)
from mailer.message.signing import SignatureCheck, verify_with_resolver

__all__ = ["DkimResult", "KeySource", "LocalKeys", "TxtRecords", "Verifier", "dkim_result"]

_DOMAINKEY = "._domainkey."


class KeySource(StrEnum):
    DNS = "dns"
    KEYS_DIR = "keys_dir"
    MISSING = "missing"
    DNS_ERROR = "dns-error"


@dataclass(frozen=True)
class DkimResult:
    domain: str
    selector: str
    algorithm: str
    result: str  # pass | fail | temperror | permerror
    detail: str
    key_source: KeySource | None

    @property
    def ok(self) -> bool:
        return self.result == "pass"


def dkim_result(check: SignatureCheck, source: KeySource | None) -> DkimResult:
    """One signature's outcome in RFC 8601 words (pure): a signature whose
    key is nowhere is a permerror, one whose key lookup failed a temperror."""
    if check.ok:
        result = "pass"
    elif source is KeySource.MISSING:
        result = "permerror"
    elif source is KeySource.DNS_ERROR:
        result = "temperror"
    else:
        result = "fail"
    return DkimResult(check.domain, check.selector, check.algorithm, result, check.detail, source)


@dataclass(frozen=True)
class _Answer:
    records: tuple[str, ...]
    nxdomain: bool


class LocalKeys:
    """The DKIM TXT record each key of a key store would publish.

    Records are remembered per key file and re-read when the file changes,
    so keys generated while the sink runs are found.
    """

    def __init__(self, root: Path) -> None:
        self._store = KeyStore(root)
        self._records: dict[Path, tuple[tuple[int, int], str]] = {}

    def record(self, name: str) -> str | None:
        """The record for ``<selector>._domainkey.<domain>``, or None when
        the store has no such key or cannot read it."""
        selector, sep, domain = name.lower().rstrip(".").partition(_DOMAINKEY)
        if not sep:
            return None
        try:
            path = self._store.path(domain, selector)
            stat = path.stat()
        except (ValidationError, OSError):
            return None
        version = (stat.st_mtime_ns, stat.st_size)
        cached = self._records.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            key = SigningKey.from_pem(domain, selector, path.read_bytes(), source=str(path))
        except (KeyMaterialError, OSError):
            return None
        value = dns_record_value(key)
        self._records[path] = (version, value)
        return value


class TxtRecords:
    """The TXT answers the sink asks for message after message (each
    signature's key record, each From domain's DMARC policy), kept for the
    sink's run within their TTL. The resolver keeps them too, but each of
    its hits parses the name with dnspython again, a share of every
    message's checks worth saving. Errors are not kept. At most ``size``
    names are (all are dropped when it is full)."""

    def __init__(
        self, resolver: Resolver, *, size: int = 4096, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._resolver = resolver
        self._size = size
        self._clock = clock
        self._answers: dict[str, tuple[float, Answer[str]]] = {}

    async def txt(self, name: str) -> Answer[str]:
        """Raises DNSError as :meth:`mailer.dns.Resolver.txt`."""
        key = name.lower().rstrip(".")
        kept = self._answers.get(key)
        now = self._clock()
        if kept is not None and kept[0] > now:
            return kept[1]
        answer = await self._resolver.txt(name)
        if len(self._answers) >= self._size:
            self._answers.clear()
        self._answers[key] = (now + answer.ttl, answer)
        return answer


class _DnsFailures:
    """Names whose lookup failed lately: asked again only after ``hold``
    seconds, so an unreachable nameserver costs one timeout per selector,
    not one per message (the sink checks messages one after another)."""

    def __init__(self, hold: float, clock: Callable[[], float]) -> None:
        self._hold = hold
        self._clock = clock
        self._until: dict[str, tuple[float, DNSError]] = {}

    def recent(self, name: str) -> DNSError | None:
        entry = self._until.get(name)
        if entry is None or entry[0] <= self._clock():
            self._until.pop(name, None)
            return None
        return entry[1]

    def add(self, name: str, error: DNSError) -> None:
        self._until[name] = (self._clock() + self._hold, error)


class _Lookup:
    """A TXT resolver for one message: DNS first, the local keys when DNS
    has no record (or no answer); remembers where each key came from."""

    def __init__(
        self, dns: TxtResolver | None, local: LocalKeys | None, failures: _DnsFailures
    ) -> None:
        self._dns = dns
        self._local = local
        self._failures = failures
        self.sources: dict[str, KeySource] = {}

    async def txt(self, name: str) -> TxtAnswer:
        key = name.lower().rstrip(".")
        error: DNSError | None = None
        if self._dns is not None:
            error = self._failures.recent(key)
            if error is None:
                try:
                    answer = await self._dns.txt(name)
                except DNSError as exc:
                    error = exc
                    self._failures.add(key, exc)
                else:
                    if answer.records and not answer.nxdomain:
                        self.sources[key] = KeySource.DNS
                        return answer
        local = self._local.record(name) if self._local is not None else None
        if local is not None:
            self.sources[key] = KeySource.KEYS_DIR
            return _Answer((local,), False)
        if error is not None:
            self.sources[key] = KeySource.DNS_ERROR
            raise error
        self.sources[key] = KeySource.MISSING
        return _Answer((), True)


class Verifier:
    """Verifies every DKIM signature of a message against ``dns`` (a
    :class:`mailer.dns.Resolver`, or None for none) and, failing that, the
    keys under ``keys_dir``. A name whose DNS lookup failed is not asked
    again for ``retry_failed`` seconds."""

    def __init__(
        self,
        dns: TxtResolver | None,
        keys_dir: Path | None,
        *,
        retry_failed: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dns = dns
        self._local = LocalKeys(keys_dir) if keys_dir is not None else None
        self._failures = _DnsFailures(retry_failed, clock)

    async def verify(self, data: bytes) -> list[DkimResult]:
        """One result per DKIM-Signature, top first; empty when unsigned.

        Raises ValidationError("message") for bytes dkimpy cannot parse as
        a message.
        """
        lookup = _Lookup(self._dns, self._local, self._failures)
        checks = await verify_with_resolver(data, lookup)
        results = []
        for check in checks:
            where = (
                dns_name(check.domain, check.selector).lower()
                if check.domain and check.selector
                else ""
            )
            results.append(dkim_result(check, lookup.sources.get(where)))
        return results
