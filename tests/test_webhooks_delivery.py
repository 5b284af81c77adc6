"""Webhook delivery end to end, in process: the engine delivers a
distribution to the loopback sink, the dispatcher pushes its events to a
real HTTP receiver on loopback, and every signature is checked with the
standardwebhooks package (an implementation that shares no code with ours).
Names resolve only through the project's loopback DNS server."""

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
from mailer.errors import ValidationError
from mailer.store.models import Event, SendFilter
from mailer.webhooks import Dispatcher
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import numbered
from tests.webhook_receiver import Receiver

# hooks.test exists only in the loopback DNS server: a delivery that reached
# the receiver through it went to the address our check resolved
HOOK_HOST = "hooks.test"


def hook_config(
    tmp_path: Path,
    dns: DNSServer,
    port: int,
    keys: Path | None,
    *,
    database: str | None = None,
    **hooks: Any,
) -> Config:
    settings: dict[str, Any] = {
        "allow_insecure": True,
        "allow": ["127.0.0.0/8", "::1/128"],
        "poll_interval": 0.05,
        "retry_base": 0.05,
        "retry_max_delay": 0.3,
        "retry_jitter": 0.0,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "lease_seconds": 10.0,
        **hooks,
    }
    extra: dict[str, Any] = {"database": database} if database else {}
    return make_config(tmp_path, dns, port, keys, webhooks=settings, **extra)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def hook_dns(dns_server: DNSServer) -> DNSServer:
    dns_server.set(HOOK_HOST, "A", ["127.0.0.1"], ttl=0)
    return dns_server


async def account_events(app: App, account: str = "acme") -> list[Event]:
    events: list[Event] = []
    after = 0
    while page := await app.store.events(after=after, limit=1000):
        events.extend(page)
        after = page[-1].seq
    sends = await app.store.list_sends(SendFilter(), limit=100_000)
    mine = {s.id for s in sends if s.account == account}
    return [e for e in events if e.send_id in mine]


async def until(condition: Callable[[], Any], *, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


class Pushing:
    """A dispatcher running beside the test."""

    def __init__(self, app: App, owner: str = "test-worker") -> None:
        self.dispatcher: Dispatcher = app.dispatcher(owner=owner)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Dispatcher:
        self.task = asyncio.create_task(self.dispatcher.run())
        return self.dispatcher

    async def __aexit__(self, *exc: object) -> None:
        self.dispatcher.stop()
        assert self.task is not None
        await self.task


@pytest.fixture
async def hook_app(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, keys_dir: Path
) -> AsyncIterator[App]:
    async with App(hook_config(tmp_path, hook_dns, smtp_port, keys_dir)) as app:
        yield app


@pytest.mark.slow
async def test_every_event_of_a_1000_recipient_distribution_arrives_in_order_signed(
    hook_app: App, receiver: Receiver, make_sink: Callable[..., Any]
) -> None:
    make_sink("127.0.0.2")
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    # another account's events must not reach this endpoint
    await hook_app.enqueue(SURVEY.__class__(**{**SURVEY.__dict__, "account": "other"}), numbered(3))
    await hook_app.enqueue(SURVEY, numbered(1000))
    async with Pushing(hook_app):
        await run_until_settled(hook_app, within=240)
        expected = await account_events(hook_app)
        assert len(expected) == 3000  # queued, sending, delivered

        async def all_there() -> bool:
            endpoint = await hook_app.webhooks().get(created.endpoint.id, "acme")
            return endpoint.cursor >= expected[-1].seq

        await until(all_there, within=120)
    events = receiver.verified_events(created.secret)
    assert [e["seq"] for e in events] == [e.seq for e in expected]
    assert [e["type"] for e in events[:1]] == ["send.queued"]
    assert {e["type"] for e in events} == {"send.queued", "send.sending", "send.delivered"}
    assert all(len(r.events()) <= 100 for r in receiver.snapshot())
    ids = [r.webhook_id for r in receiver.snapshot()]
    assert len(ids) == len(set(ids))  # no retries were needed, none made


async def test_500s_are_retried_with_the_same_webhook_id_then_catch_up_in_order(
    hook_app: App, receiver: Receiver
) -> None:
    receiver.answer = lambda i: (500, {}) if i < 4 else (200, {})
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    await hook_app.enqueue(SURVEY, numbered(250))
    expected = await account_events(hook_app)
    async with Pushing(hook_app):

        async def caught_up() -> bool:
            endpoint = await hook_app.webhooks().get(created.endpoint.id, "acme")
            return endpoint.cursor >= expected[-1].seq

        await until(caught_up)
    requests = receiver.snapshot()
    assert [r.status for r in requests[:5]] == [500, 500, 500, 500, 200]
    assert len({r.webhook_id for r in requests[:5]}) == 1
    assert requests[0].body == requests[4].body
    events = receiver.verified_events(created.secret)
    assert [e["seq"] for e in events] == [e.seq for e in expected]
    log = await hook_app.webhooks().deliveries(created.endpoint.id, "acme")
    assert [d.outcome for d in reversed(log)][:5] == ["failed"] * 4 + ["delivered"]
    assert log[-1].status == 500
    assert log[-1].excerpt == "not now"
    endpoint = await hook_app.webhooks().get(created.endpoint.id, "acme")
    assert endpoint.failures == 0
    assert endpoint.failing_since is None


async def test_410_disables_the_endpoint_and_counts_it(hook_app: App, receiver: Receiver) -> None:
    receiver.answer = lambda i: (410, {})
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    await hook_app.enqueue(SURVEY, numbered(5))
    async with Pushing(hook_app):

        async def disabled() -> bool:
            return not (await hook_app.webhooks().get(created.endpoint.id, "acme")).enabled

        await until(disabled)
        await asyncio.sleep(0.3)  # several poll intervals: nothing more is sent
    endpoint = await hook_app.webhooks().get(created.endpoint.id, None)
    assert endpoint.disabled_reason == "gone: the receiver answered 410"
    assert len(receiver.snapshot()) == 1
    [entry] = await hook_app.webhooks().deliveries(created.endpoint.id, "acme")
    assert (entry.outcome, entry.status) == ("disabled", 410)
    scraped = hook_app.metrics.registry.get_sample_value(
        "mailer_webhook_endpoints_disabled_total", {"reason": "gone"}
    )
    assert scraped == 1


async def test_retry_after_is_honoured(hook_app: App, receiver: Receiver) -> None:
    receiver.answer = lambda i: (503, {"Retry-After": "1"}) if i == 0 else (204, {})
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    await hook_app.enqueue(SURVEY, numbered(2))
    async with Pushing(hook_app):

        async def two() -> bool:
            return len(receiver.snapshot()) >= 2

        await until(two)
    log = list(reversed(await hook_app.webhooks().deliveries(created.endpoint.id, "acme")))
    # without Retry-After the next try would come after retry_base (0.05 s)
    assert log[1].at - log[0].at >= 1.0


async def test_a_failing_endpoint_is_disabled_after_max_age(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, receiver: Receiver
) -> None:
    receiver.answer = lambda i: (500, {})
    config = hook_config(tmp_path, hook_dns, smtp_port, None, max_age=0.5)
    async with App(config) as app:
        created = await app.webhooks().add("acme", receiver.url(HOOK_HOST))
        await app.enqueue(SURVEY, numbered(1))
        async with Pushing(app):

            async def disabled() -> bool:
                return not (await app.webhooks().get(created.endpoint.id, "acme")).enabled

            await until(disabled)
        endpoint = await app.webhooks().get(created.endpoint.id, "acme")
        assert endpoint.disabled_reason is not None
        assert endpoint.disabled_reason.startswith("expired: failing for")
        assert len(receiver.snapshot()) >= 2
        assert (
            app.metrics.registry.get_sample_value(
                "mailer_webhook_endpoints_disabled_total", {"reason": "expired"}
            )
            == 1
        )


async def test_redirects_are_not_followed(hook_app: App, receiver: Receiver) -> None:
    elsewhere = receiver.url(HOOK_HOST, path="/elsewhere")
    receiver.answer = lambda i: (307, {"Location": elsewhere}) if i < 2 else (204, {})
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    await hook_app.enqueue(SURVEY, numbered(1))
    async with Pushing(hook_app):

        async def three() -> bool:
            return len(receiver.snapshot()) >= 3

        await until(three)
    assert {r.path for r in receiver.snapshot()} == {"/hooks"}
    log = list(reversed(await hook_app.webhooks().deliveries(created.endpoint.id, "acme")))
    assert [d.status for d in log[:3]] == [307, 307, 204]


async def test_a_rotated_secret_and_the_old_one_both_verify(
    hook_app: App, receiver: Receiver
) -> None:
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    rotated = await hook_app.webhooks().rotate(created.endpoint.id, "acme")
    assert rotated.secret != created.secret
    await hook_app.enqueue(SURVEY, numbered(3))
    async with Pushing(hook_app):

        async def one() -> bool:
            return len(receiver.delivered()) >= 1

        await until(one)
    assert len(receiver.snapshot()[0].headers["webhook-signature"].split(" ")) == 2
    assert receiver.verified_events(created.secret) == receiver.verified_events(rotated.secret)


async def test_replay_sends_the_events_after_the_cursor_again(
    hook_app: App, receiver: Receiver
) -> None:
    created = await hook_app.webhooks().add("acme", receiver.url(HOOK_HOST))
    await hook_app.enqueue(SURVEY, numbered(4))
    expected = [e.seq for e in await account_events(hook_app)]
    async with Pushing(hook_app):

        async def delivered(n: int) -> bool:
            return len(receiver.verified_events(created.secret)) >= n

        await until(lambda: delivered(4))
        await hook_app.webhooks().replay(created.endpoint.id, "acme", expected[1])
        await until(lambda: delivered(6))
    seqs = [e["seq"] for e in receiver.verified_events(created.secret)]
    assert seqs == expected + expected[2:]


# https -------------------------------------------------------------------------


async def test_https_goes_to_the_checked_address_with_the_name_verified(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, certs: TestCerts
) -> None:
    receiver = Receiver(tls=certs.issue([HOOK_HOST])).start()
    config = hook_config(
        tmp_path, hook_dns, smtp_port, None, allow_insecure=False, cafile=str(certs.ca_path)
    )
    try:
        async with App(config) as app:
            created = await app.webhooks().add("acme", receiver.url(HOOK_HOST))
            await app.enqueue(SURVEY, numbered(2))
            async with Pushing(app):

                async def delivered() -> bool:
                    return len(receiver.delivered()) >= 1

                await until(delivered)
            events = receiver.verified_events(created.secret)
            assert [e["type"] for e in events] == ["send.queued", "send.queued"]
    finally:
        receiver.stop()


async def test_https_with_a_certificate_for_another_name_is_not_delivered(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, certs: TestCerts
) -> None:
    receiver = Receiver(tls=certs.other_name()).start()
    config = hook_config(
        tmp_path, hook_dns, smtp_port, None, allow_insecure=False, cafile=str(certs.ca_path)
    )
    try:
        async with App(config) as app:
            created = await app.webhooks().add("acme", receiver.url(HOOK_HOST))
            await app.enqueue(SURVEY, numbered(1))
            async with Pushing(app):

                async def tried() -> bool:
                    return bool(await app.webhooks().deliveries(created.endpoint.id, "acme"))

                await until(tried)
            [first, *_] = await app.webhooks().deliveries(created.endpoint.id, "acme")
            assert first.status is None
            assert first.error is not None
            assert "CERTIFICATE_VERIFY_FAILED" in first.error
            assert receiver.delivered() == []
    finally:
        receiver.stop()


# SSRF ---------------------------------------------------------------------------

REFUSED = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"]


@pytest.mark.parametrize("address", REFUSED)
async def test_internal_addresses_are_refused_at_registration(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, address: str
) -> None:
    hook_dns.set("inside.test", "AAAA" if ":" in address else "A", [address], ttl=0)
    config = hook_config(tmp_path, hook_dns, smtp_port, None, allow=[], allow_insecure=False)
    async with App(config) as app:
        literal = f"[{address}]" if ":" in address else address
        for url in (f"https://{literal}/hooks", "https://inside.test/hooks"):
            with pytest.raises(ValidationError) as caught:
                await app.webhooks().add("acme", url)
            assert caught.value.field == "url"
            assert "not allowed" in caught.value.reason
        assert await app.webhooks().endpoints(None) == []


async def test_the_allow_list_admits_a_named_network(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int
) -> None:
    config = hook_config(tmp_path, hook_dns, smtp_port, None, allow=["10.0.0.0/8"])
    async with App(config) as app:
        await app.webhooks().add("acme", "https://10.0.0.1/hooks")
        with pytest.raises(ValidationError, match="loopback"):
            await app.webhooks().add("acme", "https://127.0.0.1/hooks")


@pytest.mark.parametrize("address", REFUSED)
async def test_a_name_that_turns_internal_is_refused_at_delivery_before_connecting(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, receiver: Receiver, address: str
) -> None:
    # public at registration (nothing is connected to then), internal at
    # delivery; the receiver listens on 127.0.0.1 at the URL's port, so a
    # connection to the loopback address would be seen
    hook_dns.set("turns.test", "A", ["93.184.216.34"], ttl=0)
    config = hook_config(tmp_path, hook_dns, smtp_port, None, allow=[])
    async with App(config) as api:
        created = await api.webhooks().add("acme", receiver.url("turns.test"))
        await api.enqueue(SURVEY, numbered(2))
    hook_dns.remove("turns.test")
    hook_dns.set("turns.test", "AAAA" if ":" in address else "A", [address], ttl=0)
    # the worker is another process than the API: its own resolver, nothing cached
    async with App(config) as worker:
        async with Pushing(worker):

            async def refused() -> bool:
                log = await worker.webhooks().deliveries(created.endpoint.id, "acme")
                return len(log) >= 2

            await until(refused)
        log = await worker.webhooks().deliveries(created.endpoint.id, "acme")
        assert all(d.status is None and d.outcome == "failed" for d in log)
        assert all(d.error is not None and "not allowed" in d.error for d in log), log
        assert receiver.snapshot() == []
        refusals = worker.metrics.registry.get_sample_value("mailer_webhook_refused_total")
        assert refusals is not None
        assert refusals >= 2


async def test_an_http_url_fails_delivery_once_allow_insecure_is_turned_off(
    tmp_path: Path, hook_dns: DNSServer, smtp_port: int, receiver: Receiver
) -> None:
    async with App(hook_config(tmp_path, hook_dns, smtp_port, None)) as dev:
        created = await dev.webhooks().add("acme", receiver.url(HOOK_HOST))
        await dev.enqueue(SURVEY, numbered(1))
    strict = hook_config(tmp_path, hook_dns, smtp_port, None, allow_insecure=False)
    async with App(strict) as app:
        async with Pushing(app):

            async def tried() -> bool:
                return bool(await app.webhooks().deliveries(created.endpoint.id, "acme"))

            await until(tried)
        [first, *_] = reversed(await app.webhooks().deliveries(created.endpoint.id, "acme"))
        assert first.error is not None
        assert "allow_insecure" in first.error
        assert receiver.snapshot() == []
