"""Source addresses: connections bound to the configured local address,
a pool whose entries share connections by their limits, IPv6 destinations
only from an IPv6 source, and SPF checked for every public address."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from mailer.app import App
from mailer.config import load_config
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import ConfigError
from mailer.identity.check_host import SPFResult
from mailer.identity.sender import IdentityDecider
from mailer.reasons import Reason, State
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import numbered


def peer_ip(peer: str) -> str:
    return peer.rsplit(":", 1)[0].strip("[]")


async def test_connections_leave_from_the_bind_address(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir, bind_address="127.0.0.5")
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(3))
        await run_until_settled(app)
    assert len(mx1.messages) == 3
    assert {peer_ip(m.peer) for m in mx1.messages} == {"127.0.0.5"}


async def test_pool_spreads_connections_by_each_entry_limit(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    # slow replies keep every connection busy while the queue lasts
    mx1.set_faults(slow_replies=0.02)
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        outbound_ip="192.0.2.10",
        sources=[
            {"public_ip": "192.0.2.10", "bind_address": "127.0.0.5", "connections": 1},
            {"public_ip": "192.0.2.11", "bind_address": "127.0.0.6", "connections": 3},
        ],
        limits={"default": {"connections": 10, "messages_per_connection": 1000}},
        worker={"idle_timeout": 1.0},
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(40))
        await run_until_settled(app, within=60)
    ports: dict[str, set[str]] = defaultdict(set)
    for message in mx1.messages:
        ports[peer_ip(message.peer)].add(message.peer)
    per_address = Counter(peer_ip(m.peer) for m in mx1.messages)
    assert len(mx1.messages) == 40
    # one connection from the entry limited to one, three from the other
    assert {ip: len(p) for ip, p in ports.items()} == {"127.0.0.5": 1, "127.0.0.6": 3}
    assert per_address["127.0.0.6"] > per_address["127.0.0.5"] > 0


@pytest.fixture
def v6_zone(dns_server: DNSServer) -> DNSServer:
    dns_server.update(
        {
            "six.test": {"MX": [(10, "mx.six.test")]},
            "mx.six.test": {"AAAA": ["::1"]},
        }
    )
    return dns_server


async def test_ipv6_destination_is_used_from_an_ipv6_source(
    tmp_path: Path, v6_zone: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx = make_sink("::1", hostname="mx.six.test")
    config = make_config(
        tmp_path,
        v6_zone,
        smtp_port,
        keys_dir,
        sources=[{"public_ip": "2001:db8::25", "bind_address": "::1"}],
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(1, "six.test"))
        await run_until_settled(app)
    assert len(mx.messages) == 1
    assert peer_ip(mx.messages[0].peer) == "::1"


async def test_ipv6_only_destination_is_not_tried_from_an_ipv4_source(
    tmp_path: Path, v6_zone: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx = make_sink("::1", hostname="mx.six.test")
    config = make_config(tmp_path, v6_zone, smtp_port, keys_dir, retry={"max_age": 0.5})
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(1, "six.test"))
        await run_until_settled(app)
        attempts = await app.store.attempts(result.send_ids[0])
    assert mx.connections == 0
    assert {a.reason for a in attempts} == {Reason.CONNECTION}
    assert "no IPv4 address" in (attempts[0].text or "")


SPF_ZONE = {
    "both.test": {"TXT": ["v=spf1 ip4:192.0.2.10 ip4:192.0.2.11 -all"]},
    "one.test": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]},
}


@pytest.mark.parametrize(
    ("address", "customer", "reason"),
    [
        ("hr@both.test", True, "spf=pass → customer sender"),
        ("hr@one.test", False, "spf=fail for 192.0.2.11 → neutral sender"),
    ],
)
async def test_spf_must_pass_for_every_public_address_of_the_pool(
    address: str, customer: bool, reason: str
) -> None:
    with DNSServer(SPF_ZONE) as dns:
        decider = IdentityDecider(
            Resolver([dns.address], timeout=1),
            outbound_ip=("192.0.2.10", "192.0.2.11"),
            neutral_sender="survey@netigate.se",
            bounce_address="bounces@netigate.se",
        )
        identity = await decider.decide(address, "HR")
    assert identity.customer_sender is customer
    assert identity.reason == reason
    assert identity.spf is (SPFResult.PASS if customer else SPFResult.FAIL)


async def test_send_from_a_pool_records_the_uncovered_address(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    dns_server.update(SPF_ZONE)
    make_sink("127.0.0.2")
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        sources=[{"public_ip": "192.0.2.10"}, {"public_ip": "192.0.2.11"}],
    )
    survey = SURVEY.__class__(**{**SURVEY.__dict__, "sender_address": "hr@one.test"})
    async with App(config) as app:
        result = await app.enqueue(survey, numbered(1))
        await run_until_settled(app)
        send = await app.store.send(result.send_ids[0])
    assert send.state is State.DELIVERED
    assert send.identity == "spf=fail for 192.0.2.11 → neutral sender"


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"bind_address": "::1"}, "bind_address", "not of one IP version"),
        ({"bind_address": "127.0.0.300"}, "bind_address", "does not appear to be an IP"),
        (
            {"sources": [{"public_ip": "192.0.2.1", "bind_address": "::1"}]},
            "sources.0",
            "not of one IP version",
        ),
        (
            {"sources": [{"public_ip": "192.0.2.1"}, {"public_ip": "192.0.2.1"}]},
            "sources",
            "listed twice",
        ),
        ({"sources": [{"public_ip": "192.0.2.1", "ehlo": "mx one"}]}, "sources.0.ehlo", "host"),
        ({"sources": [{"public_ip": "192.0.2.1", "connections": 0}]}, "sources.0.connections", ""),
        ({"sources": [{"bind_address": "127.0.0.5"}]}, "sources.0.public_ip", "required"),
        ({"mta_sts": {"test_port": 0}}, "mta_sts.test_port", "greater than or equal to 1"),
        ({"mta_sts": {"fetch_timeout": 0}}, "mta_sts.fetch_timeout", "greater than 0"),
    ],
)
def test_bad_source_settings_name_the_key(
    settings: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"outbound_ip": "192.0.2.10", **settings})
    assert caught.value.key == key
    assert words.lower() in caught.value.reason.lower()
