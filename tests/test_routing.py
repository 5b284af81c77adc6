"""MX routing (RFC 5321 §5.1, RFC 7505): the pure ordering and the lookups."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.delivery.routing import Route, order_mx, resolve_route
from mailer.dev.dnsserver import DNSServer
from mailer.dns import MX, Resolver
from mailer.errors import DNSPermanentError, DNSTemporaryError

ZONE = {
    "example.test": {
        "MX": [(20, "backup.example.test"), (10, "b.example.test"), (10, "a.example.test")]
    },
    "implicit.test": {"A": ["127.0.0.20"], "TXT": ["no mx here"]},
    "implicit6.test": {"AAAA": ["::1"]},
    "nothing.test": {"TXT": ["neither mx nor address"]},
    "null.test": {"MX": [(0, ".")], "A": ["127.0.0.21"]},
    "mixed-null.test": {"MX": [(0, "."), (10, "mx.mixed-null.test")]},
    "xn--bcher-kva.test": {"MX": [(5, "mx.xn--bcher-kva.test")]},
}


@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as running:
        yield running


@pytest.fixture
def resolver(server: DNSServer) -> Resolver:
    return Resolver([server.address], timeout=2.0)


# -- order_mx (pure) --------------------------------------------------------------


def test_hosts_come_in_preference_order() -> None:
    records = [MX(30, "c.test"), MX(10, "a.test"), MX(20, "b.test")]
    assert order_mx(records, random.Random(0)) == ["a.test", "b.test", "c.test"]


def test_equal_preferences_are_shuffled_and_both_orders_occur() -> None:
    records = [MX(10, "a.test"), MX(10, "b.test"), MX(5, "first.test"), MX(20, "last.test")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(20)}
    assert orders == {
        ("first.test", "a.test", "b.test", "last.test"),
        ("first.test", "b.test", "a.test", "last.test"),
    }


def test_same_seed_gives_the_same_order_whatever_the_record_order() -> None:
    records = [MX(10, f"mx{i}.test") for i in range(6)]
    assert order_mx(records, random.Random(7)) == order_mx(records[::-1], random.Random(7))


def test_host_listed_twice_keeps_its_best_place() -> None:
    records = [MX(10, "a.test"), MX(20, "b.test"), MX(30, "a.test")]
    assert order_mx(records, random.Random(0)) == ["a.test", "b.test"]


def test_no_records_give_no_hosts() -> None:
    assert order_mx([], random.Random(0)) == []


@pytest.mark.parametrize(
    "records",
    [[MX(0, "")], [MX(10, "mx.test"), MX(0, "")]],
    ids=["null-mx", "null-mx-among-others"],
)
def test_null_mx_is_permanent(records: list[MX]) -> None:
    with pytest.raises(DNSPermanentError, match="null MX") as caught:
        order_mx(records, random.Random(0), domain="null.test")
    assert caught.value.name == "null.test"


@given(
    st.lists(
        st.builds(MX, st.integers(0, 3), st.sampled_from(["a", "b", "c", "d", "e"])),
        max_size=12,
    ),
    st.integers(),
)
def test_order_is_a_permutation_of_distinct_hosts_by_best_preference(
    records: list[MX], seed: int
) -> None:
    hosts = order_mx(records, random.Random(seed))
    assert sorted(hosts) == sorted({record.exchange for record in records})
    best = {h: min(r.preference for r in records if r.exchange == h) for h in hosts}
    assert [best[h] for h in hosts] == sorted(best[h] for h in hosts)


# -- resolve_route ----------------------------------------------------------------


async def test_route_lists_mx_hosts_in_order(resolver: Resolver) -> None:
    route = await resolve_route(resolver, "Example.Test", rng=random.Random(1))
    assert route.domain == "example.test"
    assert not route.implicit
    assert set(route.hosts[:2]) == {"a.example.test", "b.example.test"}
    assert route.hosts[2] == "backup.example.test"


async def test_route_shuffles_equal_preferences_across_seeds(resolver: Resolver) -> None:
    firsts = {
        (await resolve_route(resolver, "example.test", rng=random.Random(seed))).hosts[0]
        for seed in range(20)
    }
    assert firsts == {"a.example.test", "b.example.test"}


@pytest.mark.parametrize("domain", ["implicit.test", "implicit6.test"])
async def test_no_mx_means_the_domain_itself_when_it_has_an_address(
    resolver: Resolver, domain: str
) -> None:
    assert await resolve_route(resolver, domain) == Route(domain, (domain,), implicit=True)


async def test_no_mx_and_no_address_is_permanent(resolver: Resolver) -> None:
    with pytest.raises(DNSPermanentError, match="no MX and no A or AAAA"):
        await resolve_route(resolver, "nothing.test")


@pytest.mark.parametrize("domain", ["null.test", "mixed-null.test"])
async def test_null_mx_is_permanent_even_with_an_address_or_other_mx(
    resolver: Resolver, domain: str
) -> None:
    with pytest.raises(DNSPermanentError, match="null MX: domain accepts no mail"):
        await resolve_route(resolver, domain)


async def test_nonexistent_domain_is_permanent(resolver: Resolver) -> None:
    with pytest.raises(DNSPermanentError, match="domain does not exist") as caught:
        await resolve_route(resolver, "nope.test")
    assert caught.value.name == "nope.test"


async def test_servfail_is_temporary(server: DNSServer, resolver: Resolver) -> None:
    server.fail("example.test")
    with pytest.raises(DNSTemporaryError, match="SERVFAIL"):
        await resolve_route(resolver, "example.test")


async def test_servfail_on_the_implicit_mx_address_lookup_is_temporary(
    server: DNSServer, resolver: Resolver
) -> None:
    server.fail("implicit.test", rdtype="A")
    with pytest.raises(DNSTemporaryError):
        await resolve_route(resolver, "implicit.test")


async def test_timeout_is_temporary(server: DNSServer) -> None:
    server.drop("example.test")
    with pytest.raises(DNSTemporaryError, match="no answer"):
        await resolve_route(Resolver([server.address], timeout=0.3), "example.test")


async def test_unicode_domain_is_routed_by_its_idna_form(
    server: DNSServer, resolver: Resolver
) -> None:
    route = await resolve_route(resolver, "bücher.test")
    assert route == Route("xn--bcher-kva.test", ("mx.xn--bcher-kva.test",), implicit=False)
    assert ("xn--bcher-kva.test", "MX") in server.queries


async def test_invalid_domain_is_permanent(resolver: Resolver) -> None:
    with pytest.raises(DNSPermanentError, match="label longer than 63"):
        await resolve_route(resolver, "x" * 64 + ".test")
