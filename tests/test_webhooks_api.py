"""The /v1/webhooks routes over a served API: create (secret once), list,
get, patch, delete, rotate, deliveries, replay and test, each account
seeing only its own endpoints, bad input refused naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from tests.conftest import SURVEY
from tests.kit import numbered
from tests.test_webhooks_delivery import HOOK_HOST, Pushing, hook_config, until
from tests.webhook_receiver import Receiver

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
async def served(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> AsyncIterator[tuple[App, httpx.AsyncClient]]:
    dns_server.set(HOOK_HOST, "A", ["127.0.0.1"], ttl=0)
    dns_server.set("inside.test", "A", ["10.0.0.1"], ttl=0)
    config = hook_config(tmp_path, dns_server, smtp_port, None, allow=["127.0.0.0/8"])
    config = config.model_copy(update={"api": config.api.model_copy(update={"keys": (KEY,)})})
    async with (
        App(config) as app,
        ApiServer(create_api(app)) as server,
        httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as http,
    ):
        yield app, http


async def test_an_endpoint_is_created_with_its_secret_once_and_managed(
    served: tuple[App, httpx.AsyncClient], receiver: Receiver
) -> None:
    app, http = served
    body = {"account": "acme", "url": receiver.url(HOOK_HOST), "event_types": ["send.queued"]}
    created = await http.post("/v1/webhooks", json=body)
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_")
    assert hook["event_types"] == ["send.queued"]
    hook_id = hook["id"]

    listed = (await http.get("/v1/webhooks", params={"account": "acme"})).json()
    assert [h["id"] for h in listed] == [hook_id]
    assert "secret" not in listed[0]
    assert (await http.get("/v1/webhooks", params={"account": "other"})).json() == []
    other = await http.get(f"/v1/webhooks/{hook_id}", params={"account": "other"})
    assert other.status_code == 404
    assert other.json()["errors"][0]["field"] == "webhook_id"

    patched = await http.patch(
        f"/v1/webhooks/{hook_id}", params={"account": "acme"}, json={"description": "CRM"}
    )
    assert patched.json()["description"] == "CRM"

    tested = await http.post(f"/v1/webhooks/{hook_id}/test", params={"account": "acme"})
    assert tested.status_code == 200, tested.text
    assert tested.json()["status"] == 204
    [request] = receiver.snapshot()
    assert Webhook(hook["secret"]).verify(request.body, request.headers)[0]["type"] == (
        "webhook.test"
    )

    rotated = await http.post(f"/v1/webhooks/{hook_id}/rotate", params={"account": "acme"})
    assert rotated.json()["secret"] != hook["secret"]
    assert rotated.json()["previous_secret_until"] is not None

    await app.enqueue(SURVEY, numbered(3))
    async with Pushing(app):

        async def delivered() -> bool:
            return len(receiver.snapshot()) >= 2

        await until(delivered)
    log = await http.get(f"/v1/webhooks/{hook_id}/deliveries", params={"account": "acme"})
    [entry] = log.json()
    assert (entry["outcome"], entry["status"], entry["events"]) == ("delivered", 204, 3)
    replayed = await http.post(
        f"/v1/webhooks/{hook_id}/replay", params={"account": "acme", "from": 0}
    )
    assert replayed.json()["cursor"] == 0

    gone = await http.delete(f"/v1/webhooks/{hook_id}", params={"account": "acme"})
    assert gone.status_code == 204
    assert (await http.get(f"/v1/webhooks/{hook_id}", params={"account": "acme"})).status_code == (
        404
    )


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"account": "acme", "url": "https://inside.test/"}, "url", "private address"),
        ({"account": "acme", "url": "https://169.254.169.254/"}, "url", "metadata"),
        ({"account": "acme", "url": "https://h.test/\r\nX: 1"}, "url", "control"),
        (
            {"account": "acme", "url": "https://h.test/", "event_types": ["send.nope"]},
            "event_types[0]",
            "unknown event type",
        ),
        ({"url": "https://h.test/"}, "account", "required"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_stores_nothing(
    served: tuple[App, httpx.AsyncClient], body: dict[str, object], field: str, reason: str
) -> None:
    app, http = served
    refused = await http.post("/v1/webhooks", json=body)
    assert refused.status_code == 422
    [item] = refused.json()["errors"]
    assert item["field"] == field
    assert reason.lower() in item["reason"].lower()
    assert await app.webhooks().endpoints(None) == []


async def test_webhook_routes_need_an_api_key(served: tuple[App, httpx.AsyncClient]) -> None:
    _, http = served
    refused = await http.get(
        "/v1/webhooks", params={"account": "acme"}, headers={"Authorization": ""}
    )
    assert refused.status_code == 401


async def test_an_endpoint_gone_with_410_is_an_event_in_the_feed_and_at_the_other_endpoints(
    served: tuple[App, httpx.AsyncClient], receiver: Receiver
) -> None:
    app, http = served
    gone = Receiver(answer=lambda i: (410, {})).start()
    try:

        async def add(account: str, url: str) -> dict[str, str]:
            reply = await http.post("/v1/webhooks", json={"account": account, "url": url})
            assert reply.status_code == 201, reply.text
            created: dict[str, str] = reply.json()
            return created

        dead = await add("acme", gone.url(HOOK_HOST))
        alive = await add("acme", receiver.url(HOOK_HOST, "/acme"))
        other = await add("other", receiver.url(HOOK_HOST, "/other"))
        await app.enqueue(SURVEY, numbered(2))
        await app.enqueue(SURVEY.__class__(**{**SURVEY.__dict__, "account": "other"}), numbered(1))

        def announced() -> list[dict[str, object]]:
            return [
                e
                for r in receiver.snapshot()
                if r.path == "/acme"
                for e in r.events()
                if e["type"] == "webhook.disabled"
            ]

        async with Pushing(app):

            async def told() -> bool:
                others = [r for r in receiver.snapshot() if r.path == "/other"]
                return bool(announced()) and bool(others)

            await until(told)
            await asyncio.sleep(0.3)  # several poll intervals: nothing more arrives
        assert len(gone.snapshot()) == 1  # the 410, and nothing after it
    finally:
        gone.stop()

    # the endpoint that is still enabled gets it signed, after the sends' events
    pushed = [
        e
        for r in receiver.snapshot()
        if r.path == "/acme"
        for e in Webhook(alive["secret"]).verify(r.body, r.headers)
    ]
    assert [e["type"] for e in pushed] == ["send.queued", "send.queued", "webhook.disabled"]
    event = pushed[-1]
    assert event["data"] == {
        "account": "acme",
        "endpoint_id": dead["id"],
        "reason": "gone",
        "detail": "gone: the receiver answered 410",
    }
    assert [e["seq"] for e in pushed] == sorted(e["seq"] for e in pushed)
    # another account's endpoint never hears of it
    theirs = [e["type"] for r in receiver.snapshot() if r.path == "/other" for e in r.events()]
    assert theirs == ["send.queued"]
    assert (await http.get(f"/v1/webhooks/{other['id']}", params={"account": "other"})).json()[
        "enabled"
    ]

    # and /v1/events has it: an account's event, no send, its particulars in data
    page = (await http.get("/v1/events", params={"account": "acme"})).json()
    [feed] = [e for e in page["events"] if e["type"] == "webhook.disabled"]
    assert feed["seq"] == event["seq"]
    assert (feed["send_id"], feed["distribution_id"], feed["state"], feed["reason"]) == (
        None,
        None,
        None,
        None,
    )
    assert feed["account"] == "acme"
    assert feed["data"] == {"endpoint_id": dead["id"], "reason": "gone"}
    assert feed["detail"] == "gone: the receiver answered 410"
    assert [e["type"] for e in page["events"]] == ["queued", "queued", "webhook.disabled"]
    mine = (await http.get("/v1/events", params={"account": "other"})).json()["events"]
    assert all(e["type"] != "webhook.disabled" for e in mine)
