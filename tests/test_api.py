"""The HTTP API through a real uvicorn server on loopback, with the engine
delivering to STARTTLS sinks in the same process."""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.config import Config
from mailer.delivery.engine import Engine
from mailer.dev.dnsserver import DNSServer
from mailer.message.unsubscribe import UnsubscribeLinks
from mailer.prepare import Preparer
from mailer.reasons import TERMINAL_STATES, Reason, State
from tests.conftest import make_config

KEY = "test-api-key-0123456789"
SECRET = "unsubscribe-secret-0123456789"
PUBLIC_URL = "https://mailer.test"
AUTH = {"Authorization": f"Bearer {KEY}"}

SURVEY_BODY: dict[str, Any] = {
    "account": "acme",
    "sender": {"address": "hr@acme.test", "name": "Müller & Söhne GmbH"},
    "subject": "Umfrage: Wie zufrieden sind Sie, {{ name }}?",
    "html": (
        "<p>Hallo {{ name }},</p>"
        "<p><a href='https://survey.test/s/{{ token }}'>Zur Umfrage</a></p>"
        "<p><a href='{{ unsubscribe_url }}'>Abmelden</a></p>"
    ),
    "tags": ["q3"],
}


def body_for(addresses: list[str], **changes: Any) -> dict[str, Any]:
    recipients = [
        {"email": a, "name": f"Jürgen Weiß {i}", "variables": {"token": f"t{i}"}}
        for i, a in enumerate(addresses)
    ]
    return {**SURVEY_BODY, "recipients": recipients, **changes}


@dataclass
class Served:
    app: App
    server: ApiServer
    http: httpx.AsyncClient


@pytest.fixture
def api_config(tmp_path: Path, dns_server: DNSServer, smtp_port: int) -> Config:
    return make_config(
        tmp_path,
        dns_server,
        smtp_port,
        api={"keys": [KEY], "secret": SECRET, "public_url": PUBLIC_URL},
    )


@pytest.fixture
async def served(api_config: Config) -> AsyncIterator[Served]:
    async with (
        App(api_config) as app,
        ApiServer(create_api(app)) as server,
        httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http,
    ):
        yield Served(app, server, http)


async def engine_with_service_links(app: App) -> Engine:
    # The engine as App.engine() builds it, with the service's unsubscribe
    # links in its preparer.
    preparer = Preparer(app.store.distribution, unsubscribe=UnsubscribeLinks(SECRET, PUBLIC_URL))
    return Engine(app.config, app.store, app.connector(), preparer)


@contextlib.asynccontextmanager
async def engine_running(app: App) -> AsyncIterator[Engine]:
    engine = await engine_with_service_links(app)
    task = asyncio.create_task(engine.run())
    try:
        yield engine
    finally:
        engine.stop()
        await task


async def settled(http: httpx.AsyncClient, distribution_id: str, *, within: float = 60) -> dict:
    """The distribution once every send is in a terminal state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        reply = await http.get(f"/v1/distributions/{distribution_id}")
        assert reply.status_code == 200, reply.text
        dist = reply.json()
        waiting = sum(
            n for state, n in dist["counts"].items() if State(state) not in TERMINAL_STATES
        )
        if waiting == 0:
            return dist
        assert loop.time() < deadline, f"not settled: {dist['counts']}"
        await asyncio.sleep(0.1)


async def all_events(http: httpx.AsyncClient, *, page: int) -> tuple[list[dict], int]:
    events: list[dict] = []
    after, pages = 0, 0
    while True:
        reply = await http.get("/v1/events", params={"after": after, "limit": page})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        if not body["events"]:
            assert body["next"] == after
            return events, pages
        assert len(body["events"]) <= page
        pages += 1
        events.extend(body["events"])
        after = body["next"]


async def test_thousand_recipients_are_delivered_and_the_feed_pages_each_event_once(
    served: Served, make_sink
) -> None:
    mx1, _mx2 = make_sink("127.0.0.2"), make_sink("127.0.0.3")
    addresses = [f"person{i}@dest.test" for i in range(1000)]
    async with engine_running(served.app):
        reply = await served.http.post("/v1/distributions", json=body_for(addresses))
        assert reply.status_code == 202, reply.text
        accepted = reply.json()
        assert accepted["accepted"] == 1000
        assert accepted["rejected"] == []
        assert [s["index"] for s in accepted["sends"]] == list(range(1000))
        dist = await settled(served.http, accepted["distribution_id"])

    assert dist["total"] == 1000
    assert dist["counts"]["delivered"] == 1000
    assert sum(dist["counts"].values()) == dist["total"]
    assert sorted(r for m in mx1.messages for r in m.rcpt_tos) == sorted(addresses)

    events, pages = await all_events(served.http, page=100)
    assert pages == len(events) // 100 + (1 if len(events) % 100 else 0)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))  # strictly increasing: none repeated
    assert len(events) == len(await served.app.store.events(limit=100_000))  # none skipped
    per_send: dict[str, list[str]] = defaultdict(list)
    for event in events:
        per_send[event["send_id"]].append(event["state"])
    assert set(per_send) == {s["id"] for s in accepted["sends"]}
    assert all(states == ["queued", "sending", "delivered"] for states in per_send.values())


async def test_send_shows_state_identity_and_attempt_with_mx_tls_and_reply(
    served: Served, make_sink
) -> None:
    make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    reference = "respondent-42"
    body = body_for(["anna@dest.test"])
    body["recipients"][0]["reference"] = reference
    async with engine_running(served.app):
        accepted = (await served.http.post("/v1/distributions", json=body)).json()
        await settled(served.http, accepted["distribution_id"])
    send_id = accepted["sends"][0]["id"]
    send = (await served.http.get(f"/v1/sends/{send_id}")).json()
    assert (send["state"], send["reason"], send["reference"]) == (
        "delivered",
        "delivered",
        reference,
    )
    assert send["identity"]
    [attempt] = send["attempts"]
    assert attempt["mx_host"] == "mx1.dest.test"
    assert attempt["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert attempt["tls_policy"] == "encrypt"
    assert attempt["code"] == 250
    assert send["last_reply"]["code"] == 250
    assert [e["state"] for e in send["events"]] == ["queued", "sending", "delivered"]


async def test_cancel_ends_unsent_sends_with_an_event(served: Served) -> None:
    later = "2100-01-01T00:00:00Z"
    accepted = (
        await served.http.post(
            "/v1/distributions", json=body_for(["a@dest.test", "b@dest.test"], send_at=later)
        )
    ).json()
    dist_id = accepted["distribution_id"]
    reply = await served.http.delete(f"/v1/distributions/{dist_id}")
    assert reply.status_code == 200
    assert reply.json()["cancelled"] == 2
    dist = (await served.http.get(f"/v1/distributions/{dist_id}")).json()
    assert dist["counts"]["cancelled"] == 2
    assert dist["send_at"].startswith("2100-01-01T00:00:00")
    send = (await served.http.get(f"/v1/sends/{accepted['sends'][0]['id']}")).json()
    assert (send["state"], send["reason"]) == ("cancelled", "cancelled")
    assert send["events"][-1]["reason"] == "cancelled"
    again = await served.http.delete(f"/v1/distributions/{dist_id}")
    assert again.json()["cancelled"] == 0
    assert (await served.http.delete("/v1/distributions/nope")).status_code == 404


# idempotency ---------------------------------------------------------------


async def store_state(app: App) -> tuple[dict[State, int], int]:
    events = await app.store.events(limit=1_000_000)
    return await app.store.counts(), len(events)


async def test_retry_with_the_same_idempotency_key_returns_the_first_answer(
    served: Served,
) -> None:
    body = body_for(["a@dest.test", "not-an-address", "c@dest.test"])
    headers = {"Idempotency-Key": "req-0001"}
    first = await served.http.post("/v1/distributions", json=body, headers=headers)
    assert first.status_code == 202
    before = await store_state(served.app)
    # the same request spelled differently (key order, whitespace) is the same
    reordered = dict(reversed(list(body.items())))
    for attempt in (body, reordered):
        again = await served.http.post("/v1/distributions", json=attempt, headers=headers)
        assert again.status_code == 202
        assert again.json() == first.json()
        assert again.headers["Idempotency-Replayed"] == "true"
    assert await store_state(served.app) == before
    assert first.json()["rejected"][0]["index"] == 1


async def test_same_idempotency_key_with_another_body_is_a_conflict(served: Served) -> None:
    headers = {"Idempotency-Key": "req-0002"}
    await served.http.post("/v1/distributions", json=body_for(["a@dest.test"]), headers=headers)
    before = await store_state(served.app)
    other = await served.http.post(
        "/v1/distributions", json=body_for(["b@dest.test"]), headers=headers
    )
    assert other.status_code == 409
    assert other.json()["detail"][0]["field"] == "Idempotency-Key"
    assert await store_state(served.app) == before
    # keys belong to an account: another account may use the same key
    elsewhere = await served.http.post(
        "/v1/distributions", json=body_for(["b@dest.test"], account="globex"), headers=headers
    )
    assert elsewhere.status_code == 202


async def test_concurrent_requests_with_one_key_store_one_distribution(served: Served) -> None:
    body = body_for([f"p{i}@dest.test" for i in range(50)])
    headers = {"Idempotency-Key": "req-0003"}
    replies = await asyncio.gather(
        *(served.http.post("/v1/distributions", json=body, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["distribution_id"] for r in replies}) == 1
    assert await served.app.store.counts() == {State.QUEUED: 50}


# auth and open routes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/distributions"),
        ("GET", "/v1/distributions/x"),
        ("DELETE", "/v1/distributions/x"),
        ("GET", "/v1/sends/x"),
        ("GET", "/v1/events"),
    ],
)
async def test_v1_without_a_valid_key_is_401(served: Served, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY}):
        async with httpx.AsyncClient(base_url=served.server.url, headers=headers) as anonymous:
            reply = await anonymous.request(method, path, json=body_for(["a@dest.test"]))
        assert reply.status_code == 401
        assert reply.headers["WWW-Authenticate"] == "Bearer"
        assert reply.json()["detail"][0]["field"] == "authorization"
    assert await served.app.store.counts() == {}


async def test_health_metrics_and_schema_are_open(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.server.url) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        await served.http.post("/v1/distributions", json=body_for(["a@dest.test", "bad@"]))
        metrics = (await anonymous.get("/metrics")).text
        schema = (await anonymous.get("/openapi.json")).json()
    assert 'mailer_queue_depth{state="queued"} 1.0' in metrics
    assert 'mailer_api_recipients_total{outcome="rejected"} 1.0' in metrics
    assert re.search(
        r'mailer_api_requests_total\{method="POST",route="/v1/distributions",status="202"\} 1.0',
        metrics,
    )
    assert "/v1/distributions" in schema["paths"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


# unsubscribe ---------------------------------------------------------------


async def test_one_click_unsubscribe_suppresses_and_the_next_send_ends_suppressed(
    served: Served, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    http = served.http
    async with engine_running(served.app):
        first = (await http.post("/v1/distributions", json=body_for(["Anna@dest.test"]))).json()
        await settled(http, first["distribution_id"])
        [received] = mx1.messages
        message = message_from_bytes(received.data, policy=email.policy.default)
        match = re.fullmatch(
            r"<(https://mailer\.test/u/([^>]+))>", str(message["List-Unsubscribe"])
        )
        assert match, message["List-Unsubscribe"]
        url, token = match.groups()
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        html = message.get_body(("html",))
        assert html is not None
        assert url in html.get_content()

        page = await http.get(f"/u/{token}")
        assert page.status_code == 200
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert "a…a@dest.test" in page.text
        assert await served.app.store.suppressions("acme") == []  # GET changes nothing

        async with httpx.AsyncClient(base_url=served.server.url) as provider:
            done = await provider.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200
        [suppression] = await served.app.store.suppressions("acme")
        assert (suppression.address, suppression.reason) == (
            "anna@dest.test",
            Reason.SUPPRESSED_UNSUBSCRIBE,
        )
        events, _ = await all_events(http, page=100)
        unsubscribed = [e for e in events if e["reason"] == "suppressed-unsubscribe"]
        assert [e["send_id"] for e in unsubscribed] == [first["sends"][0]["id"]]

        second = (await http.post("/v1/distributions", json=body_for(["anna@dest.test"]))).json()
        await settled(http, second["distribution_id"])
    send = (await http.get(f"/v1/sends/{second['sends'][0]['id']}")).json()
    assert (send["state"], send["reason"]) == ("suppressed", "suppressed-unsubscribe")
    assert send["attempts"] == []
    assert len(mx1.messages) == 1


async def test_forged_or_incomplete_unsubscribe_changes_nothing(served: Served) -> None:
    links = UnsubscribeLinks(SECRET, PUBLIC_URL)
    token = links.token("acme", "anna@dest.test", "s1")
    forged = UnsubscribeLinks("another-secret-0123456789", PUBLIC_URL).token(
        "acme", "anna@dest.test", "s1"
    )
    async with httpx.AsyncClient(base_url=served.server.url) as provider:
        assert (await provider.get(f"/u/{forged}")).status_code == 404
        one_click = {"List-Unsubscribe": "One-Click"}
        assert (await provider.post(f"/u/{forged}", data=one_click)).status_code == 404
        assert (await provider.post("/u/garbage", data=one_click)).status_code == 404
        assert (await provider.post(f"/u/{token}", data={"x": "y"})).status_code == 400
        assert (await provider.post(f"/u/{token}")).status_code == 400
    assert await served.app.store.suppressions() == []


async def test_one_click_accepts_multipart_form_data(served: Served) -> None:
    token = UnsubscribeLinks(SECRET, PUBLIC_URL).token("acme", "bob@dest.test", "s1")
    async with httpx.AsyncClient(base_url=served.server.url) as provider:
        done = await provider.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert done.status_code == 200
    [suppression] = await served.app.store.suppressions("acme")
    assert suppression.address == "bob@dest.test"
