"""Shared fixtures: a loopback DNS server, SMTP sinks on loopback addresses
sharing one port, and an app configured to use both. The world they make
(domains, keys, zone, config, recipients) is the pytest plugin's:
``mailer.testing.world``; the plugin's session fixtures (keys, the test CA)
are shared."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.app import App
from mailer.config import Config
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import TERMINAL_STATES
from mailer.sink.runner import Sink, pick_port
from mailer.store.models import NewDistribution
from mailer.testing import world
from mailer.testing.world import CUSTOMER_DOMAIN, OUR_DOMAIN, dkim_zone

# Fixtures that start a server (DNS, SMTP, HTTP, PostgreSQL) or a process:
# a test that uses any of them, directly or through another fixture, is an
# integration test. `pytest -m "not integration"` runs the pure rest.
SERVER_FIXTURES = frozenset(
    {
        "dns_server",
        "make_sink",
        "mailer_sink",
        "mailer_dns",
        "server",
        "servers",
        "sink",
        "dns",
        "database",
        "served",
        "live",
        "dev_server",
        "http",
        "run_sink",
        "start_sink",
        "region_dns",
        "browser",
        "browser_page",
        "serve_app",
        "inbox",
        "store",
    }
)


# Modules whose tests start servers or processes inline.
INTEGRATION_MODULES = frozenset(
    {
        "test_api_serve",
        "test_bench",
        "test_check_domain_cli",
        "test_cli_identity",
        "test_crash",
        "test_dkim_opendkim",
        "test_dnsserver",
        "test_docs_example",
        "test_layout",
        "test_ops_replay_scale",
        "test_pytest_plugin",
        "test_scaleout",
        "test_sink",
        "test_sink_checks",
        "test_sink_cli",
        "test_sink_data",
        "test_sink_faults",
        "test_sink_throughput",
        "test_smtp",
        "test_spf_parity",
        "test_store_postgres",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if item.module else ""
        if module in INTEGRATION_MODULES or SERVER_FIXTURES.intersection(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.integration)


# One destination with two MX hosts on their own loopback addresses, and a
# host (127.0.0.9) where nothing listens.
DEST_ZONE: dict[str, dict[str, Any]] = world.dest_zone()

SURVEY = NewDistribution(
    account="acme",
    sender_address="hr@acme.test",
    sender_name="Müller & Söhne GmbH",
    subject="Umfrage: Wie zufrieden sind Sie, {{ name }}? Grüße aus Köln",
    html=(
        "<p>Hallo {{ name }},</p><p><a href='https://survey.test/s/{{ token }}'>Zur Umfrage</a></p>"
    ),
    text=None,
    unsubscribe_url="https://survey.test/unsubscribe/{{ token }}",
)


@pytest.fixture(scope="session")
def certs(mailer_certs: TestCerts) -> TestCerts:
    """The plugin's throw-away CA."""
    return mailer_certs


__all__ = ["CUSTOMER_DOMAIN", "DEST_ZONE", "OUR_DOMAIN", "dkim_zone", "make_config"]


@pytest.fixture(scope="session")
def keys_dir(mailer_keys_dir: Path) -> Path:
    """The plugin's DKIM keys, made once per session: RSA and Ed25519 for
    our domain, RSA for the customer."""
    return mailer_keys_dir


@pytest.fixture
def dns_server(keys_dir: Path) -> Iterator[DNSServer]:
    with DNSServer({**DEST_ZONE, **dkim_zone(keys_dir)}) as server:
        yield server


@pytest.fixture
def smtp_port() -> int:
    return pick_port()


@pytest.fixture
def make_sink(smtp_port: int, certs: TestCerts) -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []

    def make(host: str, **kw: Any) -> Sink:
        sink = Sink(host, smtp_port, certs=certs, **kw)
        sink.start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


def make_config(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path | None = None,
    **overrides: Any,
) -> Config:
    """The test world's config bound to the loopback DNS server and sinks;
    signing with the session's keys when ``keys_dir`` is given, unsigned
    otherwise."""
    return world.build_config(tmp_path, dns_server.address, smtp_port, keys_dir, overrides)


@pytest.fixture
def config(tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path) -> Config:
    return make_config(tmp_path, dns_server, smtp_port, keys_dir)


@pytest.fixture
async def app(config: Config) -> AsyncIterator[App]:
    async with App(config) as a:
        yield a


async def run_until_settled(
    app: App, *, within: float = 30.0, clock: Callable[[], float] = time.time
) -> None:
    """Run an engine until every send is terminal (deferred ones included:
    the test retry schedule is a fraction of a second)."""
    engine = await app.engine(clock=clock)
    task = asyncio.create_task(engine.run())
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            counts = await app.store.counts()
            if counts and all(state in TERMINAL_STATES for state in counts):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"sends not settled after {within}s: {await app.store.counts()}")
    finally:
        engine.stop()
        await task


# The browser-test kit (Playwright + system Chromium, axe-core, screenshots).
pytest_plugins = ["tests.browser"]
