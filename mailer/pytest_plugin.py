"""pytest fixtures for sending real mail through the real engine into a
checking sink, all on loopback (registered as the ``mailer`` pytest11
plugin; ``-p no:mailer`` turns it off). See docs/testing.md.

Fixtures (function scope unless noted):

``mailer_sink``
    a running :class:`mailer.sink.DevSink`: received messages with parsed
    headers, DKIM results and header checks; scripted replies and faults.
``mailer_dns``
    a loopback :class:`mailer.dev.dnsserver.DNSServer` serving the test
    zone of :mod:`mailer.testing.world`: DKIM keys, SPF letting the
    platform (``mailer.test``) send for the customer ``acme.test``, the MX
    of ``dest.test`` (``mx1.dest.test``) pointing at the sink.
``mailer_keys_dir`` (session)
    a key store with DKIM keys for ``mailer.test`` (our signing domain:
    RSA ``rsa1`` and Ed25519 ``ed1``) and ``acme.test`` (``cust1``).
``mailer_config_overrides``
    ``{}``; override it in a conftest to change config keys (deep-merged).
``mailer_config``
    the :class:`mailer.config.Config` bound to all of the above: every
    message relayed to the sink (STARTTLS required), temp SQLite, fast
    retries. With ``{"relay": None}`` in the overrides it routes by MX.
``mailer_app``
    an open :class:`mailer.app.App` over that config (needs pytest-asyncio).
``mailer_deliver``
    ``await mailer_deliver()`` runs the engine until every send has a final
    state and the sink has checked every message; returns the state counts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.sink.options import SinkOptions
from mailer.sink.server import DevSink
from mailer.testing import world

if TYPE_CHECKING:
    from mailer.app import App
    from mailer.config import Config
    from mailer.reasons import State

__all__ = [
    "CUSTOMER_DOMAIN",
    "INBOX_DOMAIN",
    "PLATFORM_DOMAIN",
    "SELECTOR",
    "mailer_zone",
    "settle",
]

#: Our signing domain and the neutral sender's domain in tests.
PLATFORM_DOMAIN = world.OUR_DOMAIN
#: A customer whose SPF lets the platform send for it (its address stays From).
CUSTOMER_DOMAIN = world.CUSTOMER_DOMAIN
#: Recipients' domain; its MX is the sink (any domain works while relaying).
INBOX_DOMAIN = world.DEST_DOMAIN
#: The selector of our RSA key (the customer's is world.CUSTOMER_SELECTOR).
SELECTOR = world.SELECTOR
_SINK_HOST = world.PLATFORM_IP


def mailer_zone(keys_dir: Path, sink_host: str = _SINK_HOST) -> dict[str, dict[str, Any]]:
    """The test zone: every key of ``keys_dir`` published, SPF records that
    let 127.0.0.1 send for the platform and the customer, the preferred MX
    of ``dest.test`` at ``sink_host``. Raises KeyMaterialError for an
    unreadable key."""
    return {
        **world.dkim_zone(keys_dir),
        **world.dest_zone(mx1=sink_host),
        **world.spf_records(_SINK_HOST),
    }


@pytest.fixture(scope="session")
def mailer_keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test world's key store (:func:`mailer.testing.world.make_keys`),
    made once per session."""
    return world.make_keys(tmp_path_factory.mktemp("mailer-keys"))


@pytest.fixture(scope="session")
def mailer_certs() -> Iterator[TestCerts]:
    """The throw-away CA that issues the sink's certificates."""
    with TestCerts() as certs:
        yield certs


@pytest.fixture
def mailer_dns(mailer_keys_dir: Path) -> Iterator[DNSServer]:
    """A loopback DNS server with :func:`mailer_zone`; change it with
    ``.set(name, rdtype, values)``, ``.fail(name)``, ``.remove(name)``."""
    with DNSServer(mailer_zone(mailer_keys_dir)) as server:
        yield server


@pytest.fixture
def mailer_sink(
    tmp_path: Path, mailer_dns: DNSServer, mailer_keys_dir: Path, mailer_certs: TestCerts
) -> Iterator[DevSink]:
    """A running checking sink on 127.0.0.1 (any free port), STARTTLS
    offered, a Maildir under ``tmp_path``; ``.messages``, ``.wait_for(n)``,
    ``.script(pattern, reply)``, ``.set_faults(greylist=True)``, ``.refusals`` …"""
    options = SinkOptions(
        host=_SINK_HOST, hostname=world.MX_HOST, maildir=tmp_path / "mailer-sink" / "Maildir"
    )
    with DevSink(
        options,
        nameservers=[mailer_dns.address],
        keys_dir=mailer_keys_dir,
        dns_timeout=2.0,
        certs=mailer_certs,
        sender_ip=_SINK_HOST,  # mailer_config's outbound_ip
    ) as sink:
        yield sink


@pytest.fixture
def mailer_config_overrides() -> dict[str, Any]:
    """Config keys to change in ``mailer_config`` (deep-merged); override
    this fixture, e.g. ``{"tls": {"policy": "verify"}}``."""
    return {}


@pytest.fixture
def mailer_config(
    tmp_path: Path,
    mailer_dns: DNSServer,
    mailer_sink: DevSink,
    mailer_keys_dir: Path,
    mailer_config_overrides: dict[str, Any],
) -> Config:
    """The test world's config (:func:`mailer.testing.world.build_config`)
    bound to ``mailer_dns`` and ``mailer_sink`` (all mail relayed to the
    sink, STARTTLS required), a temp SQLite, ``mailer_keys_dir``,
    mailer.test as region host and signing domain, fast retries."""
    relayed: dict[str, Any] = {
        "hostname": f"mta.{PLATFORM_DOMAIN}",
        "outbound_ip": _SINK_HOST,
        "regions": world.platform_region(),
        "relay": mailer_sink.address,
        "tls": {"cafile": str(mailer_sink.ca_path)},
        # as on every delivering node: the service's one-click unsubscribe link
        "api": {
            "secret": secrets.token_urlsafe(32),
            "public_url": f"https://mta.{PLATFORM_DOMAIN}",
        },
    }
    return world.build_config(
        tmp_path,
        mailer_dns.address,
        mailer_sink.port,
        mailer_keys_dir,
        world.merge(relayed, mailer_config_overrides),
    )


async def settle(app: App, *, timeout: float = 30.0) -> dict[State, int]:  # noqa: ASYNC109
    """Run an engine of ``app`` until every send has a final state (deferred
    ones are retried on the config's schedule); return the state counts.

    Raises TimeoutError when sends are still open after ``timeout`` seconds.
    """
    from mailer.reasons import TERMINAL_STATES

    engine = await app.engine()
    task = asyncio.create_task(engine.run())
    deadline = time.monotonic() + timeout
    try:
        while True:
            counts = await app.store.counts()
            if all(state in TERMINAL_STATES for state in counts):
                return counts
            if task.done():
                task.result()  # the engine died: raise why
            if time.monotonic() > deadline:
                raise TimeoutError(f"sends still open after {timeout}s: {counts}")
            await asyncio.sleep(0.05)
    finally:
        engine.stop()
        await task


async def _app(mailer_config: Config) -> AsyncIterator[App]:
    """An open App over ``mailer_config``: ``await mailer_app.enqueue(...)``."""
    from mailer.app import App

    async with App(mailer_config) as app:
        yield app


async def _deliver(
    mailer_app: App, mailer_sink: DevSink
) -> Callable[..., Awaitable[dict[State, int]]]:
    """``await mailer_deliver()``: run the engine until every send has a
    final state and the sink has checked all it got; the state counts."""

    async def deliver(timeout: float = 30.0) -> dict[State, int]:  # noqa: ASYNC109
        counts = await settle(mailer_app, timeout=timeout)
        await mailer_sink.await_idle(timeout)
        return counts

    return deliver


def _without_pytest_asyncio() -> None:
    raise pytest.UsageError("mailer_app and mailer_deliver need pytest-asyncio installed")


def _async_fixtures() -> tuple[Any, Any]:
    """The async fixtures, made with pytest-asyncio so that they work in its
    strict mode too; without it, fixtures that say what is missing."""
    try:
        import pytest_asyncio
    except ImportError:
        missing = pytest.fixture(_without_pytest_asyncio, name="mailer_app")
        return missing, pytest.fixture(_without_pytest_asyncio, name="mailer_deliver")
    return (
        pytest_asyncio.fixture(_app, name="mailer_app"),
        pytest_asyncio.fixture(_deliver, name="mailer_deliver"),
    )


mailer_app, mailer_deliver = _async_fixtures()
