"""Accounts over HTTP: every /v1 route acts for the key's account, another
account's object is a 404 exactly like one that does not exist, operator
routes are a 403, keys are refused the moment they are revoked and never
appear in logs or in the database."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mailer.accounts import create_key, new_account
from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.cli import cli
from mailer.config import Config
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Outcome
from tests.conftest import make_config

OPERATOR_KEY = "operator-config-key-0123456789"
MISSING = "0000000000000000000000000000"


def body(addresses: list[str], **changes: Any) -> dict[str, Any]:
    return {
        "sender": {"address": "hr@acme.test", "name": "ACME HR"},
        "subject": "Geheime Umfrage",
        "text": "Hallo {{ name }}",
        "recipients": [{"email": a, "reference": f"ref-{a}"} for a in addresses],
        **changes,
    }


@dataclass
class World:
    app: App
    http: httpx.AsyncClient
    keys: dict[str, str]
    dist: str = ""
    sends: list[str] = field(default_factory=list)
    hook: str = ""
    # what account acme has that no other key may ever read back
    secrets: list[str] = field(default_factory=list)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
def config(tmp_path: Path, dns_server: DNSServer, smtp_port: int) -> Config:
    return make_config(
        tmp_path,
        dns_server,
        smtp_port,
        api={"keys": [OPERATOR_KEY]},
        # acme's webhook endpoint is on loopback; nothing is delivered here
        webhooks={"allow_insecure": True, "allow": ["127.0.0.0/8"]},
    )


@pytest.fixture
async def world(config: Config) -> AsyncIterator[World]:
    async with App(config) as app, ApiServer(create_api(app)) as server:
        keys = {}
        for account in ("acme", "beta"):
            await app.store.add_account(new_account(account, now=1.0))
            _, keys[account] = await create_key(
                app.store, account, operator=False, name=None, now=1.0
            )
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            w = World(app, http, keys)
            addresses = ["anna@dest.test", "bert@dest.test", "carl@dest.test"]
            reply = await http.post(
                "/v1/distributions", json=body(addresses), headers=w.auth("acme")
            )
            assert reply.status_code == 202, reply.text
            w.dist = reply.json()["distribution_id"]
            w.sends = [s["id"] for s in reply.json()["sends"]]
            # one bounced send to replay, one address on acme's list
            claimed = await app.store.claim("t", 10, lease_seconds=60, now=2e9)
            bounce = Attempt(2e9, 2e9, Reason.MAILBOX_UNKNOWN, code=550, text="no such user")
            outcome = Outcome(w.sends[0], State.BOUNCED, Reason.MAILBOX_UNKNOWN, attempt=bounce)
            await app.store.complete("t", [outcome], now=2e9)
            await app.store.release("t", [c.send.id for c in claimed[1:]], now=2e9)
            await app.store.suppress("acme", "dora@dest.test", Reason.SUPPRESSED_BOUNCE, now=3.0)
            hook = await app.webhooks().add("acme", "http://127.0.0.1:9/acme-hook")
            w.hook = hook.endpoint.id
            w.secrets = [w.dist, *w.sends, *addresses, "dora@dest.test", "Geheime", "ref-anna"]
            w.secrets += [w.hook, "acme-hook", hook.secret]
            yield w


@dataclass(frozen=True)
class Probe:
    """One request of beta's key aimed at acme's mail, and what must come
    back: ``status`` (a 404 or 403), or 200 with none of acme's data."""

    method: str
    url: str
    status: int
    json: dict[str, Any] | None = None


def probes(w: World) -> dict[tuple[str, str], list[Probe]]:
    """Every /v1 route (method, path template) with the requests that walk
    it; a route that is missing here fails the test."""
    d, s, h = w.dist, w.sends[0], w.hook
    return {
        ("POST", "/v1/distributions"): [
            Probe("POST", "/v1/distributions", 404, body(["x@dest.test"], account="acme")),
        ],
        ("GET", "/v1/distributions"): [
            Probe("GET", "/v1/distributions", 200),
            Probe("GET", "/v1/distributions?account=acme", 404),
        ],
        ("GET", "/v1/distributions/{distribution_id}"): [
            Probe("GET", f"/v1/distributions/{d}", 404),
        ],
        ("DELETE", "/v1/distributions/{distribution_id}"): [
            Probe("DELETE", f"/v1/distributions/{d}", 404),
        ],
        ("GET", "/v1/sends"): [
            Probe("GET", "/v1/sends", 200),
            Probe("GET", f"/v1/sends?distribution={d}", 200),
            Probe("GET", "/v1/sends?recipient=bert@dest.test&state=queued", 200),
            Probe("GET", "/v1/sends?account=acme", 404),
        ],
        ("GET", "/v1/sends/{send_id}"): [Probe("GET", f"/v1/sends/{i}", 404) for i in w.sends],
        ("POST", "/v1/sends/{send_id}/replay"): [
            Probe("POST", f"/v1/sends/{s}/replay", 404),
            Probe("POST", f"/v1/sends/{s}/replay?include_suppressed=true", 404),
        ],
        ("POST", "/v1/replays"): [
            Probe("POST", "/v1/replays", 200, {}),
            Probe("POST", "/v1/replays", 200, {"distribution": d}),
            Probe("POST", "/v1/replays", 404, {"account": "acme", "dry_run": True}),
        ],
        ("GET", "/v1/events"): [
            Probe("GET", "/v1/events", 200),
            Probe("GET", "/v1/events?account=acme", 404),
        ],
        ("GET", "/v1/suppressions"): [
            Probe("GET", "/v1/suppressions", 200),
            Probe("GET", "/v1/suppressions?account=acme", 404),
        ],
        ("POST", "/v1/suppressions"): [
            Probe(
                "POST",
                "/v1/suppressions",
                404,
                {"account": "acme", "entries": [{"address": "eve@dest.test"}]},
            ),
        ],
        ("DELETE", "/v1/suppressions/{address}"): [
            Probe("DELETE", "/v1/suppressions/dora@dest.test", 404),
            Probe("DELETE", "/v1/suppressions/dora@dest.test?account=acme", 404),
        ],
        ("GET", "/v1/stats"): [
            Probe("GET", "/v1/stats?account=acme", 404),
            Probe("GET", "/v1/stats", 200),
        ],
        ("GET", "/v1/accounts/{account_id}"): [
            Probe("GET", "/v1/accounts/acme", 403),
            Probe("GET", "/v1/accounts/beta", 403),
        ],
        ("PATCH", "/v1/accounts/{account_id}"): [
            Probe("PATCH", "/v1/accounts/acme", 403, {"rate_cap": 1}),
        ],
        # a public domain's DNS diagnosis: no account's data behind it
        ("GET", "/v1/domains/{domain}/check"): [],
        ("POST", "/v1/webhooks"): [
            Probe("POST", "/v1/webhooks", 404, {"account": "acme", "url": "http://127.0.0.1:9/x"}),
        ],
        ("GET", "/v1/webhooks"): [
            Probe("GET", "/v1/webhooks", 200),
            Probe("GET", "/v1/webhooks?account=acme", 404),
        ],
        ("GET", "/v1/webhooks/{webhook_id}"): [Probe("GET", f"/v1/webhooks/{h}", 404)],
        ("PATCH", "/v1/webhooks/{webhook_id}"): [
            Probe("PATCH", f"/v1/webhooks/{h}", 404, {"description": "mine now"}),
        ],
        ("DELETE", "/v1/webhooks/{webhook_id}"): [Probe("DELETE", f"/v1/webhooks/{h}", 404)],
        ("POST", "/v1/webhooks/{webhook_id}/rotate"): [
            Probe("POST", f"/v1/webhooks/{h}/rotate", 404),
        ],
        ("GET", "/v1/webhooks/{webhook_id}/deliveries"): [
            Probe("GET", f"/v1/webhooks/{h}/deliveries", 404),
        ],
        ("POST", "/v1/webhooks/{webhook_id}/replay"): [
            Probe("POST", f"/v1/webhooks/{h}/replay?from=0", 404),
        ],
        ("POST", "/v1/webhooks/{webhook_id}/test"): [
            Probe("POST", f"/v1/webhooks/{h}/test", 404),
        ],
    }


def v1_routes(world: World) -> set[tuple[str, str]]:
    # the OpenAPI document lists every route the app serves
    paths = create_api(world.app).openapi()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1")
        for method in operations
    }


async def state_of(w: World) -> tuple[Any, ...]:
    store = w.app.store
    return (
        [await store.send(i) for i in w.sends],
        await store.suppressions("acme"),
        await store.account("acme"),
    )


async def test_another_accounts_key_gets_404_or_403_on_every_v1_route_never_data(
    world: World,
) -> None:
    table = probes(world)
    assert set(table) == v1_routes(world), "a /v1 route is not walked by this test"
    before = await state_of(world)
    for route, requests in table.items():
        for probe in requests:
            reply = await world.http.request(
                probe.method, probe.url, json=probe.json, headers=world.auth("beta")
            )
            assert reply.status_code == probe.status, (route, probe, reply.text)
            asked = probe.url + str(probe.json or "")
            leaked = [x for x in world.secrets if x in reply.text and x not in asked]
            assert not leaked, (route, probe, reply.text)
            if probe.status == 404 and world.dist in probe.url + str(probe.json):
                # exactly the answer for an id that does not exist
                missing = await world.http.request(
                    probe.method,
                    probe.url.replace(world.dist, MISSING),
                    json=probe.json,
                    headers=world.auth("beta"),
                )
                assert missing.status_code == 404
                assert missing.text == reply.text.replace(world.dist, MISSING)
    # and nothing of acme's changed
    assert await state_of(world) == before


async def test_the_owner_and_an_operator_see_what_another_account_cannot(world: World) -> None:
    for who in ("acme", "operator"):
        headers = (
            world.auth(who) if who != "operator" else {"Authorization": f"Bearer {OPERATOR_KEY}"}
        )
        reply = await world.http.get(f"/v1/distributions/{world.dist}", headers=headers)
        assert reply.status_code == 200, reply.text
        sends = await world.http.get(f"/v1/sends?distribution={world.dist}", headers=headers)
        assert [s["id"] for s in sends.json()["items"]] == world.sends
    events = await world.http.get("/v1/events", headers=world.auth("acme"))
    first = events.json()["events"][0]
    assert (first["account"], first["reference"]) == ("acme", "ref-anna@dest.test")


async def test_an_operator_key_must_name_the_account_it_enqueues_for(world: World) -> None:
    reply = await world.http.post(
        "/v1/distributions",
        json=body(["x@dest.test"]),
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
    )
    assert reply.status_code == 422
    assert "account" in reply.text
    patched = await world.http.patch(
        "/v1/accounts/beta",
        json={"rate_cap": 600, "priority": "bulk"},
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["rate_cap"], patched.json()["priority"]) == (600, "bulk")


async def test_a_replay_over_http_requeues_the_accounts_bounced_send(world: World) -> None:
    dry = await world.http.post("/v1/replays", json={"dry_run": True}, headers=world.auth("acme"))
    assert dry.json()["matching"] == 1
    assert dry.json()["requeued"] == 0
    done = await world.http.post(f"/v1/sends/{world.sends[0]}/replay", headers=world.auth("acme"))
    assert done.status_code == 200, done.text
    assert done.json()["requeued"] == 1
    assert (await world.app.store.send(world.sends[0])).state is State.QUEUED


async def test_a_replay_note_with_a_line_break_is_refused_over_http_as_in_the_cli(
    world: World,
) -> None:
    refused = await world.http.post(
        "/v1/replays", json={"note": "retry\r\nX-Injected: 1"}, headers=world.auth("acme")
    )
    assert refused.status_code == 422, refused.text
    assert "note" in refused.text
    # and nothing was requeued
    assert (await world.app.store.send(world.sends[0])).state is State.BOUNCED
    done = await world.http.post(
        "/v1/replays", json={"note": "mailbox fixed"}, headers=world.auth("acme")
    )
    assert done.json()["requeued"] == 1, done.text


def run_cli(path: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--config", str(path), *args])
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_revoked_key_is_refused_at_once_and_keys_are_never_logged_or_stored(
    world: World, config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    output = await asyncio.to_thread(
        run_cli, path, "apikeys", "create", "--account", "beta", "--name", "ci"
    )
    token = output.strip().splitlines()[-1]
    key_id = re.search(r"id: (\S+)", output)
    assert key_id is not None
    assert token.startswith("mk_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await world.http.get("/v1/events", headers=headers)).status_code == 200
    listed = await asyncio.to_thread(run_cli, path, "apikeys", "list", "--json")
    assert key_id.group(1) in listed
    assert token not in listed
    await asyncio.to_thread(run_cli, path, "apikeys", "revoke", key_id.group(1))
    refused = await world.http.get("/v1/events", headers=headers)
    assert refused.status_code == 401
    # nowhere in plaintext: not in the log records, not in the store's files
    assert token not in caplog.text
    for name in ("acme", "beta"):
        assert world.keys[name] not in caplog.text
    stored = b"".join(p.read_bytes() for p in Path(config.database).parent.glob("*sqlite*"))
    for secret in (token, *world.keys.values()):
        assert secret.encode() not in stored
    assert stored  # the files were read


async def test_accounts_cli_adds_lists_shows_and_sets(
    world: World, config: Config, tmp_path: Path
) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    added = await asyncio.to_thread(
        run_cli, path, "accounts", "add", "gamma", "--name", "Gamma GmbH", "--language", "de"
    )
    assert "language: de" in added
    changed = await asyncio.to_thread(
        run_cli, path, "accounts", "set", "gamma", "--rate-cap", "120", "--priority", "high"
    )
    assert "rate_cap: 120" in changed
    assert "priority: high" in changed
    shown = await asyncio.to_thread(run_cli, path, "accounts", "show", "gamma")
    assert "name: Gamma GmbH" in shown
    listed = await asyncio.to_thread(run_cli, path, "accounts", "list", "--json")
    assert [a["id"] for a in json.loads(listed)] == ["acme", "beta", "gamma"]
    bad = CliRunner().invoke(cli, ["--config", str(path), "accounts", "add", "bad id"])
    assert bad.exit_code == 1
    assert "id:" in bad.output


async def test_errors_are_rfc9457_problem_documents_with_coded_field_errors(world: World) -> None:
    reply = await world.http.post(
        "/v1/distributions",
        json=body(["not-an-address", "ok@dest.test"], priority="urgent"),
        headers=world.auth("acme"),
    )
    assert reply.status_code == 422
    assert reply.headers["content-type"] == "application/problem+json"
    doc = reply.json()
    assert (doc["type"], doc["title"], doc["status"]) == (
        "about:blank",
        "Unprocessable Entity",
        422,
    )
    assert isinstance(doc["detail"], str)
    assert doc["detail"].startswith("priority: ")
    assert doc["errors"][0]["field"] == "priority"
    assert doc["errors"][0]["code"] == "literal-error"
    missing = await world.http.get(f"/v1/sends/{MISSING}", headers=world.auth("acme"))
    assert missing.json()["errors"] == [
        {"field": "send_id", "reason": f"send {MISSING} not found", "code": "not-found"}
    ]
    unauthorized = await world.http.get("/v1/events")
    assert unauthorized.headers["content-type"] == "application/problem+json"
    assert unauthorized.json()["errors"][0]["code"] == "unauthorized"


async def test_events_name_their_type_with_unsubscribed_for_the_recipients_act(
    world: World,
) -> None:
    await world.app.store.unsubscribe(
        "acme", "bert@dest.test", now=4e9, send_id=world.sends[1], detail="one-click"
    )
    page = (await world.http.get("/v1/events?limit=1000", headers=world.auth("acme"))).json()
    types = [(e["send_id"], e["type"]) for e in page["events"]]
    assert (world.sends[0], "bounced") in types
    assert types[-1] == (world.sends[1], "unsubscribed")
    schema = create_api(world.app).openapi()["components"]["schemas"]["EventOut"]
    assert {"complained", "unsubscribed", "delivered"} <= set(schema["properties"]["type"]["enum"])
