"""The operator console in a real browser (system Chromium through
Playwright) over a real service: the API with the console, an engine
delivering to the checking sink on loopback, a SQLite store. An operator
logs in, finds failed sends, replays them after the dry-run count and
sees them delivered; holds and releases a domain; a form without its
CSRF token is refused; an account's key cannot log in. axe-core checks
every page, and the docs' screenshots are taken here."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Page, expect

from mailer.accounts import create_key, new_account
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.cli.serve import service_api
from mailer.client import Client
from mailer.config import Config
from mailer.enqueue import RecipientInput
from mailer.pytest_plugin import CUSTOMER_DOMAIN, INBOX_DOMAIN
from mailer.reasons import Reason, State
from mailer.sink.server import DevSink
from mailer.sink.web.faults import DEFER_REPLY
from mailer.store.models import (
    FeedbackEffect,
    FeedbackResult,
    NewDistribution,
    NewInbound,
    SendFilter,
)
from tests.browser import PageRequests, assert_accessible, screenshot

pytestmark = pytest.mark.timeout(180)

OPERATOR_KEY = "console-browser-operator-key-0123456789"
T = TypeVar("T")

SURVEY = NewDistribution(
    account="acme",
    sender_address=f"umfragen@{CUSTOMER_DOMAIN}",
    sender_name="Müller & Söhne GmbH",
    subject="Ihre Meinung zählt, {{ name }}",
    html=None,
    text="Hallo {{ name }}, wie zufrieden sind Sie?",
)


@pytest.fixture
def mailer_config_overrides() -> dict[str, Any]:
    # deferred sends fail (expire) within a second, so the test has
    # failed sends to find; the operator key of the console
    return {"retry": {"max_age": 1.0}, "api": {"keys": [OPERATOR_KEY]}}


class Service:
    """``mailer serve`` in a thread: the app, the API with the console and
    an engine on one event loop of their own (Playwright's sync API owns
    the test thread's)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = ""
        self.account_key = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._app: App | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="console-service", daemon=True)

    def __enter__(self) -> Service:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the service did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with App(self.config) as app, ApiServer(service_api(app)) as server:
            self._app = app
            await app.store.add_account(new_account("acme", now=time.time()))
            _, self.account_key = await create_key(
                app.store, "acme", operator=False, name=None, now=time.time()
            )
            engine = await app.engine()
            running = asyncio.create_task(engine.run())
            self.url = server.url
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                engine.stop()
                await running

    def call(self, work: Callable[[App], Awaitable[T]]) -> T:
        """Run ``work(app)`` on the service's loop; its result."""
        assert self._loop is not None
        assert self._app is not None
        app = self._app
        return asyncio.run_coroutine_threadsafe(work(app), self._loop).result(30)

    def enqueue(self, *emails: str) -> str:
        async def go(app: App) -> str:
            recipients = [RecipientInput(e, e.split("@")[0].title()) for e in emails]
            return (await Client(app).enqueue(SURVEY, recipients)).distribution_id

        return self.call(go)


@pytest.fixture
def service(mailer_config: Config) -> Iterator[Service]:
    with Service(mailer_config) as running:
        yield running


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _login(page: Page, service: Service, key: str = OPERATOR_KEY) -> None:
    page.goto(service.url + "/ui/")
    expect(page).to_have_url(service.url + "/ui/login")
    page.get_by_label("Operator API key").fill(key)
    page.get_by_role("button", name="Log in").click()


def _received(sink: DevSink) -> int:
    return len(sink.messages)


def test_operator_replays_failed_sends_after_the_dry_run_count_and_they_are_delivered(
    browser_page: Page, service: Service, mailer_sink: DevSink, page_requests: PageRequests
) -> None:
    mailer_sink.script("*", DEFER_REPLY)
    service.enqueue(f"anna@{INBOX_DOMAIN}", f"bernd@{INBOX_DOMAIN}")

    async def failed(app: App) -> int:
        return (await app.store.counts()).get("failed", 0)  # type: ignore[call-overload,no-any-return]

    _wait(lambda: service.call(failed) == 2, "two failed (expired) sends")
    mailer_sink.unscript("*", DEFER_REPLY)
    assert _received(mailer_sink) == 0

    _login(browser_page, service)
    expect(browser_page.get_by_role("heading", name="Overview")).to_be_visible()
    browser_page.get_by_role("navigation", name="Console").get_by_role("link", name="Queue").click()
    browser_page.get_by_label("failed").check()
    browser_page.get_by_role("button", name="Filter").click()
    rows = browser_page.locator("#sends tbody tr")
    expect(rows).to_have_count(2)
    expect(browser_page.locator("#sends")).to_contain_text("expired")

    browser_page.locator("#replay-link").click()
    expect(browser_page.locator("#dry-run-count")).to_contain_text("Would requeue 2 of 2")
    # nothing has changed yet: the dry run only counts
    assert service.call(failed) == 2
    browser_page.get_by_label("Note (recorded on every replayed event)").fill("receiver fixed")
    browser_page.get_by_role("button", name="Replay 2 send(s)").click()
    expect(browser_page.locator("#replay-done")).to_contain_text("Requeued 2 send(s)")

    _wait(lambda: _received(mailer_sink) == 2, "the replayed sends at the sink")
    browser_page.goto(service.url + "/ui/queue?state=delivered")
    expect(browser_page.locator("#sends tbody tr")).to_have_count(2)
    browser_page.locator("#sends tbody a").first.click()
    timeline = browser_page.locator("#timeline")
    expect(timeline).to_contain_text("replayed")
    expect(timeline).to_contain_text("receiver fixed")
    expect(timeline).to_contain_text("delivered")
    expect(timeline).to_contain_text("TLSv1.")
    assert not page_requests.left_loopback


def test_a_hold_set_on_the_page_stops_deliveries_and_a_release_resumes_them(
    browser_page: Page, service: Service, mailer_sink: DevSink
) -> None:
    _login(browser_page, service)
    browser_page.goto(service.url + "/ui/holds")
    browser_page.get_by_label("Kind").select_option("domain")
    browser_page.get_by_label("Domain or distribution id").fill(INBOX_DOMAIN.upper())
    browser_page.locator("#hold-form").get_by_label("Note (why)").fill("receiver asked us to wait")
    browser_page.get_by_role("button", name="Hold", exact=True).click()
    expect(browser_page.locator(".notice")).to_contain_text(f"held domain {INBOX_DOMAIN}")

    service.enqueue(f"carla@{INBOX_DOMAIN}", f"dora@{INBOX_DOMAIN}")

    async def held(app: App) -> int:
        return (await app.store.counts()).get("held", 0)  # type: ignore[call-overload,no-any-return]

    _wait(lambda: service.call(held) == 2, "two held sends")
    time.sleep(1.0)  # the engine polls every 0.05 s: long enough to have sent
    assert _received(mailer_sink) == 0

    browser_page.reload()
    browser_page.get_by_role("button", name=f"Release domain {INBOX_DOMAIN}").click()
    expect(browser_page.locator(".notice")).to_contain_text("2 send(s) queued")
    _wait(lambda: _received(mailer_sink) == 2, "the released sends at the sink")


def test_a_post_without_the_csrf_token_is_refused(browser_page: Page, service: Service) -> None:
    _login(browser_page, service)
    browser_page.goto(service.url + "/ui/holds")
    # the page's form, with its token taken out before it is sent
    browser_page.evaluate("document.querySelector('#hold-form input[name=csrf]').remove()")
    browser_page.get_by_label("Domain or distribution id").fill("example.test")
    browser_page.get_by_role("button", name="Hold", exact=True).click()
    expect(browser_page.get_by_role("heading", name="Refused")).to_be_visible()

    async def holds(app: App) -> int:
        return len(await app.store.holds())

    assert service.call(holds) == 0


def test_an_account_key_cannot_log_in(browser_page: Page, service: Service) -> None:
    _login(browser_page, service, service.account_key)
    expect(browser_page.locator("#key-error")).to_contain_text("the console needs an operator key")
    browser_page.goto(service.url + "/ui/queue")
    expect(browser_page).to_have_url(service.url + "/ui/login")


def test_every_console_page_is_accessible_and_is_pictured(
    browser_page: Page, service: Service, mailer_sink: DevSink, page_requests: PageRequests
) -> None:
    mailer_sink.script(f"bernd@{INBOX_DOMAIN}", "550 5.1.1 no such user")
    service.enqueue(f"anna@{INBOX_DOMAIN}", f"bernd@{INBOX_DOMAIN}", f"cleo@{INBOX_DOMAIN}")
    _wait(lambda: _received(mailer_sink) == 2, "two deliveries")

    async def seed(app: App) -> str:
        client = Client(app)
        await client.hold("domain", "slow.example")
        delivered = SendFilter(states=(State.DELIVERED,))
        send_id = (await app.store.list_sends(delivered, limit=1))[0].id
        # a bounce that came back days later, as the feedback wing records it
        now = time.time()
        [inbound] = await app.store.inbound_put([NewInbound("", ("b@x",), b"x")], now=now)
        late = FeedbackEffect(
            send_id,
            Reason.MAILBOX_UNKNOWN,
            bounce=True,
            suppress=Reason.SUPPRESSED_BOUNCE,
            code=550,
            enhanced="5.1.1",
            text="mailbox disabled",
            detail="later, by DSN",
        )
        result = FeedbackResult("bounce", "rfc3464", "{}", send_id, "verp", effects=(late,))
        await app.store.inbound_done(inbound, result, now=now)
        return send_id

    send_id = service.call(seed)
    browser_page.goto(service.url + "/ui/login")
    assert_accessible(browser_page)
    screenshot(browser_page, "console-login")
    _login(browser_page, service)
    pages = {
        "console-overview": "/ui/",
        "console-queue": "/ui/queue",
        "console-send": f"/ui/sends/{send_id}",
        "console-replay": "/ui/replay?state=bounced",
        "console-holds": "/ui/holds",
        "console-suppressions": "/ui/suppressions",
        "console-check-domain": f"/ui/check-domain?domain={CUSTOMER_DOMAIN}",
    }
    for name, path in pages.items():
        browser_page.goto(service.url + path)
        expect(browser_page.locator("h1")).to_be_visible()
        if name == "console-send":
            # the later bounce is on the send's timeline, after its delivery
            expect(browser_page.locator("#timeline li").last).to_contain_text("later, by DSN")
            expect(browser_page.locator("#timeline")).to_contain_text("TLS policy")
        assert_accessible(browser_page)
        screenshot(browser_page, name)
    # the field errors are accessible too
    browser_page.goto(service.url + "/ui/queue?since=yesterday&domain=bad%20domain")
    assert_accessible(browser_page)
    assert not page_requests.left_loopback
