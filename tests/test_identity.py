"""The sender-identity decision against zones served by the loopback DNS server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mailer.dev.dnsserver import DNSServer
from mailer.dns import Answer, Resolver
from mailer.errors import ConfigError, ValidationError
from mailer.identity.check_host import SPFResult
from mailer.identity.sender import Identity, IdentityDecider

AZURE_IP = "192.0.2.10"  # documentation addresses standing in for our outbound IPs
DE_IP = "198.51.100.20"
BOUNCE = "bounces@mailer.example.com"

ZONE: dict[str, dict[str, object]] = {
    "_spf.netigate.se": {"TXT": [f"v=spf1 ip4:{AZURE_IP} -all"]},
    "_spf.ntgt.de": {"TXT": [f"v=spf1 ip4:{DE_IP} -all"]},
    "azure.test": {"TXT": ["v=spf1 include:_spf.netigate.se ~all"], "ttl": 300},
    "de.test": {"TXT": ["v=spf1 include:_spf.ntgt.de -all"]},
    "softfail.test": {"TXT": ["v=spf1 ip4:203.0.113.5 ~all"]},
    "norecord.test": {"A": ["203.0.113.5"]},
    "short.test": {"TXT": [f"v=spf1 ip4:{AZURE_IP} -all"], "ttl": 5},
    "long.test": {"TXT": [f"v=spf1 ip4:{AZURE_IP} -all"], "ttl": 86400},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingResolver(Resolver):
    """The real resolver, counting the TXT lookups SPF asks for."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.txt_calls: list[str] = []

    async def txt(self, name: str) -> Answer[str]:
        self.txt_calls.append(name)
        return await super().txt(name)


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(dns: DNSServer, clock: Clock) -> CountingResolver:
    return CountingResolver([dns.address], timeout=1.0, clock=clock)


def decider(
    resolver: Resolver, clock: Clock, region: str = "azure", **kw: object
) -> IdentityDecider:
    ip, neutral = (
        (AZURE_IP, "survey@netigate.se") if region == "azure" else (DE_IP, "survey@ntgt.de")
    )
    return IdentityDecider(
        resolver,
        outbound_ip=ip,
        neutral_sender=neutral,
        bounce_address=BOUNCE,
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


def assert_customer(identity: Identity, address: str) -> None:
    assert identity.customer_sender
    assert identity.from_address == address
    assert identity.envelope_from == address
    assert identity.reply_to is None


def assert_neutral(identity: Identity, address: str, neutral: str = "survey@netigate.se") -> None:
    assert not identity.customer_sender
    assert identity.from_address == neutral
    assert identity.reply_to == address
    assert identity.envelope_from == BOUNCE


async def test_netigate_include_makes_the_customer_the_sender(
    resolver: Resolver, clock: Clock
) -> None:
    identity = await decider(resolver, clock).decide("anna@azure.test", "Anna Customer")
    assert_customer(identity, "anna@azure.test")
    assert identity.from_name == "Anna Customer"
    assert (identity.spf, identity.reason) == (SPFResult.PASS, "spf=pass → customer sender")


async def test_ntgt_include_is_customer_sender_in_de_and_neutral_in_azure(
    resolver: Resolver, clock: Clock
) -> None:
    de = await decider(resolver, clock, "de").decide("jan@de.test", "Jan")
    azure = await decider(resolver, clock, "azure").decide("jan@de.test", "Jan")
    assert_customer(de, "jan@de.test")
    assert_neutral(azure, "jan@de.test")
    assert azure.from_name == "Jan"
    assert azure.reason == "spf=fail → neutral sender"


@pytest.mark.parametrize(
    ("address", "spf"),
    [
        ("x@softfail.test", SPFResult.SOFTFAIL),
        ("x@norecord.test", SPFResult.NONE),
        ("x@nxdomain.test", SPFResult.NONE),
    ],
)
async def test_anything_but_pass_means_neutral_sender(
    resolver: Resolver, clock: Clock, address: str, spf: SPFResult
) -> None:
    identity = await decider(resolver, clock).decide(address, "X")
    assert_neutral(identity, address)
    assert (identity.spf, identity.reason) == (spf, f"spf={spf} → neutral sender")


async def test_decision_is_cached_until_the_ttl_runs_out(
    resolver: CountingResolver, dns: DNSServer, clock: Clock
) -> None:
    decide = decider(resolver, clock).decide
    assert (await decide("a@azure.test", "A")).customer_sender
    dns.set("azure.test", "TXT", ["v=spf1 ~all"], ttl=300)
    clock.now += 299
    assert (await decide("b@azure.test", "B")).customer_sender  # still the cached answer
    clock.now += 2
    changed = await decide("a@azure.test", "A")
    assert_neutral(changed, "a@azure.test")
    assert changed.spf is SPFResult.SOFTFAIL
    assert resolver.txt_calls.count("azure.test") == 2


async def test_short_ttl_is_raised_to_min_ttl(
    resolver: Resolver, clock: Clock, dns: DNSServer
) -> None:
    decide = decider(resolver, clock, min_ttl=60).decide
    assert (await decide("a@short.test", "A")).customer_sender
    dns.set("short.test", "TXT", ["v=spf1 -all"], ttl=5)
    clock.now += 30
    assert (await decide("a@short.test", "A")).customer_sender
    clock.now += 31
    assert not (await decide("a@short.test", "A")).customer_sender


async def test_long_ttl_is_cut_to_max_ttl(resolver: Resolver, clock: Clock, dns: DNSServer) -> None:
    decide = decider(resolver, clock, max_ttl=3600).decide
    assert (await decide("a@long.test", "A")).customer_sender
    dns.set("long.test", "TXT", ["v=spf1 -all"], ttl=86400)
    clock.now += 3601
    assert not (await decide("a@long.test", "A")).customer_sender


async def test_temperror_reuses_the_cached_answer_even_when_expired(
    resolver: Resolver, clock: Clock, dns: DNSServer
) -> None:
    decide = decider(resolver, clock).decide
    assert (await decide("a@azure.test", "A")).customer_sender
    clock.now += 10_000
    dns.fail("azure.test")
    identity = await decide("a@azure.test", "A")
    assert_customer(identity, "a@azure.test")
    assert identity.spf is SPFResult.PASS
    assert identity.reason == "spf=pass (cached, DNS temperror now) → customer sender"


async def test_temperror_without_cached_answer_is_neutral(
    resolver: Resolver, clock: Clock, dns: DNSServer
) -> None:
    dns.fail("azure.test")
    identity = await decider(resolver, clock).decide("a@azure.test", "A")
    assert_neutral(identity, "a@azure.test")
    assert (identity.spf, identity.reason) == (
        SPFResult.TEMPERROR,
        "spf=temperror → neutral sender",
    )


async def test_temperror_is_retried_after_min_ttl(
    resolver: Resolver, clock: Clock, dns: DNSServer
) -> None:
    decide = decider(resolver, clock, min_ttl=60).decide
    dns.fail("azure.test")
    assert not (await decide("a@azure.test", "A")).customer_sender
    dns.heal("azure.test")
    clock.now += 61
    assert (await decide("a@azure.test", "A")).customer_sender


async def test_concurrent_decisions_for_one_domain_share_one_evaluation(
    resolver: CountingResolver, clock: Clock
) -> None:
    decide = decider(resolver, clock).decide
    identities = await asyncio.gather(*(decide(f"u{i}@azure.test", "U") for i in range(20)))
    assert all(identity.customer_sender for identity in identities)
    assert [i.from_address for i in identities] == [f"u{i}@azure.test" for i in range(20)]
    assert resolver.txt_calls.count("azure.test") == 1


async def test_domain_is_matched_case_insensitively(
    resolver: CountingResolver, clock: Clock
) -> None:
    decide = decider(resolver, clock).decide
    assert (await decide("a@Azure.TEST", "A")).customer_sender
    assert (await decide("b@azure.test.", "B")).customer_sender
    assert resolver.txt_calls.count("azure.test") == 1


async def test_dkim_alignment_keeps_customer_from_without_spf_pass(
    resolver: Resolver, clock: Clock
) -> None:
    aligned = decider(resolver, clock, dkim_domains=["softfail.test"], dkim_alignment=True)
    identity = await aligned.decide("x@softfail.test", "X")
    assert identity.customer_sender
    assert identity.from_address == "x@softfail.test"
    assert identity.reply_to is None
    assert identity.envelope_from == BOUNCE  # SPF passes for our bounce domain
    assert identity.spf is SPFResult.SOFTFAIL
    assert identity.reason == (
        "dkim key for softfail.test → customer sender (DMARC alignment via DKIM)"
    )


async def test_dkim_key_alone_does_nothing_while_alignment_is_off(
    resolver: Resolver, clock: Clock
) -> None:
    plain = decider(resolver, clock, dkim_domains=["softfail.test"])
    assert_neutral(await plain.decide("x@softfail.test", "X"), "x@softfail.test")


@pytest.mark.parametrize(
    ("address", "name", "field"),
    [
        ("a@azure.test", "Evil\r\nBcc: x@y.test", "customer_name"),
        ("a@azure.test\r\nBcc: x@y.test", "A", "customer_address"),
        ("no-at-sign", "A", "customer_address"),
        ("@azure.test", "A", "customer_address"),
    ],
)
async def test_bad_customer_input_is_refused(
    resolver: Resolver, clock: Clock, address: str, name: str, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await decider(resolver, clock).decide(address, name)
    assert info.value.field == field


@pytest.mark.parametrize(
    "kw",
    [
        {"outbound_ip": "not-an-ip"},
        {"neutral_sender": "survey"},
        {"bounce_address": "@x.test"},
        {"min_ttl": 100, "max_ttl": 10},
    ],
)
def test_bad_configuration_is_refused(resolver: Resolver, kw: dict[str, object]) -> None:
    args: dict[str, object] = {
        "outbound_ip": AZURE_IP,
        "neutral_sender": "survey@netigate.se",
        "bounce_address": BOUNCE,
        **kw,
    }
    with pytest.raises(ConfigError):
        IdentityDecider(resolver, **args)  # type: ignore[arg-type]
