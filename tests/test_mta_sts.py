"""MTA-STS through the engine, all on loopback: zones on the loopback DNS
server, the policy host served over HTTPS with the test CA, sinks with
certificates for the right or the wrong MX name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.cli import cli
from mailer.config import Config
from mailer.delivery.tls.fetch import PolicyFetcher
from mailer.delivery.tls.sts import PolicySource
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dev.policyhost import PolicyHost, Reply, policy_text
from mailer.dns import Resolver
from mailer.enqueue import RecipientInput
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Send
from mailer.store.sqlite.store import SQLiteStore
from tests.conftest import SURVEY, make_config, run_until_settled

TXT = "_mta-sts.dest.test"


@pytest.fixture
def policy_host(certs: TestCerts, dns_server: DNSServer) -> Iterator[PolicyHost]:
    dns_server.update({"mta-sts.dest.test": {"A": ["127.0.0.1"]}})
    with PolicyHost(certs, ["mta-sts.dest.test"]) as host:
        yield host


def publish(dns: DNSServer, host: PolicyHost, policy_id: str, text: str) -> None:
    # TTL 0: each recheck asks the DNS server again
    dns.set(TXT, "TXT", [f"v=STSv1; id={policy_id};"], ttl=0)
    host.serve("dest.test", Reply(text))


def sts_config(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    host: PolicyHost,
    **overrides: Any,
) -> Config:
    return make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        tls={"cafile": str(certs.ca_path)},
        mta_sts={"test_port": host.port, "test_cafile": str(certs.ca_path), "recheck": 0},
        **overrides,
    )


async def deliver_one(app: App, name: str = "p0") -> tuple[Send, list[Attempt]]:
    result = await app.enqueue(SURVEY, [RecipientInput(f"{name}@dest.test", "P", {"token": "1"})])
    await run_until_settled(app)
    send = await app.store.send(result.send_ids[0])
    return send, await app.store.attempts(send.id)


async def test_enforce_with_matching_certificate_delivers_and_records_the_policy(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    mx1 = make_sink("127.0.0.2", hostname="mx1.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["*.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
        cached = await app.store.sts_policy("dest.test")
        metrics = app.metrics.render().decode()
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "mta-sts enforce"
    assert len(mx1.messages) == 1
    assert cached is not None
    assert cached.policy_id == "1"
    assert cached.mode == "enforce"
    assert 'mailer_tls_policy_attempts_total{policy="mta-sts enforce",reason="delivered"} 1.0' in (
        metrics
    )


async def test_enforce_with_certificate_for_wrong_name_defers_before_mail_from(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    mx1 = make_sink("127.0.0.2", hostname="somebody-else.test")
    mx2 = make_sink("127.0.0.3", hostname="another.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["*.dest.test"]))
    config = sts_config(
        tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host, retry={"max_age": 0.5}
    )
    async with App(config) as app:
        send, attempts = await deliver_one(app)
    assert send.state is State.FAILED  # expired after its deferrals
    assert attempts
    assert {a.reason for a in attempts} == {Reason.CERTIFICATE}
    assert {a.tls_policy for a in attempts} == {"mta-sts enforce"}
    # never a delivery without verification: no MAIL FROM reached either server
    assert mx1.transactions == []
    assert mx2.transactions == []


async def test_enforce_skips_an_mx_not_in_the_policy(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    # mx1 is preferred and has a valid certificate, but the policy names only mx2
    mx1 = make_sink("127.0.0.2", hostname="mx1.dest.test")
    mx2 = make_sink("127.0.0.3", hostname="mx2.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx2.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert attempt.mx_host == "mx2.dest.test"
    assert mx1.connections == 0
    assert len(mx2.messages) == 1


async def test_enforce_with_no_mx_in_the_policy_defers_mta_sts_mismatch(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    mx1 = make_sink("127.0.0.2", hostname="mx1.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx.elsewhere.test"]))
    config = sts_config(
        tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host, retry={"max_age": 0.5}
    )
    async with App(config) as app:
        send, attempts = await deliver_one(app)
    assert {a.reason for a in attempts} == {Reason.MTA_STS_MISMATCH}
    assert "not in the MTA-STS policy" in (attempts[0].text or "")
    assert send.state is State.FAILED
    assert mx1.connections == 0


async def test_testing_mode_delivers_and_counts_the_failures(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    mx1 = make_sink("127.0.0.2", hostname="somebody-else.test")
    publish(dns_server, policy_host, "1", policy_text("testing", ["mx2.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
        metrics = app.metrics.render().decode()
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "mta-sts testing"
    assert len(mx1.messages) == 1
    failures = "mailer_mta_sts_testing_failures_total"
    assert f'{failures}{{destination="dest.test",reason="mta-sts-mismatch"}} 1.0' in metrics
    assert f'{failures}{{destination="dest.test",reason="certificate"}} 1.0' in metrics


async def test_policy_id_change_is_refetched(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    make_sink("127.0.0.3", hostname="mx2.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        _, [first] = await deliver_one(app, "a")
        _, [again] = await deliver_one(app, "b")
        assert policy_host.fetches["dest.test"] == 1  # same id: the cached policy
        publish(dns_server, policy_host, "2", policy_text("enforce", ["mx2.dest.test"]))
        _, [after] = await deliver_one(app, "c")
        cached = await app.store.sts_policy("dest.test")
    assert (first.mx_host, again.mx_host, after.mx_host) == (
        "mx1.dest.test",
        "mx1.dest.test",
        "mx2.dest.test",
    )
    assert policy_host.fetches["dest.test"] == 2
    assert cached is not None
    assert cached.policy_id == "2"


@pytest.mark.parametrize("trouble", ["host down", "txt gone", "bad policy now"])
async def test_cached_enforce_policy_stays_enforced(
    trouble: str,
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    wrong = make_sink("127.0.0.3", hostname="somebody-else.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["*.dest.test"]))
    config = sts_config(
        tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host, retry={"max_age": 0.5}
    )
    async with App(config) as app:
        send, _ = await deliver_one(app, "a")
        assert send.state is State.DELIVERED
        if trouble == "host down":
            dns_server.set(TXT, "TXT", ["v=STSv1; id=2;"], ttl=0)  # a new id to fetch
            policy_host.stop()
        elif trouble == "txt gone":
            dns_server.remove(TXT)
        else:
            dns_server.set(TXT, "TXT", ["v=STSv1; id=2;"], ttl=0)
            policy_host.serve("dest.test", Reply("version: STSv1\nmode: enforce\n"))
        # the preferred MX now presents a certificate for another name
        dns_server.set("mx1.dest.test", "A", ["127.0.0.3"], ttl=0)
        app.resolver.clear_cache()
        send, attempts = await deliver_one(app, "b")
        cached = await app.store.sts_policy("dest.test")
    assert send.state is State.FAILED
    assert {a.reason for a in attempts} == {Reason.CERTIFICATE}
    assert {a.tls_policy for a in attempts} == {"mta-sts enforce"}
    assert wrong.transactions == []
    assert cached is not None
    assert cached.policy_id == "1"


async def test_mode_none_drops_the_cached_policy(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        await deliver_one(app, "a")
        assert await app.store.sts_policy("dest.test") is not None
        publish(dns_server, policy_host, "2", "version: STSv1\nmode: none\nmax_age: 86400\n")
        send, [attempt] = await deliver_one(app, "b")
        cached = await app.store.sts_policy("dest.test")
    assert cached is None
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "encrypt"


async def test_bad_policy_without_a_cached_one_means_no_policy_and_is_counted(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    mx1 = make_sink("127.0.0.2", hostname="somebody-else.test")
    dns_server.set(TXT, "TXT", ["v=STSv1; id=1;"], ttl=0)
    policy_host.serve(
        "dest.test", Reply(policy_text("enforce", ["mx1.dest.test"]), content_type="text/html")
    )
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
        metrics = app.metrics.render().decode()
        failures = app.policies().failures
    # RFC 8461 §5: no valid policy and none cached: deliver as without MTA-STS
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "encrypt"
    assert len(mx1.messages) == 1
    assert failures
    assert "not text/plain" in failures[0].reason
    assert (
        'mailer_mta_sts_fetch_failures_total{destination="dest.test",field="fetch"} 1.0' in metrics
    )


async def test_applied_policy_shows_in_queue_show_and_the_api(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"]))
    key = "test-api-key-0123456789"
    config = sts_config(
        tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host, api={"keys": [key]}
    )
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    async with App(config) as app:
        send, _ = await deliver_one(app)
        async with (
            ApiServer(create_api(app)) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}
            ) as http,
        ):
            shown = (await http.get(f"/v1/sends/{send.id}")).json()
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--config", str(path), "queue", "show", send.id]
    )
    assert result.exit_code == 0, result.output
    assert "tls policy mta-sts enforce" in result.output
    assert shown["attempts"][0]["tls_policy"] == "mta-sts enforce"


async def test_cached_policy_is_shared_by_another_worker_without_a_fetch(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"]))
    config = sts_config(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as first:
        await deliver_one(first, "a")
    async with App(config) as second:  # another process: its own memory, the same store
        _, [attempt] = await deliver_one(second, "b")
    assert attempt.tls_policy == "mta-sts enforce"
    assert policy_host.fetches["dest.test"] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_background_refresh_renews_a_policy_before_it_expires(
    tmp_path: Path, dns_server: DNSServer, certs: TestCerts, policy_host: PolicyHost
) -> None:
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"], max_age=100))
    clock = Clock()
    resolver = Resolver([dns_server.address], timeout=1)
    fetcher = PolicyFetcher(resolver, port=policy_host.port, cafile=str(certs.ca_path))
    async with SQLiteStore(tmp_path / "q.sqlite3") as store:
        source = PolicySource(store, resolver, fetcher, recheck=0, clock=clock)
        try:
            assert (await source.policy_for("dest.test")) is not None
            clock.now += 50
            assert await source.refresh_due() == 0  # not yet three quarters through
            clock.now += 30
            assert await source.refresh_due() == 1
            assert policy_host.fetches["dest.test"] == 2
            cached = await store.sts_policy("dest.test")
            assert cached is not None
            assert cached.expires_at == clock.now + 100
            # past the first fetch's expiry, host down and TXT gone: still enforced
            policy_host.stop()
            dns_server.remove(TXT)
            clock.now += 60
            policy = await source.policy_for("dest.test")
            assert policy is not None
            assert policy.mode.value == "enforce"
            # and once its own max_age is over, it is gone
            clock.now += 50
            assert await source.policy_for("dest.test") is None
        finally:
            await source.aclose()


async def test_refresh_drops_an_expired_policy_that_cannot_be_renewed(
    tmp_path: Path, dns_server: DNSServer, certs: TestCerts, policy_host: PolicyHost
) -> None:
    publish(dns_server, policy_host, "1", policy_text("enforce", ["mx1.dest.test"], max_age=100))
    clock = Clock()
    resolver = Resolver([dns_server.address], timeout=1)
    fetcher = PolicyFetcher(resolver, port=policy_host.port, cafile=str(certs.ca_path))
    async with SQLiteStore(tmp_path / "q.sqlite3") as store:
        source = PolicySource(store, resolver, fetcher, recheck=0, clock=clock)
        try:
            await source.policy_for("dest.test")
            policy_host.forget("dest.test")  # 404 from now on
            clock.now += 80
            assert await source.refresh_due() == 0  # still valid: kept
            assert await store.sts_policy("dest.test") is not None
            clock.now += 30
            assert await source.refresh_due() == 0
            assert await store.sts_policy("dest.test") is None
            assert [f.reason for f in source.failures][-1].endswith("HTTP 404")
        finally:
            await source.aclose()
