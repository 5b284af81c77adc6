"""Gmail's and Yahoo's bulk-sender rules for unsubscribing (RFC 8058):
List-Unsubscribe carries exactly one web URL, the one-click one; a
customer's URL stands there only when it is declared one-click; every
message shows a visible unsubscribe link in both parts."""

from __future__ import annotations

import email.policy
from dataclasses import replace
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailer.app import App
from mailer.client import Client
from mailer.config import load_config
from mailer.enqueue import RecipientInput
from mailer.errors import ValidationError
from mailer.message.footer import with_unsubscribe_link
from mailer.message.templates import Rendered
from mailer.message.unsubscribe import UnsubscribeLinks
from mailer.prepare import Preparer, unsubscribe_urls
from tests.conftest import SURVEY

SECRET = "a-secret-of-enough-length-for-production"
LINKS = UnsubscribeLinks(SECRET, "https://mailer.test")
SERVICE = "https://mailer.test/u/opaque"
OWN = "https://survey.test/unsubscribe/t0"


# which URL goes where (pure) --------------------------------------------------


def test_without_a_url_of_its_own_the_service_link_is_in_header_and_body() -> None:
    assert unsubscribe_urls(None, SERVICE, one_click=False) == ([SERVICE], SERVICE)


def test_a_customer_https_url_not_declared_one_click_goes_in_the_body_only() -> None:
    assert unsubscribe_urls(OWN, SERVICE, one_click=False) == ([SERVICE], OWN)


def test_a_customer_url_declared_one_click_replaces_the_service_link() -> None:
    assert unsubscribe_urls(OWN, None, one_click=True) == ([OWN], OWN)


def test_a_customer_mailto_goes_beside_the_service_link() -> None:
    mailto = "mailto:unsubscribe@survey.test?subject=t0"
    assert unsubscribe_urls(mailto, SERVICE, one_click=False) == ([SERVICE, mailto], mailto)


def test_with_service_links_switched_off_only_a_one_click_url_is_in_the_header() -> None:
    assert unsubscribe_urls(OWN, None, one_click=False) == ([], OWN)
    assert unsubscribe_urls(None, None, one_click=False) == ([], None)


# the visible link (pure) -------------------------------------------------------


def test_a_footer_is_added_to_both_parts_when_the_template_has_no_link() -> None:
    rendered = Rendered("s", "Hallo Anna\n", "<html><body><p>Hallo</p></body></html>", None)
    done = with_unsubscribe_link(rendered, f"{SERVICE}?a=1&b=2", "de")
    footer = f"Sie möchten keine Umfrage-E-Mails mehr erhalten? Abmelden: {SERVICE}?a=1&b=2"
    assert done.text == f"Hallo Anna\n\n{footer}\n"
    assert done.html is not None
    assert f'<a href="{SERVICE}?a=1&amp;b=2">Abmelden</a></p>\n</body></html>' in done.html


def test_the_footer_is_english_unless_the_distribution_is_german() -> None:
    rendered = Rendered("s", "Hi", None, None)
    assert "Unsubscribe: " + SERVICE in with_unsubscribe_link(rendered, SERVICE, None).text
    assert "Unsubscribe: " + SERVICE in with_unsubscribe_link(rendered, SERVICE, "en").text


def test_a_template_that_shows_the_link_gets_no_footer() -> None:
    url = f"{SERVICE}?a=1&b=2"
    rendered = Rendered("s", f"Abmelden: {url}\n", f'<a href="{SERVICE}?a=1&amp;b=2">x</a>', None)
    assert with_unsubscribe_link(rendered, url, "de") is rendered


def test_only_the_part_without_the_link_gets_the_footer() -> None:
    rendered = Rendered("s", "no link here", f'<a href="{SERVICE}">Abmelden</a>', None)
    done = with_unsubscribe_link(rendered, SERVICE, "de")
    assert done.html == rendered.html
    assert SERVICE in done.text


# through the preparer -------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> Client:
    config = load_config(
        environ={},
        overrides={
            "database": str(tmp_path / "db.sqlite3"),
            "api": {"secret": SECRET, "public_url": "https://mailer.test"},
        },
    )
    async with App(config) as app:
        yield Client(app)


async def prepare(client: Client, dist) -> EmailMessage:
    accepted = await client.enqueue(dist, [RecipientInput("a@dest.test", "Anna", {"token": "t0"})])
    send = await client.app.store.send(accepted.sends[0].id)
    preparer = Preparer(client.app.store.distribution, unsubscribe=LINKS)
    prepared = await preparer.prepare(send, now=1_800_000_000.0)
    message = message_from_bytes(prepared.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def test_an_https_url_not_declared_one_click_stays_out_of_the_header(client) -> None:
    message = await prepare(client, SURVEY)
    [header] = message.get_all("List-Unsubscribe")
    assert header.startswith("<https://mailer.test/u/")
    assert "survey.test" not in header
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parts(message)
    assert OWN in text
    assert OWN in html


async def test_a_url_declared_one_click_is_the_header_and_the_body_link(client) -> None:
    message = await prepare(client, replace(SURVEY, unsubscribe_one_click=True))
    assert message["List-Unsubscribe"] == f"<{OWN}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, html = parts(message)
    assert OWN in text
    assert OWN in html


async def test_a_message_without_a_link_in_its_template_gets_a_german_footer(client) -> None:
    dist = replace(SURVEY, unsubscribe_url=None, language="de")
    message = await prepare(client, dist)
    url = message["List-Unsubscribe"].strip("<>")
    text, html = parts(message)
    assert f"Abmelden: {url}" in text
    assert f'<a href="{url}">Abmelden</a>' in html


async def test_one_click_needs_an_https_url_and_language_is_de_or_en(client) -> None:
    bad = [
        (
            replace(SURVEY, unsubscribe_url=None, unsubscribe_one_click=True),
            "unsubscribe_one_click",
        ),
        (
            replace(SURVEY, unsubscribe_url="mailto:u@survey.test", unsubscribe_one_click=True),
            "unsubscribe_one_click",
        ),
        (replace(SURVEY, language="fr"), "language"),
    ]
    for dist, field in bad:
        with pytest.raises(ValidationError) as caught:
            await prepare(client, dist)
        assert caught.value.field == field
    assert await client.app.store.counts() == {}
