"""The resolver seam: every DNS lookup of the service goes through here.

It wraps :mod:`dns.asyncresolver` (dnspython) and is the only module that
sees dnspython's exceptions; callers get :class:`Answer` values or
:class:`~mailer.errors.DNSTemporaryError` / :class:`~mailer.errors.DNSPermanentError`.

NXDOMAIN is an answer here, not an error (``nxdomain=True``), because SPF
counts void lookups and decides itself what a missing name means; routing
turns it into a permanent error.

With ``trust_ad`` the queries ask for the AD bit (RFC 6840 §5.7) and each
answer says whether the validating resolver set it (``secure``); DANE
(RFC 7672) believes DNS data only then. Without it no answer is secure.

Each :class:`Resolver` keeps its own cache of positive and negative answers
(TTL bounded to ``[min_ttl, max_ttl]``, LRU-bounded in size) and shares one
lookup between concurrent callers asking the same question. Errors are
never cached, so a healed nameserver is used at once.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
import dns.reversename
from cachetools import LRUCache
from dns.rdtypes.ANY.MX import MX as _MXRdata
from dns.rdtypes.ANY.PTR import PTR as _PTRRdata
from dns.rdtypes.ANY.TLSA import TLSA as _TLSARdata
from dns.rdtypes.ANY.TXT import TXT as _TXTRdata
from dns.rdtypes.IN.A import A as _ARdata
from dns.rdtypes.IN.AAAA import AAAA as _AAAARdata

from mailer.errors import ConfigError, DNSPermanentError, DNSTemporaryError, ValidationError
from mailer.hostport import parse_host_port

__all__ = ["MX", "TLSA", "Addresses", "Answer", "Resolver", "normalise_name", "parse_nameserver"]

T = TypeVar("T")

_Key = tuple[dns.name.Name, dns.rdatatype.RdataType]


@dataclass(frozen=True)
class MX:
    """One MX record; ``exchange`` is lower-case without the trailing dot,
    and ``""`` for the null MX ``.`` of RFC 7505."""

    preference: int
    exchange: str


@dataclass(frozen=True)
class TLSA:
    """One TLSA record (RFC 6698): certificate usage, selector, matching
    type and the association data, as published (nothing checked here)."""

    usage: int
    selector: int
    mtype: int
    data: bytes


@dataclass(frozen=True)
class Addresses:
    """A host's addresses (IPv4 first) and whether every answer they came
    from carried the AD bit of a trusted validating resolver."""

    addresses: tuple[str, ...]
    secure: bool


@dataclass(frozen=True)
class Answer(Generic[T]):
    """The records of one (name, type) question.

    Empty ``records`` with ``nxdomain=False`` is NODATA. ``ttl`` is the
    seconds this answer stays valid (the records' TTL, or the negative TTL
    from the SOA for empty answers), already bounded by the cache limits
    and counting down while it sits in the cache.
    """

    name: str
    rdtype: str
    records: tuple[T, ...]
    ttl: int
    nxdomain: bool
    # the AD bit, only ever True with ``trust_ad`` (the records or, when
    # empty, the denial of existence were validated by the resolver)
    secure: bool = False


@dataclass(frozen=True)
class _Entry:
    rdatas: tuple[dns.rdata.Rdata, ...]
    nxdomain: bool
    expires: float
    secure: bool = False


def parse_nameserver(text: str) -> tuple[str, int]:
    """``(ip, port)`` from ``"host:port"``, ``"host"``, ``"[v6]:port"`` or a
    bare IPv6 address (port 53 when none is given).

    Raises :class:`~mailer.errors.ConfigError` unless host is an IP address
    and port in 1..65535.
    """
    try:
        host, port = parse_host_port(text, "nameservers", default_port=53)
    except ValidationError as exc:
        raise ConfigError("nameservers", exc.reason) from exc
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError("nameservers", f"{text!r}: host must be an IP address") from exc
    return host, port


def _to_name(name: str) -> dns.name.Name:
    """Absolute, lower-case, IDNA-encoded name. Raises DNSPermanentError."""
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise DNSPermanentError(name, "empty domain name")
    labels: list[bytes] = []
    try:
        for label in text.split("."):
            if label.isascii():
                # Taken as is (no escape parsing): SPF macros may expand to
                # any octets, and DNS allows them.
                labels.append(label.lower().encode("ascii"))
            else:
                labels.append(dns.name.IDNA_2008_Practical.encode(label).lower())
        return dns.name.Name([*labels, b""])
    except dns.name.LabelTooLong as exc:
        raise DNSPermanentError(name, "label longer than 63 octets") from exc
    except dns.name.NameTooLong as exc:
        raise DNSPermanentError(name, "name longer than 255 octets") from exc
    except dns.name.EmptyLabel as exc:
        raise DNSPermanentError(name, "empty label") from exc
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DNSPermanentError(name, f"not a valid domain name: {exc}") from exc


def _to_text(name: dns.name.Name) -> str:
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


# Asked once or more per message (the sender's domain) for a few thousand
# distinct names at most; the dnspython round trip is the costly part.
@functools.lru_cache(maxsize=4096)
def normalise_name(name: str) -> str:
    """The ASCII (A-label), lower-case form of ``name`` without trailing dot,
    as it is looked up. Raises DNSPermanentError for an invalid name."""
    return _to_text(_to_name(name))


class Resolver:
    """Asynchronous stub resolver with its own TTL-bounded cache.

    ``nameservers`` are ``"host:port"`` strings (IP addresses); empty means
    those of ``/etc/resolv.conf``. ``timeout`` bounds a whole lookup.
    ``negative_ttl`` caps how long NXDOMAIN/NODATA are cached (a missing
    SOA counts as dnspython's short default). ``clock`` is injectable so
    tests can move time.

    ``trust_ad`` asks for and believes the AD bit: only for validating
    resolvers named in ``nameservers`` and reached over a trusted path
    (loopback or the host's own network).

    Raises :class:`~mailer.errors.ConfigError` for a bad nameserver or
    bound, when there are none and the system has no resolver config, or
    ``trust_ad`` without ``nameservers``.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 5.0,
        max_ttl: int = 3600,
        min_ttl: int = 0,
        negative_ttl: int = 60,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        trust_ad: bool = False,
    ) -> None:
        if trust_ad and not nameservers:
            raise ConfigError("dnssec", "trust-ad needs the validating resolvers in nameservers")
        if not 0 <= min_ttl <= max_ttl:
            raise ConfigError("dns.ttl", f"need 0 <= min_ttl ({min_ttl}) <= max_ttl ({max_ttl})")
        if timeout <= 0 or cache_size < 0 or negative_ttl < 0:
            raise ConfigError("dns", "timeout must be > 0, cache_size and negative_ttl >= 0")
        servers = [dns.nameserver.Do53Nameserver(*parse_nameserver(ns)) for ns in nameservers]
        try:
            self._resolver = dns.asyncresolver.Resolver(configure=not servers)
        except dns.exception.DNSException as exc:
            raise ConfigError("nameservers", f"none given and none in the system: {exc}") from exc
        if servers:
            self._resolver.nameservers = servers
        self._resolver.cache = None  # ours below, bounded by our TTL limits
        if trust_ad:
            # AD in the query asks a validating resolver to say whether it
            # validated the answer, without the RRSIGs that DO would bring
            self._resolver.flags = dns.flags.RD | dns.flags.AD
        self.trust_ad = trust_ad
        # Several tries within the lifetime when it allows (dnspython's 2 s
        # per try), so one lost UDP datagram does not fail the lookup.
        self._resolver.timeout = min(timeout, 2.0)
        self._resolver.lifetime = timeout
        self._timeout = timeout
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._cache_size = cache_size
        self._clock = clock
        self._cache: LRUCache[_Key, _Entry] = LRUCache(max(cache_size, 1))
        self._inflight: dict[_Key, asyncio.Task[_Entry]] = {}

    def clear_cache(self) -> None:
        """Forget every cached answer (tests that change a zone mid-run)."""
        self._cache.clear()

    async def a(self, name: str) -> Answer[str]:
        """IPv4 addresses of ``name``. Raises DNSTemporaryError, DNSPermanentError."""
        answer, rdatas = await self._ask(name, dns.rdatatype.A)
        return _with(answer, tuple(cast(_ARdata, r).address for r in rdatas))

    async def aaaa(self, name: str) -> Answer[str]:
        """IPv6 addresses of ``name``. Raises DNSTemporaryError, DNSPermanentError."""
        answer, rdatas = await self._ask(name, dns.rdatatype.AAAA)
        return _with(answer, tuple(cast(_AAAARdata, r).address for r in rdatas))

    async def mx(self, name: str) -> Answer[MX]:
        """MX records of ``name`` in the order received (see
        :func:`mailer.delivery.routing.order_mx`). Raises DNSTemporaryError, DNSPermanentError."""
        answer, rdatas = await self._ask(name, dns.rdatatype.MX)
        records = tuple(
            MX(cast(_MXRdata, r).preference, _to_text(cast(_MXRdata, r).exchange)) for r in rdatas
        )
        return _with(answer, records)

    async def txt(self, name: str) -> Answer[str]:
        """TXT records of ``name``, each record's character-strings joined
        without separator (RFC 7208 §3.3).

        Bytes are decoded as latin-1: lossless (``.encode("latin-1")`` gives
        the octets back), ASCII records come out unchanged, and any non-ASCII
        octet stays non-ASCII so the SPF/DKIM grammars reject it — while the
        text never holds lone surrogates that would make a later strict UTF-8
        encode (database, log, JSON) fail, as surrogateescape would.

        Raises DNSTemporaryError, DNSPermanentError.
        """
        answer, rdatas = await self._ask(name, dns.rdatatype.TXT)
        records = tuple(b"".join(cast(_TXTRdata, r).strings).decode("latin-1") for r in rdatas)
        return _with(answer, records)

    async def tlsa(self, name: str) -> Answer[TLSA]:
        """TLSA records of ``name`` (``_25._tcp.<mx host>``). Raises
        DNSTemporaryError (SERVFAIL: with a validating resolver, also a
        bogus answer), DNSPermanentError."""
        answer, rdatas = await self._ask(name, dns.rdatatype.TLSA)
        records = tuple(
            TLSA(
                cast(_TLSARdata, r).usage,
                cast(_TLSARdata, r).selector,
                cast(_TLSARdata, r).mtype,
                bytes(cast(_TLSARdata, r).cert),
            )
            for r in rdatas
        )
        return _with(answer, records)

    async def ptr(self, ip: str) -> Answer[str]:
        """Names of the reverse entry of an IPv4/IPv6 address. Raises
        DNSPermanentError for a malformed address, DNSTemporaryError."""
        try:
            reverse = dns.reversename.from_address(str(ipaddress.ip_address(ip)))
        except ValueError as exc:
            raise DNSPermanentError(ip, "not an IP address") from exc
        answer, rdatas = await self._ask(_to_text(reverse), dns.rdatatype.PTR)
        return _with(answer, tuple(_to_text(cast(_PTRRdata, r).target) for r in rdatas))

    async def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``.

        Raises DNSPermanentError when the name does not exist or has no
        address, DNSTemporaryError when the lookup failed (an AAAA failure
        is ignored when there are IPv4 addresses to use).
        """
        return list((await self.host_addresses(name)).addresses)

    async def host_addresses(self, name: str) -> Addresses:
        """Like :meth:`addresses`, saying whether the answers used were
        all DNSSEC-secure. Raises DNSPermanentError, DNSTemporaryError."""
        v4 = await self.a(name)
        if v4.nxdomain:
            raise DNSPermanentError(v4.name, "domain does not exist")
        try:
            v6 = await self.aaaa(name)
        except DNSTemporaryError:
            if v4.records:
                return Addresses(v4.records, v4.secure)
            raise
        found = (*v4.records, *v6.records)
        if not found:
            raise DNSPermanentError(v4.name, "no A or AAAA records")
        return Addresses(found, v4.secure and v6.secure)

    # -- cache and lookup -------------------------------------------------

    async def _ask(
        self, name: str, rdtype: dns.rdatatype.RdataType
    ) -> tuple[Answer[None], tuple[dns.rdata.Rdata, ...]]:
        qname = _to_name(name)
        key = (qname, rdtype)
        entry = self._cached(key)
        if entry is None:
            task = self._inflight.get(key)
            loop = asyncio.get_running_loop()
            if task is None or task.get_loop() is not loop:
                task = loop.create_task(self._lookup(qname, rdtype))
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._landed, key))
            # shield: one caller giving up must not cancel the others' lookup
            entry = await asyncio.shield(task)
        ttl = max(0, math.ceil(entry.expires - self._clock()))
        answer: Answer[None] = Answer(
            _to_text(qname), dns.rdatatype.to_text(rdtype), (), ttl, entry.nxdomain, entry.secure
        )
        return answer, entry.rdatas

    def _cached(self, key: _Key) -> _Entry | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._cache[key]
            return None
        return entry

    def _landed(self, key: _Key, task: asyncio.Task[_Entry]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if task.cancelled() or task.exception() is not None:
            return  # errors are not cached; exception() marks it retrieved
        if self._cache_size == 0:
            return
        self._cache[key] = task.result()

    async def _lookup(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> _Entry:
        name = _to_text(qname)
        try:
            result = await self._resolver.resolve(
                qname, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = cast(dict[dns.name.Name, dns.message.Message], exc.kwargs["responses"])
            response = responses.get(qname) or next(iter(responses.values()), None)
            ttl = self._negative_ttl if response is None else _negative_ttl(response)
            secure = response is not None and self._validated(response)
            return self._entry((), True, min(ttl, self._negative_ttl), secure)
        except dns.resolver.NoNameservers as exc:
            raise DNSTemporaryError(name, _describe_failures(exc)) from exc
        except dns.exception.Timeout as exc:
            raise DNSTemporaryError(name, f"no answer within {self._timeout:g}s") from exc
        except dns.resolver.YXDOMAIN as exc:
            raise DNSPermanentError(name, "name too long after DNAME substitution") from exc
        except dns.exception.DNSException as exc:
            raise DNSTemporaryError(name, f"lookup failed: {exc}") from exc
        rdatas = tuple(result.rrset) if result.rrset is not None else ()
        ttl = result.chaining_result.minimum_ttl
        if not rdatas:
            ttl = min(ttl, self._negative_ttl)
        return self._entry(rdatas, False, ttl, self._validated(result.response))

    def _validated(self, response: dns.message.Message) -> bool:
        return self.trust_ad and bool(response.flags & dns.flags.AD)

    def _entry(
        self, rdatas: tuple[dns.rdata.Rdata, ...], nxdomain: bool, ttl: int, secure: bool
    ) -> _Entry:
        bounded = min(max(ttl, self._min_ttl), self._max_ttl)
        return _Entry(rdatas, nxdomain, self._clock() + bounded, secure)


def _with(answer: Answer[None], records: tuple[T, ...]) -> Answer[T]:
    return Answer(answer.name, answer.rdtype, records, answer.ttl, answer.nxdomain, answer.secure)


def _negative_ttl(response: dns.message.Message) -> int:
    """The negative TTL of an NXDOMAIN response (RFC 2308: the SOA's
    minimum, capped by its TTL)."""
    if not isinstance(response, dns.message.QueryMessage):
        return 0
    try:
        return int(response.resolve_chaining().minimum_ttl)
    except dns.exception.DNSException:
        return 0


def _describe_failures(exc: dns.resolver.NoNameservers) -> str:
    """``"SERVFAIL from 127.0.0.1:5353"`` and the like, one per server."""
    parts: list[str] = []
    for server, _tcp, port, error, _response in exc.kwargs.get("errors", []):
        part = f"{error} from {server}:{port}"
        if part not in parts:
            parts.append(part)
    return "; ".join(parts) or "no nameserver answered"
