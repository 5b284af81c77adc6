"""The sink's inbox in a real browser (system Chromium through
Playwright): live list, sandboxed preview, DKIM/SPF shown, fault switches,
offline API docs, accessibility (axe-core) and the docs' screenshots."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.client import Client
from mailer.config import Config
from mailer.enqueue import RecipientInput
from mailer.pytest_plugin import CUSTOMER_DOMAIN, INBOX_DOMAIN, PLATFORM_DOMAIN, settle
from mailer.reasons import State
from mailer.sink.server import DevSink
from mailer.sink.web import create_app
from mailer.sink.web.faults import DEFER_REPLY
from mailer.store.models import NewDistribution
from mailer.testing.world import ED25519_SELECTOR, SELECTOR
from tests.browser import PageRequests, assert_accessible, screenshot

pytestmark = pytest.mark.timeout(120)

SURVEY = NewDistribution(
    account="acme",
    sender_address=f"umfragen@{CUSTOMER_DOMAIN}",
    sender_name="Müller & Söhne GmbH",
    subject="Ihre Meinung zählt, {{ name }}",
    html=(
        "<p>Hallo {{ name }},</p><p>wie zufrieden sind Sie?</p>"
        "<p><a href='https://survey.test/s/{{ token }}'>Zur Umfrage</a></p>"
        "<p><img src='https://survey.test/logo.png'></p>"
        "<p><a href='https://survey.test/u/{{ token }}'>Abmelden</a></p>"
    ),
    text=None,
    unsubscribe_url="https://survey.test/u/{{ token }}",
)


@pytest.fixture
def inbox(mailer_sink: DevSink, serve_app: Callable[..., str]) -> str:
    """The inbox of ``mailer_sink`` served on loopback; its base URL."""
    app = create_app(mailer_sink)
    return serve_app(app, on_stop=app.state.changes.close)


def _in_thread(coro: Any) -> Any:
    """Run a coroutine on its own loop in a thread (Playwright's sync API
    owns this thread's loop)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _deliver(config: Config, email: str, name: str) -> dict[State, int]:
    async def go() -> dict[State, int]:
        async with App(config) as app:
            await Client(app).enqueue(SURVEY, [RecipientInput(email, name, {"token": "t1"})])
            return await settle(app)

    counts: dict[State, int] = _in_thread(go())
    return counts


def _deliver_until_deferred(config: Config, email: str) -> State:
    async def go() -> State:
        async with App(config) as app:
            await Client(app).enqueue(SURVEY, [RecipientInput(email, "Anna", {"token": "t2"})])
            engine = await app.engine()
            task = asyncio.create_task(engine.run())
            try:
                async with asyncio.timeout(30):
                    while True:
                        counts = await app.store.counts()
                        if counts.get(State.DEFERRED) or counts.get(State.DELIVERED):
                            return State.DEFERRED if counts.get(State.DEFERRED) else State.DELIVERED
                        await asyncio.sleep(0.05)
            finally:
                engine.stop()
                await task

    state: State = _in_thread(go())
    return state


def _send(sink: DevSink, subject: str, *, html: str | None = None, text: str = "Hallo") -> None:
    """One message over STARTTLS with the standard library's SMTP client."""
    msg = EmailMessage()
    msg["From"] = "dev@sender.test"
    msg["To"] = f"someone@{INBOX_DOMAIN}"
    msg["Subject"] = subject
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    context = ssl.create_default_context(cafile=str(sink.ca_path))
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.starttls(context=context)
        client.send_message(msg)


def test_inbox_shows_a_new_message_without_a_reload(
    browser_page: Page, inbox: str, mailer_sink: DevSink
) -> None:
    browser_page.goto(inbox)
    expect(browser_page.locator("#list")).to_contain_text("No messages yet")
    browser_page.evaluate("window.__sameDocument = 'yes'")
    # the event stream is open before the message is sent
    browser_page.wait_for_function("() => !!document.querySelector('[sse-connect]')")
    browser_page.wait_for_timeout(300)
    _send(mailer_sink, "Live: Grüße aus Köln")
    expect(browser_page.locator("#list")).to_contain_text("Live: Grüße aus Köln", timeout=15_000)
    assert browser_page.evaluate("window.__sameDocument") == "yes"


def test_search_narrows_the_list(browser_page: Page, inbox: str, mailer_sink: DevSink) -> None:
    _send(mailer_sink, "Erste Umfrage")
    _send(mailer_sink, "Zweite Erinnerung")
    mailer_sink.wait_for(2)
    browser_page.goto(inbox)
    browser_page.fill("#q", "erinnerung")
    expect(browser_page.locator("#list tr")).to_have_count(1)
    expect(browser_page.locator("#list")).to_contain_text("Zweite Erinnerung")


def test_script_in_an_html_body_does_not_run_in_the_preview(
    browser_page: Page, inbox: str, mailer_sink: DevSink, page_requests: PageRequests
) -> None:
    html = (
        "<p id='hello'>Hello</p>"
        "<script>document.body.setAttribute('data-ran', 'yes'); fetch('/__script_ran__');</script>"
        "<img src='/__onerror__' onerror=\"fetch('/__onerror_ran__')\" alt='x'>"
        "<img src='https://images.remote.test/pixel.png' alt='pixel'>"
    )
    _send(mailer_sink, "Script inside", html=html)
    [message] = mailer_sink.wait_for(1)
    browser_page.goto(f"{inbox}/m/{message.id}")
    frame = browser_page.frame_locator("#preview")
    expect(frame.locator("#hello")).to_have_text("Hello")
    browser_page.wait_for_timeout(500)
    expect(frame.locator("body")).not_to_have_attribute("data-ran", "yes")
    asked = " ".join(page_requests.urls)
    assert "__script_ran__" not in asked
    assert "__onerror_ran__" not in asked
    # remote images stay blocked (by the preview's policy) until allowed
    remote = "https://images.remote.test/pixel.png"
    assert page_requests.failures.get(remote) == "csp"
    expect(browser_page.get_by_text("1 remote image(s) blocked")).to_be_visible()
    browser_page.get_by_role("link", name="Show remote images").click()
    expect(browser_page.frame_locator("#preview").locator("#hello")).to_have_text("Hello")
    browser_page.wait_for_timeout(300)
    # now the preview asks for it (and the test's guard stops it at the door)
    assert page_requests.failures.get(remote) not in (None, "csp")


def test_dkim_spf_and_dmarc_results_are_shown(
    browser_page: Page, inbox: str, mailer_sink: DevSink, mailer_config: Config
) -> None:
    counts = _deliver(mailer_config, f"anna@{INBOX_DOMAIN}", "Anna Schäfer")
    assert counts == {State.DELIVERED: 1}
    [message] = mailer_sink.wait_for(1)
    _send(mailer_sink, "Unsigned, from a developer's script")
    mailer_sink.wait_for(2)
    browser_page.goto(inbox)
    row = browser_page.locator(f"#list tr[data-id='{message.id}']")
    expect(row).to_contain_text("Ihre Meinung zählt, Anna Schäfer")
    expect(row).to_contain_text("pass")
    assert_accessible(browser_page)
    screenshot(browser_page, "sink-inbox")

    row.get_by_role("link").click()
    expect(browser_page.locator(".check-dkim").first).to_contain_text("pass")
    dkim = browser_page.locator(".check-dkim")
    # the platform signs with both its keys, RSA and Ed25519
    for selector in (SELECTOR, ED25519_SELECTOR):
        expect(dkim.filter(has_text=f"d={PLATFORM_DOMAIN} s={selector}")).to_contain_text("pass")
    spf = browser_page.locator("#check-spf")
    expect(spf).to_contain_text("pass")
    expect(spf).to_contain_text("127.0.0.1")
    expect(browser_page.locator("#check-dmarc")).to_contain_text("pass")
    expect(browser_page.locator("#check-unsubscribe")).to_contain_text("one-click")
    expect(browser_page.locator("#check-tls")).to_contain_text("TLSv1.")
    htmlcheck = browser_page.locator(".htmlcheck")
    expect(htmlcheck).to_contain_text("Abmelden")
    expect(htmlcheck).to_contain_text("Images without alt: 1")
    expect(browser_page.frame_locator("#preview").get_by_text("Zur Umfrage")).to_be_visible()
    assert_accessible(browser_page)
    screenshot(browser_page, "sink-message")


def test_a_fault_switch_flipped_on_the_page_makes_the_next_delivery_defer(
    browser_page: Page, inbox: str, mailer_sink: DevSink, mailer_config: Config
) -> None:
    browser_page.goto(inbox)
    switch = browser_page.locator("button[data-switch='defer']")
    expect(switch).to_have_text("defer: off")
    switch.click()
    expect(browser_page.locator("button[data-switch='defer']")).to_have_text("defer: on")
    assert _deliver_until_deferred(mailer_config, f"bert@{INBOX_DOMAIN}") is State.DEFERRED
    assert [r.reply for r in mailer_sink.refusals] == [DEFER_REPLY]
    assert mailer_sink.messages == []
    assert_accessible(browser_page)
    screenshot(browser_page, "sink-faults")

    browser_page.locator("button[data-switch='defer']").click()
    expect(browser_page.locator("button[data-switch='defer']")).to_have_text("defer: off")
    # switched off: the deferred send goes out on its retry, the new one at once
    assert _deliver(mailer_config, f"carl@{INBOX_DOMAIN}", "Carl") == {State.DELIVERED: 2}
    assert sorted(m.rcpt_tos[0] for m in mailer_sink.wait_for(2)) == [
        f"bert@{INBOX_DOMAIN}",
        f"carl@{INBOX_DOMAIN}",
    ]


def test_delete_and_clear_from_the_page(
    browser_page: Page, inbox: str, mailer_sink: DevSink
) -> None:
    _send(mailer_sink, "Keep me")
    _send(mailer_sink, "Delete me")
    mailer_sink.wait_for(2)
    doomed = next(m for m in mailer_sink.messages if m.subject == "Delete me")
    browser_page.goto(f"{inbox}/m/{doomed.id}")
    browser_page.get_by_role("button", name="Delete").click()
    expect(browser_page.locator("#list tr")).to_have_count(1)
    assert [m.subject for m in mailer_sink.messages] == ["Keep me"]
    browser_page.get_by_role("button", name="Delete all").click()
    expect(browser_page.locator("#list")).to_contain_text("No messages yet")
    assert mailer_sink.messages == []


@pytest.fixture
def service_api(mailer_config: Config) -> Iterator[str]:
    """The service's HTTP API (mailer serve's) on loopback, in a thread."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def run() -> None:
        async with App(mailer_config) as app:
            api = create_api(app, api_keys=["k"])
            async with ApiServer(api, "127.0.0.1", 0) as server:
                stop = asyncio.Event()
                box["url"], box["stop"] = server.url, stop
                box["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(run()), daemon=True)
    thread.start()
    assert ready.wait(30), "the API did not start"
    yield box["url"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


@pytest.mark.parametrize("which", ["service", "sink"])
def test_docs_render_their_operations_with_no_request_leaving_loopback(
    browser_page: Page,
    page_requests: PageRequests,
    request: pytest.FixtureRequest,
    which: str,
) -> None:
    base = request.getfixturevalue("service_api" if which == "service" else "inbox")
    errors: list[str] = []
    browser_page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    browser_page.goto(f"{base}/docs")
    expect(browser_page.locator(".opblock").first).to_be_visible(timeout=15_000)
    assert browser_page.locator(".opblock").count() >= 3
    browser_page.wait_for_load_state("networkidle")
    assert page_requests.offsite == []
    assert not [e for e in errors if "Content Security Policy" in e], errors
    screenshot(browser_page, f"{which}-api-docs")
    browser_page.goto(f"{base}/redoc")
    expect(browser_page.locator("[data-section-id]").first).to_be_attached(timeout=15_000)
    browser_page.wait_for_load_state("networkidle")
    # ReDoc's footer asks for its logo on a CDN; the page's policy stops it
    assert page_requests.left_loopback == []
    screenshot(browser_page, f"{which}-api-redoc")
