"""The browser-test kit: Playwright for Python driving the system's
Chromium (``/usr/bin/chromium``, installed by ``make system-deps``;
Playwright's own browser download is never used), an ASGI app served by
uvicorn on 127.0.0.1 in a thread, axe-core served to the page by the test,
and screenshots for the docs. Registered in tests/conftest.py, so every
page-serving wing (the sink's inbox, the operator console) uses it:

    def test_page(browser_page, serve_app):
        url = serve_app(create_app(...))
        browser_page.goto(url)
        assert_accessible(browser_page)
        screenshot(browser_page, "my-page")
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Request, Route, sync_playwright
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
# The test's own URL for axe-core, answered by the test, never the server.
AXE_URL_PATH = "/__test__/axe.min.js"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium_path() -> str:
    """The system's Chromium: $CHROMIUM, else /usr/bin/chromium on PATH.

    Raises pytest.UsageError when there is none (``make system-deps``)."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not found:
        raise pytest.UsageError("no chromium: run `make system-deps` (Debian's chromium)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless system Chromium for one test module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(),
            # root in CI containers: Chromium's own sandbox needs user namespaces
            args=["--no-sandbox"],
        )
        try:
            yield launched
        finally:
            launched.close()


class PageRequests:
    """Every URL a page asked for, those that left loopback, and why those
    that failed failed (Chromium reports a request its Content-Security-
    Policy blocked as one that failed with "csp")."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.failures: dict[str, str] = {}

    def record(self, request: Request) -> None:
        self.urls.append(request.url)

    def record_failure(self, request: Request) -> None:
        self.failures[request.url] = request.failure or ""

    @property
    def offsite(self) -> list[str]:
        """Requests the page made for other hosts (blocked or not)."""
        return [url for url in self.urls if not _is_local(url)]

    @property
    def left_loopback(self) -> list[str]:
        """Offsite requests the page's own CSP did not stop in the browser
        (the test's guard aborts them, so none gets out during tests)."""
        return [url for url in self.offsite if self.failures.get(url) != "csp"]


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome-error"):
        return True
    return parts.hostname in LOOPBACK_HOSTS or (parts.hostname or "").startswith("127.")


@pytest.fixture
def page_requests() -> PageRequests:
    return PageRequests()


@pytest.fixture
def browser_page(browser: Browser, page_requests: PageRequests) -> Iterator[Page]:
    """A fresh page (own context) whose requests are recorded in
    ``page_requests``; any request leaving loopback is aborted, so a test
    can never reach the network, and is still recorded for the test to fail on."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("request", page_requests.record)
    page.on("requestfailed", page_requests.record_failure)

    def guard(route: Route) -> None:
        if _is_local(route.request.url):
            route.fallback()
        else:
            route.abort()

    page.route("**/*", guard)
    page.route(f"**{AXE_URL_PATH}", _serve_axe)
    try:
        yield page
    finally:
        context.close()


def _serve_axe(route: Route) -> None:
    route.fulfill(body=AXE.read_bytes(), content_type="application/javascript")


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals
        pass


@pytest.fixture
def serve_app() -> Iterator[Callable[..., str]]:
    """``serve_app(app)`` serves an ASGI app on 127.0.0.1 (any free port)
    in a thread until the test ends; returns its base URL. ``on_stop``
    runs before the server is asked to stop (e.g. to end event streams)."""
    running: list[tuple[_Server, threading.Thread, Callable[[], None] | None]] = []

    def serve(app: ASGIApp, on_stop: Callable[[], None] | None = None) -> str:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
        server = _Server(config)
        thread = threading.Thread(target=server.run, name="test-http", daemon=True)
        thread.start()
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        if not server.started:
            raise RuntimeError("the test server did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        running.append((server, thread, on_stop))
        return f"http://127.0.0.1:{port}"

    yield serve
    for server, thread, on_stop in running:
        if on_stop is not None:
            on_stop()
        server.should_exit = True
        thread.join(10)


def assert_accessible(page: Page) -> list[dict[str, Any]]:
    """Run axe-core on ``page`` (loaded from a URL the test answers, so
    the page's CSP stays as it is) and fail on any serious or critical
    violation; returns the lesser ones."""
    page.add_script_tag(url=AXE_URL_PATH)
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    violations: list[dict[str, Any]] = result["violations"]
    grave = [v for v in violations if v.get("impact") in ("serious", "critical")]
    assert not grave, "\n".join(
        f"{v['impact']}: {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in grave
    )
    return violations


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG of ``page`` at docs/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # Chromium does not paint a cross-origin (sandboxed) frame outside the
    # viewport, and a full-page capture does not change that: the viewport
    # is made as tall as the page for the capture instead.
    size = page.viewport_size or {"width": 1280, "height": 900}
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": size["width"], "height": min(max(height, 1), 10_000)})
    page.wait_for_timeout(300)
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path
