"""The API's pure pieces (tokens, form parsing, error fields, key checks,
config) and the in-process client and preparer hook without HTTP."""

from __future__ import annotations

import base64
import email.policy
import json
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pydantic
import pytest

from mailer.api.auth import key_matches
from mailer.api.errors import field_of
from mailer.api.models import DistributionIn
from mailer.api.unsubscribe import form_fields
from mailer.app import App
from mailer.client import Client, IdempotencyConflict, NoValidRecipient, request_hash
from mailer.config import load_config
from mailer.enqueue import CompiledTemplates
from mailer.errors import ConfigError, TemplateError, ValidationError
from mailer.message.templates import Content
from mailer.message.unsubscribe import (
    UnsubscribeLinks,
    UnsubscribeToken,
    legacy_token,
    read_token,
    seal_token,
)
from mailer.prepare import Preparer
from mailer.reasons import Reason, State
from tests.conftest import SURVEY
from tests.kit import people

SECRET = b"a-secret-of-enough-length"
LINKS = UnsubscribeLinks(SECRET, "https://mailer.test/")


# tokens ----------------------------------------------------------------------


def test_token_round_trips_and_binds_account_address_and_send() -> None:
    token = seal_token(SECRET, UnsubscribeToken("acme", "Anna@Dest.test", "s1", "de"))
    assert read_token(SECRET, token) == UnsubscribeToken("acme", "anna@dest.test", "s1", "de")
    assert token.isascii()
    assert "/" not in token
    assert "+" not in token
    assert "=" not in token


def test_token_reveals_neither_address_nor_account() -> None:
    token = seal_token(SECRET, UnsubscribeToken("acme-corp", "anna.schaefer@dest.test", "s1"))
    padded = token + "=" * (-len(token) % 4)
    decoded = base64.urlsafe_b64decode(padded)
    for secret_part in (b"anna", b"schaefer", b"dest.test", b"acme"):
        assert secret_part not in decoded
    assert "." not in token
    # the same send gets a new token each time: nothing to correlate
    assert token != seal_token(
        SECRET, UnsubscribeToken("acme-corp", "anna.schaefer@dest.test", "s1")
    )


def test_links_already_sent_in_the_old_readable_format_still_work() -> None:
    old = legacy_token(SECRET, UnsubscribeToken("acme", "Anna@Dest.test", "s1"))
    assert "." in old
    assert LINKS.read(old) == UnsubscribeToken("acme", "anna@dest.test", "s1")
    assert read_token(SECRET, old).language is None


def test_token_with_unicode_account_round_trips() -> None:
    token = seal_token(SECRET, UnsubscribeToken("Müller AG", "a@bücher.test", "s"))
    assert read_token(SECRET, token).account == "Müller AG"


def _flip_last(token: str) -> str:
    # the second-to-last character: the last one may carry only padding bits
    return token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: "x" + t,
        _flip_last,
        lambda t: t[:20],
        lambda t: t + "." + t,
        lambda t: seal_token(b"another-secret-entirely", read_token(SECRET, t)),
        lambda t: legacy_token(b"another-secret-entirely", read_token(SECRET, t)),
        lambda t: "",
        lambda t: "a.b.c",
        lambda t: "====.====",
        lambda t: "x" * 5000,
    ],
)
def test_altered_or_foreign_token_is_refused(mangle) -> None:
    token = seal_token(SECRET, UnsubscribeToken("acme", "a@dest.test", "s1"))
    with pytest.raises(ValidationError) as caught:
        read_token(SECRET, mangle(token))
    assert caught.value.field == "token"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(".", ""),
        lambda t: t.split(".")[0] + "." + t.split(".")[0],
        _flip_last,
    ],
)
def test_altered_old_format_token_is_refused(mangle) -> None:
    token = legacy_token(SECRET, UnsubscribeToken("acme", "a@dest.test", "s1"))
    with pytest.raises(ValidationError) as caught:
        read_token(SECRET, mangle(token))
    assert caught.value.field == "token"


def test_links_make_urls_under_the_public_url() -> None:
    url = LINKS.url("acme", "a@dest.test", "s1")
    assert url.startswith("https://mailer.test/u/")
    assert LINKS.read(url.rsplit("/", 1)[1]).address == "a@dest.test"


# form bodies, error fields, keys -------------------------------------------------


def test_form_fields_reads_urlencoded_and_multipart() -> None:
    assert form_fields("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click") == {
        "List-Unsubscribe": ["One-Click"]
    }
    multipart = (
        b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n--XyZ--\r\n"
    )
    assert form_fields("multipart/form-data; boundary=XyZ", multipart) == {
        "List-Unsubscribe": ["One-Click"]
    }
    assert form_fields("multipart/form-data; boundary=XyZ", b"\xff\x00garbage") == {}
    assert form_fields("", b"\xff=\xfe") == {"\ufffd": ["\ufffd"]}


@pytest.mark.parametrize(
    ("loc", "field"),
    [
        (("body", "recipients", 3, "email"), "recipients[3].email"),
        (("body", "sender", "name"), "sender.name"),
        (("body",), "body"),
        (("query", "limit"), "limit"),
        (("header", "Idempotency-Key"), "Idempotency-Key"),
        (("body", "tags", 0), "tags[0]"),
        ((), "request"),
    ],
)
def test_field_of_names_the_place_in_the_request(loc, field) -> None:
    assert field_of(loc) == field


def test_key_matches_only_a_configured_key() -> None:
    keys = [b"first-key-0123456789", b"second-key-0123456789"]
    assert key_matches("second-key-0123456789", keys)
    assert not key_matches("second-key-012345678", keys)
    assert not key_matches("", keys)
    assert not key_matches("first-key-0123456789", [])
    assert not key_matches("\udcff", keys)


# config --------------------------------------------------------------------------


def test_api_config_from_environment() -> None:
    config = load_config(
        environ={
            "MAILER_API__KEYS": "key-one-0123456789abc, key-two-0123456789abc",
            "MAILER_API__SECRET": "12345678901234567890",
            "MAILER_API__PUBLIC_URL": "https://mail.example.test/",
            "MAILER_API__LISTEN": "0.0.0.0:9000",
        }
    )
    assert config.api.keys == ("key-one-0123456789abc", "key-two-0123456789abc")
    assert config.api.secret == "12345678901234567890"
    assert config.api.public_url == "https://mail.example.test"
    assert config.api.listen_address == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"MAILER_API__KEYS": "short"}, "api.keys"),
        ({"MAILER_API__SECRET": "short"}, "api.secret"),
        ({"MAILER_API__PUBLIC_URL": "http://mail.example.test"}, "api.public_url"),
        ({"MAILER_API__PUBLIC_URL": "https://m.test/?x=1"}, "api.public_url"),
        ({"MAILER_API__LISTEN": "nowhere:99999"}, "api.listen"),
        ({"MAILER_API__MAX_BODY": "10"}, "api.max_body"),
    ],
)
def test_bad_api_config_names_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    assert caught.value.key == key


def test_list_keys_from_environment_stay_strings() -> None:
    config = load_config(environ={"MAILER_API__KEYS": "1234567890123456789"})
    assert config.api.keys == ("1234567890123456789",)


# the client without HTTP -------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path) -> Client:
    config = load_config(
        environ={},
        overrides={
            "database": str(tmp_path / "db.sqlite3"),
            "api": {"secret": SECRET.decode(), "public_url": "https://mailer.test"},
        },
    )
    async with App(config) as app:
        yield Client(app)


async def test_client_replays_an_idempotent_enqueue_and_refuses_another_body(client) -> None:
    first = await client.enqueue(SURVEY, people("a@dest.test", "bad@"), idempotency_key="k1")
    again = await client.enqueue(SURVEY, people("a@dest.test", "bad@"), idempotency_key="k1")
    assert again == replace(first, replayed=True)
    with pytest.raises(IdempotencyConflict):
        await client.enqueue(SURVEY, people("b@dest.test"), idempotency_key="k1")
    assert await client.app.store.counts() == {State.QUEUED: 1}
    with pytest.raises(ValidationError) as caught:
        await client.enqueue(SURVEY, people("a@dest.test"), idempotency_key="\x00")
    assert caught.value.field == "Idempotency-Key"


def test_request_hash_is_about_content() -> None:
    assert request_hash(SURVEY, people("a@dest.test")) == request_hash(
        SURVEY, people("a@dest.test")
    )
    assert request_hash(SURVEY, people("a@dest.test")) != request_hash(
        SURVEY, people("b@dest.test")
    )
    other = replace(SURVEY, subject="x")
    assert request_hash(SURVEY, people("a@dest.test")) != request_hash(other, people("a@dest.test"))


async def test_client_reports_every_rejection_when_none_is_valid(client) -> None:
    with pytest.raises(NoValidRecipient) as caught:
        await client.enqueue(SURVEY, people("x@", "y@"))
    assert [r.index for r in caught.value.rejected] == [0, 1]


async def test_templates_may_use_the_service_unsubscribe_url_only_with_links(
    client, tmp_path: Path
) -> None:
    dist = replace(SURVEY, unsubscribe_url=None, text="Abmelden: {{ unsubscribe_url }}")
    accepted = await client.enqueue(dist, people("a@dest.test"))
    send = await client.app.store.send(accepted.sends[0].id)
    assert "unsubscribe_url" not in send.variables
    plain = load_config(environ={}, overrides={"database": str(tmp_path / "plain.sqlite3")})
    async with App(plain) as app:
        with pytest.raises(TemplateError) as caught:
            await Client(app).enqueue(dist, people("a@dest.test"))
    assert caught.value.field == "text"


async def test_client_unsubscribe_suppresses_once(client) -> None:
    accepted = await client.enqueue(SURVEY, people("Anna@dest.test"))
    token = client.links.token("acme", "anna@dest.test", accepted.sends[0].id)
    assert client.unsubscribe_target(token).address == "anna@dest.test"
    assert (await client.unsubscribe(token)).changed
    assert not (await client.unsubscribe(token)).changed
    [suppression] = await client.app.store.suppressions("acme")
    assert suppression.reason is Reason.SUPPRESSED_UNSUBSCRIBE
    with pytest.raises(ValidationError):
        await client.unsubscribe(token[:-2])


async def test_events_page_bounds_are_validated(client) -> None:
    with pytest.raises(ValidationError) as caught:
        await client.events(-1)
    assert caught.value.field == "after"
    with pytest.raises(ValidationError) as caught:
        await client.events(0, 0)
    assert caught.value.field == "limit"
    page = await client.events(10**6, 5)
    assert (page.events, page.next) == ([], 10**6)


# the preparer hook ------------------------------------------------------------------


async def test_preparer_uses_the_service_link_when_the_distribution_has_none(client) -> None:
    dist = replace(SURVEY, unsubscribe_url=None, text="Abmelden: {{ unsubscribe_url }}")
    accepted = await client.enqueue(dist, people("a@dest.test"))
    send = await client.app.store.send(accepted.sends[0].id)
    preparer = Preparer(client.app.store.distribution, unsubscribe=LINKS)
    prepared = await preparer.prepare(send, now=1_800_000_000.0)
    message = message_from_bytes(prepared.data, policy=email.policy.default)
    url = message["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://mailer.test/u/")
    assert LINKS.read(url.rsplit("/", 1)[1]) == UnsubscribeToken("acme", "a@dest.test", send.id)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",))
    assert text is not None
    assert url in text.get_content()


# lone surrogates -------------------------------------------------------------

_SURROGATE = "\ud800"


def _request() -> dict[str, Any]:
    return {
        "account": "acme",
        "sender": {"address": "hr@acme.test", "name": "HR"},
        "subject": "s",
        "html": "h",
        "text": "t",
        "unsubscribe_url": "https://acme.test/u",
        "tags": ["t"],
        "recipients": [
            {"email": "a@dest.test", "name": "A", "variables": {"k": "v"}, "reference": "r"}
        ],
    }


def _request_with_surrogate(path: tuple[str | int, ...]) -> dict[str, Any]:
    body = _request()
    if path[-1] == "variables-key":
        body["recipients"][0]["variables"] = {_SURROGATE: "v"}
        return body
    target: Any = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = _SURROGATE
    return body


@pytest.mark.parametrize(
    "path",
    [
        ("account",),
        ("sender", "address"),
        ("sender", "name"),
        ("subject",),
        ("html",),
        ("text",),
        ("unsubscribe_url",),
        ("tags", 0),
        ("recipients", 0, "email"),
        ("recipients", 0, "name"),
        ("recipients", 0, "variables", "k"),
        ("recipients", 0, "variables-key"),
        ("recipients", 0, "reference"),
    ],
)
def test_lone_surrogate_in_any_string_of_a_request_is_refused_there(
    path: tuple[str | int, ...],
) -> None:
    DistributionIn.model_validate(_request())
    body = _request_with_surrogate(path)
    with pytest.raises(pydantic.ValidationError) as python_mode:
        DistributionIn.model_validate(body)
    [error] = python_mode.value.errors()
    assert error["type"] == "string_unicode"
    named = (*path[:-1], "variables") if path[-1] == "variables-key" else path
    assert error["loc"][: len(named)] == named
    # pydantic's JSON parser refuses the escape before any field sees it
    raw = json.dumps(body).encode()
    with pytest.raises(pydantic.ValidationError) as json_mode:
        DistributionIn.model_validate_json(raw)
    assert [e["type"] for e in json_mode.value.errors()] == ["json_invalid"]


# compiled templates kept between requests --------------------------------------


def test_templates_are_compiled_once_per_source_and_the_oldest_dropped() -> None:
    templates = CompiledTemplates(size=2)
    first = Content(subject="Hallo {{ name }}", html="<p>1</p>", text=None)
    second = Content(subject="Hallo {{ name }}", html="<p>2</p>", text=None)
    third = Content(subject="Hallo {{ name }}", html="<p>3</p>", text=None)
    compiled = templates.compile(first)
    assert templates.compile(replace(first)) is compiled  # equal, not the same object
    templates.compile(second)
    templates.compile(third)
    assert templates.compile(first) is not compiled  # dropped, compiled anew
    assert templates.compile(third) is templates.compile(third)


def test_a_refused_template_is_refused_again() -> None:
    templates = CompiledTemplates()
    broken = Content(subject="Hallo {{ name", html="<p>x</p>", text=None)
    for _ in range(2):
        with pytest.raises(TemplateError) as refused:
            templates.compile(broken)
        assert refused.value.field == "subject"
