"""The unsubscribe page: German or English (the distribution's language,
else the browser's), no script, accessible, clear about what happened;
the one-click POST is answered in place, never redirected (RFC 8058 §3.2);
links in the old token format still work."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.api.unsubscribe_page import choose_language, mask_address, render
from mailer.app import App
from mailer.config import load_config
from mailer.message.unsubscribe import UnsubscribeLinks, UnsubscribeToken, legacy_token

SECRET = "unsubscribe-page-secret-0123456789abcdef"
PUBLIC_URL = "http://127.0.0.1:8025"
LINKS = UnsubscribeLinks(SECRET, PUBLIC_URL)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


# pure -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "header", "chosen"),
    [
        ("de", "en-US,en;q=0.9", "de"),
        ("en", "de-DE", "en"),
        (None, "de-AT,de;q=0.9,en;q=0.8", "de"),
        (None, "fr-FR,fr;q=0.9,en;q=0.5,de;q=0.7", "de"),
        (None, "de;q=0, en", "en"),
        (None, "fr", "en"),
        (None, None, "en"),
        (None, ";;;q=x,,de;q=abc", "en"),
        ("xx", "DE", "de"),
    ],
)
def test_language_is_the_distributions_else_the_browsers_else_english(
    preferred: str | None, header: str | None, chosen: str
) -> None:
    assert choose_language(preferred, header) == chosen


def test_the_page_shows_the_address_only_in_part() -> None:
    assert mask_address("anna.schaefer@dest.test") == "a…r@dest.test"
    assert mask_address("al@dest.test") == "a@dest.test"


class _Outline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def outline(html: str) -> _Outline:
    parser = _Outline()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("language", ["de", "en"])
def test_confirm_page_is_a_labelled_form_without_script(language: str) -> None:
    page = render("confirm", language, address="anna@dest.test", form="List-Unsubscribe=One-Click")
    tags = outline(page.html).tags
    names = [tag for tag, _ in tags]
    assert "script" not in names
    assert ("html", {"lang": language}) in tags
    assert ("form", {"method": "post", "aria-labelledby": "title"}) in tags
    assert ("h1", {"id": "title"}) in tags
    assert "main" in names
    assert (
        "input",
        {"type": "hidden", "name": "List-Unsubscribe", "value": "One-Click"},
    ) in tags
    assert re.search(r'<button type="submit">[^<]+</button>', page.html)
    assert "focus-visible" in page.html
    assert "a…a@dest.test" in page.html


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    light, dark = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_text_and_button_colours_pass_wcag_aa_contrast() -> None:
    html = render("confirm", "en", address="a@b.test", form="a=b").html
    assert "color:#1a1a1a;background:#fff" in html
    assert "color:#fff;background:#0b57d0" in html
    assert contrast("#1a1a1a", "#ffffff") >= 4.5
    assert contrast("#ffffff", "#0b57d0") >= 4.5
    assert contrast("#444444", "#ffffff") >= 4.5  # the notes


def test_each_outcome_says_what_happened_in_both_languages() -> None:
    assert "Sie sind abgemeldet" in render("done", "de", address="a@b.test").html
    assert "bereits abgemeldet" in render("again", "de", address="a@b.test").html
    assert "You are unsubscribed" in render("done", "en", address="a@b.test").html
    assert "already unsubscribed" in render("again", "en", address="a@b.test").html
    assert render("invalid", "de").status == 404
    assert "Link ungültig" in render("invalid", "de").html
    assert render("bad", "en", form="List-Unsubscribe=One-Click").status == 400


# over HTTP -------------------------------------------------------------------------


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[App, str]]:
    config = load_config(
        environ={},
        overrides={
            "database": str(tmp_path / "db.sqlite3"),
            "api": {"keys": ["k" * 32], "secret": SECRET, "public_url": PUBLIC_URL},
        },
    )
    async with App(config) as app, ApiServer(create_api(app)) as api:
        yield app, api.url


async def test_the_page_speaks_the_distributions_language_whatever_the_browser(server) -> None:
    _, url = server
    token = LINKS.token("acme", "anna@dest.test", "s1", "de")
    async with httpx.AsyncClient(base_url=url) as http:
        page = await http.get(f"/u/{token}", headers={"Accept-Language": "en-US"})
    assert page.status_code == 200
    assert '<html lang="de">' in page.text
    assert "Jetzt abmelden" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_without_a_distribution_language_the_browser_chooses(server) -> None:
    _, url = server
    token = LINKS.token("acme", "anna@dest.test", "s1")
    async with httpx.AsyncClient(base_url=url) as http:
        german = await http.get(f"/u/{token}", headers={"Accept-Language": "de-CH, en;q=0.5"})
        english = await http.get(f"/u/{token}")
    assert '<html lang="de">' in german.text
    assert '<html lang="en">' in english.text


@pytest.mark.parametrize("slash", ["", "/"])
async def test_one_click_post_is_answered_in_place_not_redirected(server, slash: str) -> None:
    app, url = server
    token = LINKS.token("acme", "anna@dest.test", "s1", "de")
    async with httpx.AsyncClient(base_url=url, follow_redirects=False) as http:
        done = await http.post(f"/u/{token}{slash}", data=ONE_CLICK)
        again = await http.post(f"/u/{token}{slash}", data=ONE_CLICK)
    assert done.status_code == 200
    assert "location" not in done.headers
    assert "Sie sind abgemeldet" in done.text
    assert "bereits abgemeldet" in again.text
    [suppression] = await app.store.suppressions("acme")
    assert suppression.address == "anna@dest.test"


async def test_a_link_sent_in_the_old_token_format_still_unsubscribes(server) -> None:
    app, url = server
    old = legacy_token(SECRET.encode(), UnsubscribeToken("acme", "bob@dest.test", "s0"))
    async with httpx.AsyncClient(base_url=url) as http:
        page = await http.get(f"/u/{old}")
        done = await http.post(f"/u/{old}", data=ONE_CLICK)
    assert page.status_code == 200
    assert done.status_code == 200
    [suppression] = await app.store.suppressions("acme")
    assert suppression.address == "bob@dest.test"


async def test_a_bad_link_gets_a_page_in_the_browsers_language(server) -> None:
    app, url = server
    async with httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/u/garbage", headers={"Accept-Language": "de"})
        post = await http.post("/u/garbage", data=ONE_CLICK, headers={"Accept-Language": "de"})
    assert (page.status_code, post.status_code) == (404, 404)
    assert "Link ungültig" in page.text
    assert await app.store.suppressions() == []
