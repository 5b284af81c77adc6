"""The resolver seam against the loopback DNS server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from mailer.dev.dnsserver import DNSServer
from mailer.dns import MX, Answer, Resolver, normalise_name, parse_nameserver
from mailer.errors import ConfigError, DNSPermanentError, DNSTemporaryError

ZONE = {
    "example.test": {
        "A": ["127.0.0.10", "127.0.0.11"],
        "AAAA": ["::1"],
        "MX": [(10, "MX1.Example.Test."), (20, "mx2.example.test")],
        "TXT": ["v=spf1 -all"],
        "ttl": 100,
    },
    "v4only.test": {"A": ["127.0.0.12"]},
    "v6only.test": {"AAAA": ["::1"]},
    "alias.test": {"CNAME": ["example.test"], "ttl": 30},
    "null.test": {"MX": [(0, ".")]},
    "empty.test": {"TXT": ["no addresses here"]},
    "10.0.0.127.in-addr.arpa": {"PTR": ["Mail.Example.Test."]},
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa": {
        "PTR": ["v6.example.test"]
    },
    "xn--bcher-kva.test": {"A": ["127.0.0.13"]},
}


class Clock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer(ZONE, negative_ttl=40) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(server: DNSServer, clock: Clock) -> Resolver:
    return Resolver([server.address], timeout=2.0, clock=clock)


def count(server: DNSServer, name: str, rdtype: str) -> int:
    return server.queries.count((name, rdtype))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- answers ------------------------------------------------------------------


async def test_a_and_aaaa_answers(resolver: Resolver) -> None:
    a = await resolver.a("example.test")
    assert sorted(a.records) == ["127.0.0.10", "127.0.0.11"]
    assert a == Answer("example.test", "A", a.records, 100, False)
    assert (await resolver.aaaa("example.test")).records == ("::1",)


async def test_mx_exchanges_are_lower_case_without_trailing_dot(resolver: Resolver) -> None:
    answer = await resolver.mx("example.test")
    assert sorted(answer.records, key=lambda mx: mx.preference) == [
        MX(10, "mx1.example.test"),
        MX(20, "mx2.example.test"),
    ]


async def test_null_mx_exchange_is_empty(resolver: Resolver) -> None:
    assert (await resolver.mx("null.test")).records == (MX(0, ""),)


async def test_ptr_of_ipv4_and_ipv6(resolver: Resolver) -> None:
    v4 = await resolver.ptr("127.0.0.10")
    assert v4.name == "10.0.0.127.in-addr.arpa"
    assert v4.records == ("mail.example.test",)
    assert (await resolver.ptr("::1")).records == ("v6.example.test",)


async def test_ptr_of_a_malformed_address_is_permanent(resolver: Resolver) -> None:
    with pytest.raises(DNSPermanentError, match="not an IP address"):
        await resolver.ptr("127.0.0.300")


async def test_cname_is_followed_and_ttl_is_the_chain_minimum(resolver: Resolver) -> None:
    answer = await resolver.a("alias.test")
    assert sorted(answer.records) == ["127.0.0.10", "127.0.0.11"]
    assert answer.ttl == 30


async def test_txt_strings_of_one_record_are_concatenated(
    server: DNSServer, resolver: Resolver
) -> None:
    long = "v=spf1 " + " ".join(f"ip4:127.0.{i}.0/24" for i in range(30)) + " -all"
    assert len(long) > 255
    server.set("long.test", "TXT", [long, ("v=DKIM1; k=rsa; ", "p=AB", "CD")])
    answer = await resolver.txt("long.test")
    assert sorted(answer.records) == sorted([long, "v=DKIM1; k=rsa; p=ABCD"])


async def test_txt_answer_over_512_bytes_comes_over_tcp(
    server: DNSServer, resolver: Resolver
) -> None:
    records = [f"record {i} " + "z" * 100 for i in range(8)]
    server.set("big.test", "TXT", records)
    answer = await resolver.txt("big.test")
    assert sorted(answer.records) == sorted(records)
    # once truncated over UDP, once complete over TCP
    assert count(server, "big.test", "TXT") == 2


async def test_txt_non_ascii_octets_decode_losslessly_as_latin1(
    server: DNSServer, resolver: Resolver
) -> None:
    server.set("utf8.test", "TXT", ["grüße"])
    (text,) = (await resolver.txt("utf8.test")).records
    assert text.encode("latin-1") == "grüße".encode()
    assert not text.isascii()


async def test_unicode_names_are_looked_up_idna_encoded(resolver: Resolver) -> None:
    answer = await resolver.a("Bücher.test")
    assert answer.name == "xn--bcher-kva.test"
    assert answer.records == ("127.0.0.13",)


# -- negative answers -------------------------------------------------------------


async def test_nxdomain_is_an_empty_answer_not_an_error(resolver: Resolver) -> None:
    answer = await resolver.mx("nope.test")
    assert answer.nxdomain
    assert answer.records == ()
    assert answer.ttl == 40  # the SOA minimum


async def test_nodata_is_empty_without_nxdomain_and_negative_ttl_is_capped(
    server: DNSServer, clock: Clock
) -> None:
    resolver = Resolver([server.address], negative_ttl=10, clock=clock)
    answer = await resolver.aaaa("v4only.test")
    assert (answer.records, answer.nxdomain, answer.ttl) == ((), False, 10)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a" * 64 + ".test", "label longer than 63"),
        (".".join(["abcdefghi"] * 30), "longer than 255"),
        ("a..test", "empty label"),
        ("", "empty"),
        ("☃.test", "not a valid"),
    ],
)
async def test_invalid_names_are_permanent(resolver: Resolver, name: str, reason: str) -> None:
    with pytest.raises(DNSPermanentError, match=reason):
        await resolver.a(name)


def test_normalise_name_lowercases_and_idna_encodes() -> None:
    assert normalise_name("Mail.Example.TEST.") == "mail.example.test"
    assert normalise_name("ÄÖ.test") == "xn--4ca0b.test"
    assert normalise_name("_spf.netigate.se") == "_spf.netigate.se"


# -- failures ---------------------------------------------------------------------


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
async def test_servfail_and_refused_are_temporary(
    server: DNSServer, resolver: Resolver, rcode: str
) -> None:
    server.fail("example.test", rcode)
    with pytest.raises(DNSTemporaryError, match=rcode) as caught:
        await resolver.a("example.test")
    assert caught.value.name == "example.test"


async def test_dropped_query_times_out_as_temporary(server: DNSServer) -> None:
    resolver = Resolver([server.address], timeout=0.3)
    server.drop("example.test")
    with pytest.raises(DNSTemporaryError, match=r"no answer within 0\.3s"):
        await resolver.mx("example.test")


async def test_no_reachable_nameserver_is_temporary() -> None:
    resolver = Resolver([f"127.0.0.1:{free_port()}"], timeout=0.5)
    with pytest.raises(DNSTemporaryError):
        await resolver.a("example.test")


async def test_errors_are_not_cached(server: DNSServer, resolver: Resolver) -> None:
    server.fail("example.test")
    with pytest.raises(DNSTemporaryError):
        await resolver.a("example.test")
    server.heal("example.test")
    assert sorted((await resolver.a("example.test")).records) == ["127.0.0.10", "127.0.0.11"]


# -- addresses --------------------------------------------------------------------


async def test_addresses_lists_ipv4_then_ipv6(resolver: Resolver) -> None:
    found = await resolver.addresses("example.test")
    assert (sorted(found[:2]), found[2:]) == (["127.0.0.10", "127.0.0.11"], ["::1"])
    assert await resolver.addresses("v6only.test") == ["::1"]


async def test_addresses_of_a_missing_name_or_one_without_addresses_is_permanent(
    resolver: Resolver,
) -> None:
    with pytest.raises(DNSPermanentError, match="does not exist"):
        await resolver.addresses("nope.test")
    with pytest.raises(DNSPermanentError, match="no A or AAAA"):
        await resolver.addresses("empty.test")


async def test_addresses_use_ipv4_when_only_the_aaaa_lookup_fails(
    server: DNSServer, resolver: Resolver
) -> None:
    server.fail("example.test", rdtype="AAAA")
    assert sorted(await resolver.addresses("example.test")) == ["127.0.0.10", "127.0.0.11"]
    server.fail("v6only.test", rdtype="AAAA")
    with pytest.raises(DNSTemporaryError):
        await resolver.addresses("v6only.test")


# -- cache ------------------------------------------------------------------------


async def test_changed_record_is_seen_only_after_the_ttl_expires(
    server: DNSServer, resolver: Resolver, clock: Clock
) -> None:
    server.set("ttl.test", "A", ["127.0.0.1"], ttl=100)
    assert (await resolver.a("ttl.test")).records == ("127.0.0.1",)
    server.set("ttl.test", "A", ["127.0.0.2"], ttl=100)
    clock.now += 60
    cached = await resolver.a("ttl.test")
    assert (cached.records, cached.ttl) == (("127.0.0.1",), 40)
    clock.now += 40
    assert (await resolver.a("ttl.test")).records == ("127.0.0.2",)
    assert count(server, "ttl.test", "A") == 2


async def test_max_ttl_caps_a_long_ttl(server: DNSServer, clock: Clock) -> None:
    resolver = Resolver([server.address], max_ttl=60, clock=clock)
    server.set("long-ttl.test", "A", ["127.0.0.1"], ttl=86400)
    assert (await resolver.a("long-ttl.test")).ttl == 60
    server.set("long-ttl.test", "A", ["127.0.0.2"])
    clock.now += 59
    assert (await resolver.a("long-ttl.test")).records == ("127.0.0.1",)
    clock.now += 1
    assert (await resolver.a("long-ttl.test")).records == ("127.0.0.2",)


async def test_min_ttl_raises_a_short_ttl(server: DNSServer, clock: Clock) -> None:
    resolver = Resolver([server.address], min_ttl=30, clock=clock)
    server.set("short-ttl.test", "A", ["127.0.0.1"], ttl=0)
    assert (await resolver.a("short-ttl.test")).ttl == 30
    await resolver.a("short-ttl.test")
    assert count(server, "short-ttl.test", "A") == 1


async def test_nxdomain_is_cached_for_the_negative_ttl(
    server: DNSServer, resolver: Resolver, clock: Clock
) -> None:
    assert (await resolver.a("later.test")).nxdomain
    server.set("later.test", "A", ["127.0.0.5"])
    clock.now += 39
    assert (await resolver.a("later.test")).nxdomain
    clock.now += 1
    assert (await resolver.a("later.test")).records == ("127.0.0.5",)


async def test_nodata_is_cached_for_the_negative_ttl(
    server: DNSServer, resolver: Resolver, clock: Clock
) -> None:
    assert (await resolver.mx("v4only.test")).records == ()
    server.set("v4only.test", "MX", [(5, "mx.v4only.test")])
    clock.now += 39
    assert (await resolver.mx("v4only.test")).records == ()
    clock.now += 1
    assert (await resolver.mx("v4only.test")).records == (MX(5, "mx.v4only.test"),)


async def test_cache_is_keyed_by_name_and_type(server: DNSServer, resolver: Resolver) -> None:
    await resolver.a("example.test")
    await resolver.a("EXAMPLE.test.")
    await resolver.aaaa("example.test")
    assert count(server, "example.test", "A") == 1
    assert count(server, "example.test", "AAAA") == 1


async def test_cache_evicts_the_least_recently_used(server: DNSServer, clock: Clock) -> None:
    resolver = Resolver([server.address], cache_size=2, clock=clock)
    await resolver.a("example.test")
    await resolver.a("v4only.test")
    await resolver.a("example.test")  # now v4only.test is the oldest
    await resolver.a("alias.test")
    await resolver.a("example.test")
    await resolver.a("v4only.test")
    assert count(server, "example.test", "A") == 1
    assert count(server, "v4only.test", "A") == 2


async def test_concurrent_identical_queries_share_one_lookup(
    server: DNSServer, resolver: Resolver
) -> None:
    answers = await asyncio.gather(*(resolver.mx("example.test") for _ in range(5)))
    assert len({answer.records for answer in answers}) == 1
    assert count(server, "example.test", "MX") == 1


async def test_concurrent_callers_share_a_failure_and_it_is_not_cached(
    server: DNSServer, resolver: Resolver
) -> None:
    server.fail("example.test")
    results = await asyncio.gather(
        *(resolver.a("example.test") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, DNSTemporaryError) for result in results)
    assert count(server, "example.test", "A") == 1
    server.heal("example.test")
    assert (await resolver.a("example.test")).records


async def test_one_cancelled_caller_does_not_cancel_the_shared_lookup(
    server: DNSServer, resolver: Resolver
) -> None:
    first = asyncio.create_task(resolver.a("example.test"))
    second = asyncio.create_task(resolver.a("example.test"))
    await asyncio.sleep(0)  # both are waiting on the one lookup, its answer not yet in
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert sorted((await second).records) == ["127.0.0.10", "127.0.0.11"]
    assert count(server, "example.test", "A") == 1


# -- configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["dns.example.test:53", "127.0.0.1:0", "127.0.0.1:x", "[::1"])
def test_bad_nameserver_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="nameservers"):
        Resolver([text])


def test_bad_ttl_bounds_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="min_ttl"):
        Resolver(["127.0.0.1"], min_ttl=100, max_ttl=10)


async def test_the_ad_bit_is_believed_only_with_trust_ad(server: DNSServer) -> None:
    server.secure()
    server.secure("v6only.test", on=False)
    server.set("_25._tcp.example.test", "TLSA", ["3 1 1 " + "ab" * 32])
    trusting = Resolver([server.address], timeout=2.0, trust_ad=True)
    plain = Resolver([server.address], timeout=2.0)
    assert (await trusting.a("example.test")).secure
    assert not (await plain.a("example.test")).secure
    # a secure denial of existence is secure too
    assert (await trusting.a("missing.test")).secure
    tlsa = await trusting.tlsa("_25._tcp.example.test")
    assert tlsa.secure
    assert [(r.usage, r.selector, r.mtype, r.data) for r in tlsa.records] == [
        (3, 1, 1, bytes.fromhex("ab" * 32))
    ]
    # the host's addresses are secure only when every answer used is
    assert (await trusting.host_addresses("example.test")).secure
    server.secure("example.test", on=False)
    trusting.clear_cache()
    addresses = await trusting.host_addresses("example.test")
    assert sorted(addresses.addresses) == ["127.0.0.10", "127.0.0.11", "::1"]
    assert not addresses.secure


async def test_a_failed_tlsa_lookup_is_temporary(server: DNSServer) -> None:
    server.fail("_25._tcp.example.test", rdtype="TLSA")
    resolver = Resolver([server.address], timeout=2.0, trust_ad=True)
    with pytest.raises(DNSTemporaryError, match="SERVFAIL"):
        await resolver.tlsa("_25._tcp.example.test")


def test_trust_ad_needs_the_validating_resolvers() -> None:
    with pytest.raises(ConfigError, match="dnssec"):
        Resolver([], trust_ad=True)
