"""``GET /v1/domains/{domain}/check`` returns what ``check-domain --json``
prints, against the loopback DNS server and SMTP sinks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mailer.api import domains
from mailer.api.errors import install_error_handlers
from mailer.app import App
from mailer.checkdomain import DomainChecker
from mailer.client import Client
from mailer.config import Config
from mailer.dev.dnsserver import DNSServer
from mailer.message.keys import KeyStore, dns_record_value
from mailer.sink.runner import Sink
from tests.test_check_domain import ZONE, domain_config


@pytest.fixture
def zone() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, zone: DNSServer, smtp_port: int) -> Config:
    return domain_config(tmp_path, zone, smtp_port)


@pytest.fixture
def checker(config: Config) -> DomainChecker:
    return DomainChecker(config)


@pytest.fixture
async def http(checker: DomainChecker) -> AsyncIterator[httpx.AsyncClient]:
    api = FastAPI()
    install_error_handlers(api)
    api.state.domain_checker = checker
    api.include_router(domains.router)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        yield client


async def test_the_endpoint_returns_the_same_report_as_the_json_output(
    http: httpx.AsyncClient,
    checker: DomainChecker,
    config: Config,
    zone: DNSServer,
    make_sink: Callable[..., Sink],
) -> None:
    key = KeyStore(config.keys_dir).generate("good.test", "mailer", algorithm="ed25519")
    zone.set("mailer._domainkey.good.test", "TXT", [dns_record_value(key)])
    make_sink("127.0.0.2", hostname="mx.good.test")
    response = await http.get("/v1/domains/good.test/check")
    assert response.status_code == 200
    direct = (await checker.check("good.test")).to_json()
    assert response.json() == direct
    assert response.json()["verdict"] == "ok"


async def test_action_needed_is_still_200_with_the_fixes(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/domains/soft.test/check", params={"region": "azure"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    assert body["verdict"] == "action-needed"
    assert body["fixes"][0]["record"]["value"] == "v=spf1 mx include:_spf.netigate.se ~all"


async def test_selectors_are_passed_on(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1/domains/good.test/check", params=[("selector", "s1"), ("selector", "s2")]
    )
    dkim = next(c for c in response.json()["checks"] if c["name"] == "dkim")
    assert [row["selector"] for row in dkim["details"]["selectors"]] == ["s1", "s2"]


async def test_a_bad_domain_is_422_naming_the_field(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/domains/not_a..domain/check")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "domain"


async def test_an_unknown_region_is_422(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/domains/good.test/check", params={"region": "mars"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "region"


async def test_dns_not_answering_is_503_saying_so(
    http: httpx.AsyncClient,
    zone: DNSServer,
) -> None:
    zone.fail("soft.test")
    response = await http.get("/v1/domains/soft.test/check")
    assert response.status_code == 503
    [item] = response.json()["errors"]
    assert item["field"] == "dns"
    assert "DNS did not answer" in item["reason"]


async def test_the_checker_is_built_once_from_the_client_config(config: Config) -> None:
    api = FastAPI()
    install_error_handlers(api)
    api.state.client = Client(App(config))
    api.include_router(domains.router)
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        assert (await client.get("/v1/domains/direct.test/check")).status_code == 200
        first = api.state.domain_checker
        assert (await client.get("/v1/domains/direct.test/check")).status_code == 200
    assert api.state.domain_checker is first
    assert first.config is config
