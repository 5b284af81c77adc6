"""The operator console over HTTP (httpx against the ASGI app, a real
SQLite store): login and its cookie, sessions that end with their key,
CSRF on every form, the Content-Security-Policy on every page, and field
errors that change nothing. The browser tests are in
tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mailer.accounts import create_key, new_account
from mailer.app import App
from mailer.cli import cli as main
from mailer.cli.serve import service_api
from mailer.client import Client
from mailer.config import Config
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.reasons import Reason, State
from mailer.store.models import NewDistribution, SendFilter
from mailer.ui.session import SESSION_COOKIE
from tests.conftest import make_config

OPERATOR_KEY = "console-operator-key-0123456789"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PAGES = ("/", "/queue", "/holds", "/suppressions", "/check-domain", "/replay?state=failed")


@dataclass
class World:
    app: App
    http: httpx.AsyncClient
    account_key: str
    operator_key: str
    operator_key_id: str


@pytest.fixture
def config(tmp_path: Path, dns_server: DNSServer, smtp_port: int) -> Config:
    return make_config(
        tmp_path, dns_server, smtp_port, api={"keys": [OPERATOR_KEY], "secret": "s" * 32}
    )


@pytest.fixture
async def world(config: Config) -> AsyncIterator[World]:
    async with App(config) as app:
        await app.store.add_account(new_account("acme", now=1.0))
        _, account_key = await create_key(app.store, "acme", operator=False, name=None, now=1.0)
        stored, operator_key = await create_key(
            app.store, "acme", operator=True, name="ops", now=1.0
        )
        transport = httpx.ASGITransport(app=service_api(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield World(app, http, account_key, operator_key, stored.id)


async def login(http: httpx.AsyncClient, key: str = OPERATOR_KEY) -> httpx.Response:
    page = await http.get("/ui/login")
    token = CSRF.search(page.text)
    assert token is not None
    return await http.post("/ui/login", data={"key": key, "csrf": token.group(1)})


async def csrf_of(http: httpx.AsyncClient, path: str = "/ui/holds") -> str:
    found = CSRF.search((await http.get(path)).text)
    assert found is not None
    return found.group(1)


async def test_a_page_without_a_session_redirects_to_login(world: World) -> None:
    for path in PAGES:
        reply = await world.http.get("/ui" + path)
        assert reply.status_code == 303, path
        assert reply.headers["location"] == "/ui/login"


async def test_login_sets_an_httponly_strict_cookie_and_every_page_has_a_csp(
    world: World,
) -> None:
    reply = await login(world.http)
    assert reply.status_code == 303
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Secure" not in cookie  # plain http here; see the https test
    assert OPERATOR_KEY not in cookie
    for path in PAGES:
        page = await world.http.get("/ui" + path)
        assert page.status_code == 200, (path, page.text[:300])
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp, path
        assert "default-src 'none'" in csp
    await world.http.post("/ui/logout", data={"csrf": await csrf_of(world.http)})
    login_page = await world.http.get("/ui/login")
    assert "unsafe-inline" not in login_page.headers["content-security-policy"]
    assert (await world.http.get("/ui/")).status_code == 303  # logged out


async def test_the_cookie_is_secure_over_https(world: World) -> None:
    transport = httpx.ASGITransport(app=service_api(world.app))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as https:
        reply = await login(https)
        assert reply.status_code == 303
        assert "Secure" in reply.headers["set-cookie"]
        assert (await https.get("/ui/")).status_code == 200


async def test_a_stored_operator_key_logs_in_and_its_revocation_ends_the_session(
    world: World,
) -> None:
    assert (await login(world.http, world.operator_key)).status_code == 303
    assert (await world.http.get("/ui/queue")).status_code == 200
    assert await world.app.store.revoke_api_key(world.operator_key_id, now=time.time())
    reply = await world.http.get("/ui/queue")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/ui/login"


async def test_an_account_key_cannot_log_in(world: World) -> None:
    reply = await login(world.http, world.account_key)
    assert reply.status_code == 401
    assert "account&#39;s key" in reply.text or "account's key" in reply.text
    assert f"{SESSION_COOKIE}=" not in reply.headers.get("set-cookie", "")
    assert (await world.http.get("/ui/")).status_code == 303


async def test_a_wrong_key_or_a_login_without_its_token_is_refused(world: World) -> None:
    reply = await login(world.http, "mk_not-a-key")
    assert reply.status_code == 401
    assert "not a valid API key" in reply.text
    await world.http.get("/ui/login")
    forged = await world.http.post("/ui/login", data={"key": OPERATOR_KEY, "csrf": "forged"})
    assert forged.status_code == 403
    assert (await world.http.get("/ui/")).status_code == 303


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    world: World,
) -> None:
    await login(world.http)
    for data in (
        {"kind": "domain", "value": "dest.test"},
        {"kind": "domain", "value": "dest.test", "csrf": "x"},
    ):
        reply = await world.http.post("/ui/holds", data=data)
        assert reply.status_code == 403
    assert await world.app.store.holds() == []
    token = await csrf_of(world.http)
    reply = await world.http.post(
        "/ui/holds", data={"kind": "domain", "value": "Dest.TEST", "csrf": token}
    )
    assert reply.status_code == 200
    assert "held domain dest.test" in reply.text
    assert [(h.kind, h.value) for h in await world.app.store.holds()] == [("domain", "dest.test")]


async def test_form_fields_are_named_with_their_error_and_nothing_changes(world: World) -> None:
    await login(world.http)
    token = await csrf_of(world.http)
    cases = [
        ("/ui/holds", {"kind": "domain", "value": "not a domain!"}, "domain"),
        ("/ui/holds", {"kind": "domain", "value": "dest.test", "note": "a\r\nBcc: x"}, "note"),
        ("/ui/accounts/hold", {"account": "acme", "account_note": "x\ny"}, "account_note"),
        ("/ui/accounts/release", {"account": "acme\r\nX: y"}, "account"),
        ("/ui/suppressions/add", {"address": "bad@", "owner": "global"}, "address"),
        ("/ui/suppressions/add", {"address": "a@b.test\r\nX: y", "owner": "global"}, "address"),
        ("/ui/distributions/cancel", {"cancel_distribution": "a\rb"}, "cancel_distribution"),
        ("/ui/replay", {"state": "failed", "note": "one\ntwo"}, "note"),
        ("/ui/replay", {}, "filter"),
    ]
    for path, data, field in cases:
        reply = await world.http.post(path, data={**data, "csrf": token})
        assert reply.status_code == 422, (path, data, reply.text[:500])
        assert f'<span class="field">{field}</span>' in reply.text, (path, field)
        assert "Nothing was changed" in reply.text
    assert await world.app.store.holds() == []
    assert await world.app.store.suppressions() == []
    assert await world.app.store.account_pauses() == []
    for query, field in (
        ("since=yesterday", "since"),
        ("domain=exa%20mple", "domain"),
        ("state=lost", "state"),
        ("limit=7", "limit"),
    ):
        reply = await world.http.get(f"/ui/queue?{query}")
        assert reply.status_code == 422, query
        assert f'<span class="field">{field}</span>' in reply.text, query
    reply = await world.http.get("/ui/check-domain?domain=bad_domain!")
    assert reply.status_code == 422
    assert '<span class="field">domain</span>' in reply.text


async def test_suppressions_add_search_remove_and_an_all_or_nothing_import(world: World) -> None:
    await login(world.http)
    token = await csrf_of(world.http, "/ui/suppressions")
    reply = await world.http.post(
        "/ui/suppressions/add",
        data={
            "address": "Anna@Dest.test",
            "owner": "acme",
            "reason": "suppressed-bounce",
            "csrf": token,
        },
    )
    assert reply.status_code == 200
    [entry] = await world.app.store.suppressions("acme")
    assert entry.address == "anna@dest.test"
    bad = "address\nok@dest.test\nnot-an-address\n"
    reply = await world.http.post(
        "/ui/suppressions/import",
        data={"import_owner": "global", "reason": "suppressed-bounce", "csrf": token},
        files={"csv": ("list.csv", bad.encode(), "text/csv")},
    )
    assert reply.status_code == 422
    assert "line 3" in reply.text
    assert await world.app.store.suppressions("") == []
    good = "address,reason\nok@dest.test,\nbye@dest.test,suppressed-unsubscribe\n"
    reply = await world.http.post(
        "/ui/suppressions/import",
        data={"import_owner": "global", "reason": "suppressed-bounce", "csrf": token},
        files={"csv": ("list.csv", good.encode(), "text/csv")},
    )
    assert reply.status_code == 200
    assert "imported 2 of 2" in reply.text
    found = await world.http.get("/ui/suppressions?q=bye")
    assert "bye@dest.test" in found.text
    assert "ok@dest.test" not in found.text
    reply = await world.http.post(
        "/ui/suppressions/remove", data={"account": "", "address": "bye@dest.test", "csrf": token}
    )
    assert "removed from the global list" in reply.text
    assert [e.address for e in await world.app.store.suppressions("")] == ["ok@dest.test"]


async def test_an_account_hold_and_a_cancel_go_through_the_cli_twins_code(world: World) -> None:
    client = Client(world.app)
    accepted = await client.enqueue(
        NewDistribution(
            account="acme",
            sender_address="hr@acme.test",
            sender_name="ACME",
            subject="Umfrage",
            html=None,
            text="Hallo",
        ),
        [RecipientInput("a@dest.test"), RecipientInput("b@dest.test")],
    )
    await login(world.http)
    token = await csrf_of(world.http)
    reply = await world.http.post("/ui/accounts/hold", data={"account": "acme", "csrf": token})
    assert "held account acme: 2 waiting send(s) now held" in reply.text
    assert (await world.app.store.counts()).get(State.HELD) == 2
    reply = await world.http.post("/ui/accounts/release", data={"account": "acme", "csrf": token})
    assert "released account acme: 2 send(s) queued" in reply.text
    reply = await world.http.post(
        "/ui/distributions/cancel",
        data={"cancel_distribution": accepted.distribution_id, "csrf": token},
    )
    assert f"cancelled 2 send(s) of distribution {accepted.distribution_id}" in reply.text
    events = await world.app.store.events(limit=100)
    assert [e.reason for e in events].count(Reason.CANCELLED) == 2
    sends = await world.app.store.list_sends(SendFilter(), limit=10)
    page = await world.http.get(f"/ui/sends/{sends[0].id}")
    assert page.status_code == 200
    assert "cancelled" in page.text
    assert "released" in page.text
    assert (await world.http.get("/ui/sends/nope")).status_code == 404


async def test_hold_release_and_cancel_write_the_same_events_as_their_cli_twins(
    world: World, config: Config, tmp_path: Path
) -> None:
    client = Client(world.app)
    survey = NewDistribution(
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="Umfrage",
        html=None,
        text="Hallo",
    )
    by_cli = await client.enqueue(survey, [RecipientInput("a@one.test")])
    by_console = await client.enqueue(survey, [RecipientInput("b@two.test")])
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')

    def cli(*args: str) -> None:
        result = CliRunner().invoke(main, ["--config", str(path), *args])
        assert result.exit_code == 0, result.output

    await asyncio.to_thread(cli, "hold", "one.test", "--note", "maintenance")
    await asyncio.to_thread(cli, "release", "one.test")
    await asyncio.to_thread(cli, "cancel", by_cli.distribution_id)
    await login(world.http)
    token = await csrf_of(world.http)
    for path_, data in (
        ("/ui/holds", {"kind": "domain", "value": "two.test", "note": "maintenance"}),
        ("/ui/holds/release", {"kind": "domain", "value": "two.test"}),
        ("/ui/distributions/cancel", {"cancel_distribution": by_console.distribution_id}),
    ):
        reply = await world.http.post(path_, data={**data, "csrf": token})
        assert reply.status_code == 200, reply.text[:300]

    async def story(send_id: str, domain: str) -> list[tuple[str, str, str | None]]:
        events = await world.app.store.events(send_id=send_id, limit=100)
        # the one difference: each names its own domain
        return [
            (e.state.value, e.reason.value, e.detail and e.detail.replace(domain, "DOMAIN"))
            for e in events
        ]

    cli_story = await story(by_cli.sends[0].id, "one.test")
    console_story = await story(by_console.sends[0].id, "two.test")
    assert cli_story == console_story
    assert [reason for _, reason, _ in cli_story] == ["queued", "held", "released", "cancelled"]


async def test_the_queue_pages_by_id_and_filters_by_account(world: World) -> None:
    client = Client(world.app)
    await world.app.store.add_account(new_account("beta", now=1.0))
    survey = NewDistribution(
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="Umfrage",
        html=None,
        text="Hallo",
    )
    await client.enqueue(survey, [RecipientInput(f"u{i}@dest.test") for i in range(30)])
    beta = dataclasses.replace(survey, account="beta")
    await client.enqueue(beta, [RecipientInput("only@beta.test")])
    await login(world.http)
    first = await world.http.get("/ui/queue?account=acme&state=queued&limit=25")
    assert first.status_code == 200
    assert first.text.count('href="/ui/sends/') == 25
    assert "only@beta.test" not in first.text
    found = re.search(r'id="next-page" href="([^"]+)"', first.text)
    assert found is not None
    second = await world.http.get(found.group(1).replace("&amp;", "&"))
    assert second.text.count('href="/ui/sends/') == 5
    assert 'id="next-page"' not in second.text
    assert "u0@dest.test" not in second.text
    only_beta = await world.http.get("/ui/queue?account=beta")
    assert only_beta.text.count('href="/ui/sends/') == 1
    assert "only@beta.test" in only_beta.text
    # the console's root without its slash still arrives
    assert (await world.http.get("/ui", follow_redirects=True)).status_code == 200


async def test_an_account_held_from_the_cli_shows_on_the_holds_page_and_releases_there(
    world: World, config: Config, tmp_path: Path
) -> None:
    survey = NewDistribution(
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="Umfrage",
        html=None,
        text="Hallo",
    )
    await Client(world.app).enqueue(survey, [RecipientInput("a@dest.test")])
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    args = ["--config", str(path), "hold", "--account", "acme", "--note", "complaints"]
    result = await asyncio.to_thread(CliRunner().invoke, main, args)
    assert result.exit_code == 0, result.output
    assert "held account acme: 1 waiting send(s) now held" in result.output
    await login(world.http)
    page = await world.http.get("/ui/holds")
    assert 'aria-label="Release account acme"' in page.text
    assert "complaints" in page.text
    reply = await world.http.post(
        "/ui/accounts/release", data={"account": "acme", "csrf": await csrf_of(world.http)}
    )
    assert "released account acme: 1 send(s) queued" in reply.text
    assert (await world.app.store.counts()).get(State.QUEUED) == 1


async def test_the_overview_counts_sends_per_destination_domain_and_state(world: World) -> None:
    client = Client(world.app)
    survey = NewDistribution(
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="Umfrage",
        html=None,
        text="Hallo",
    )
    people = [RecipientInput(f"u{i}@dest.test") for i in range(3)]
    await client.enqueue(survey, [*people, RecipientInput("x@other.test")])
    await world.app.store.hold("domain", "other.test", now=time.time())
    await login(world.http)
    page = (await world.http.get("/ui/")).text
    section = page[page.index('id="destinations"') :]
    # the busiest domain first, each state linking to the queue it counts
    assert section.index("dest.test") < section.index("other.test")
    assert 'href="/ui/queue?state=queued&amp;domain=dest.test">queued 3</a>' in section
    assert 'href="/ui/queue?domain=other.test"' in section
