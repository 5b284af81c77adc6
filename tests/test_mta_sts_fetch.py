"""Fetching MTA-STS policy files over real HTTPS on loopback (RFC 8461
§3.3): the policy host resolves through the service's resolver, its
certificate is verified, and bad answers are refused with a clear reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from mailer.delivery.tls.fetch import PolicyFetcher
from mailer.delivery.tls.policy import parse_policy
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dev.policyhost import PolicyHost, Reply, policy_text
from mailer.dns import Resolver
from mailer.errors import PolicyError

GOOD = policy_text("enforce", ["mx1.sts.test"])


@pytest.fixture
def zone() -> Iterator[DNSServer]:
    with DNSServer(
        {
            "mta-sts.sts.test": {"A": ["127.0.0.1"]},
            "mta-sts.other.test": {"A": ["127.0.0.1"]},
        }
    ) as server:
        yield server


@pytest.fixture
def host(certs: TestCerts) -> Iterator[PolicyHost]:
    with PolicyHost(certs, ["mta-sts.sts.test"]) as ph:
        yield ph


@pytest.fixture
async def fetcher(
    zone: DNSServer, host: PolicyHost, certs: TestCerts
) -> AsyncIterator[PolicyFetcher]:
    resolver = Resolver([zone.address], timeout=1)
    async with PolicyFetcher(
        resolver, timeout=2, port=host.port, cafile=str(certs.ca_path)
    ) as fetcher:
        yield fetcher


async def test_policy_is_fetched_over_verified_https(
    fetcher: PolicyFetcher, host: PolicyHost
) -> None:
    host.serve("sts.test", Reply(GOOD, content_type="text/plain; charset=utf-8"))
    text = await fetcher.fetch("sts.test")
    assert parse_policy(text).mx == ("mx1.sts.test",)
    assert host.fetches["sts.test"] == 1


async def test_body_over_64_kb_is_refused(fetcher: PolicyFetcher, host: PolicyHost) -> None:
    host.serve("sts.test", Reply(GOOD + "x-padding: " + "a" * (65 * 1024) + "\n"))
    with pytest.raises(PolicyError, match="larger than 65536 bytes") as caught:
        await fetcher.fetch("sts.test")
    assert caught.value.field == "fetch"


async def test_wrong_media_type_is_refused(fetcher: PolicyFetcher, host: PolicyHost) -> None:
    host.serve("sts.test", Reply(GOOD, content_type="text/html"))
    with pytest.raises(PolicyError, match="media type 'text/html', not text/plain"):
        await fetcher.fetch("sts.test")


async def test_redirect_is_not_followed(fetcher: PolicyFetcher, host: PolicyHost) -> None:
    target = "https://mta-sts.other.test/.well-known/mta-sts.txt"
    host.serve("sts.test", Reply("", status=301, headers={"Location": target}))
    host.serve("other.test", Reply(GOOD))
    with pytest.raises(PolicyError, match=r"redirect \(301\) .* not followed"):
        await fetcher.fetch("sts.test")
    assert host.fetches["other.test"] == 0


async def test_http_error_status_is_refused(fetcher: PolicyFetcher, host: PolicyHost) -> None:
    with pytest.raises(PolicyError, match="HTTP 404"):
        await fetcher.fetch("sts.test")


async def test_certificate_for_another_name_is_refused(zone: DNSServer, certs: TestCerts) -> None:
    with PolicyHost(certs, ["somebody-else.test"]) as wrong:
        wrong.serve("sts.test", Reply(GOOD))
        resolver = Resolver([zone.address], timeout=1)
        async with PolicyFetcher(
            resolver, timeout=2, port=wrong.port, cafile=str(certs.ca_path)
        ) as fetcher:
            with pytest.raises(PolicyError, match=r"cannot connect.*certificate"):
                await fetcher.fetch("sts.test")


async def test_untrusted_ca_is_refused(zone: DNSServer, host: PolicyHost) -> None:
    host.serve("sts.test", Reply(GOOD))
    resolver = Resolver([zone.address], timeout=1)
    # no test CA: the system's CAs do not know it
    async with PolicyFetcher(resolver, timeout=2, port=host.port) as fetcher:
        with pytest.raises(PolicyError, match="certificate"):
            await fetcher.fetch("sts.test")


async def test_policy_host_without_address_names_the_host(fetcher: PolicyFetcher) -> None:
    with pytest.raises(PolicyError, match=r"mta-sts\.nowhere\.test: domain does not exist"):
        await fetcher.fetch("nowhere.test")


async def test_policy_host_down_is_a_fetch_failure(
    fetcher: PolicyFetcher, host: PolicyHost
) -> None:
    host.serve("sts.test", Reply(GOOD))
    host.stop()
    with pytest.raises(PolicyError, match="cannot connect"):
        await fetcher.fetch("sts.test")
