"""Property-based tests over the API's own OpenAPI schema (Schemathesis on
Hypothesis): requests generated from the schema, valid and deliberately
invalid, never get a 5xx, and every answer has a status, content type and
body the schema declares. Plus malformed bodies and unsubscribe tokens
around the schema. Through a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.message.unsubscribe import UnsubscribeLinks
from tests.conftest import make_config
from tests.test_api import AUTH, KEY, PUBLIC_URL, SECRET, body_for

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def bounded(examples: int) -> settings:
    # bounded: the module stays well under a minute on two cores
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
ADDRESSES = ["a@dest.test", "Anna.Schaefer@dest.test", "x@bücher.test", "broken@", "jö@dest.test"]


@pytest.fixture
async def live(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        api={"keys": [KEY], "secret": SECRET, "public_url": PUBLIC_URL},
    )
    async with App(config) as app, ApiServer(create_api(app)) as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            schema = (await http.get("/openapi.json")).json()
        yield server.url, schema


async def in_thread(test: Callable[[], None]) -> None:
    # Hypothesis drives a synchronous client from a worker thread while the
    # server keeps serving on this loop.
    await asyncio.to_thread(test)


def plausible(case: Case, choice: int) -> Case:
    """A generated enqueue body with a real account, sender and templates
    and real-looking recipient addresses (names, variables, references and
    send_at stay generated), so that the accepting paths are reached too."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("recipients"), list):
        body.update(
            account="acme",
            sender={"address": "hr@acme.test", "name": "ACME"},
            subject="Umfrage für {{ name }}",
            html="<p>Hallo {{ name }}</p>",
            text=None,
            unsubscribe_url=None,
            tags=[],
        )
        for index, recipient in enumerate(body["recipients"]):
            if isinstance(recipient, dict):
                recipient["email"] = ADDRESSES[(choice + index) % len(ADDRESSES)]
    return case


async def test_every_operation_with_generated_requests_answers_as_declared(live) -> None:
    url, raw = live
    schema = schemathesis.openapi.from_dict(raw)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/distributions",
        "/v1/distributions/{distribution_id}",
        "/v1/sends/{send_id}",
        "/v1/events",
        "/u/{token}",
    }
    enqueue = schema["/v1/distributions"]["POST"]
    strategy = st.one_of(
        *(op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode),
        st.builds(plausible, enqueue.as_strategy(), st.integers(0, 10)),
    )
    session = requests.Session()

    @bounded(300)
    @given(case=strategy)
    def test(case: Case) -> None:
        response = case.call(base_url=url, session=session, headers=AUTH, timeout=30)
        case.validate_response(response, checks=CHECKS)

    try:
        await in_thread(test)
    finally:
        session.close()


async def test_malformed_bodies_never_get_a_5xx(live) -> None:
    url, _ = live
    base = body_for(["a@dest.test"])

    @bounded(100)
    @given(
        body=JSON | st.builds(lambda extra: {**base, **extra}, st.dictionaries(st.text(), JSON)),
        raw=st.none() | st.binary(max_size=200),
        content_type=st.sampled_from(["application/json", "text/plain", "", "application/x+json"]),
    )
    def test(body: Any, raw: bytes | None, content_type: str) -> None:
        content = raw if raw is not None else json.dumps(body).encode()
        headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
        with httpx.Client(base_url=url, timeout=30) as http:
            reply = http.post("/v1/distributions", content=content, headers=headers)
        assert reply.status_code in (202, 400, 422), reply.text
        if reply.status_code != 202:
            assert all(item["field"] != "request" for item in reply.json()["errors"])

    await in_thread(test)


async def test_unsubscribe_with_generated_tokens_and_forms_never_gets_a_5xx(live) -> None:
    url, _ = live
    real = UnsubscribeLinks(SECRET, PUBLIC_URL).token("acme", "a@dest.test", "s1")
    tokens = (
        st.just(real)
        | st.text(max_size=200)
        | st.builds(
            lambda cut, tail: real[:cut] + tail, st.integers(0, len(real)), st.text(max_size=5)
        )
    )

    @bounded(100)
    @given(
        token=tokens.filter(lambda t: t not in ("", ".", "..")),
        method=st.sampled_from(["GET", "POST"]),
        body=st.binary(max_size=300) | st.just(b"List-Unsubscribe=One-Click"),
        content_type=st.sampled_from(
            ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "", "x/y"]
        ),
    )
    def test(token: str, method: str, body: bytes, content_type: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        with httpx.Client(base_url=url, timeout=30) as http:
            reply = http.request(
                method, f"/u/{quote(token, safe='')}", content=body, headers=headers
            )
        # 307: a token ending in an encoded slash is redirected like any path
        assert reply.status_code in (200, 307, 400, 404), (token, method, body, reply.text)

    await in_thread(test)
