"""Idempotency-Key under concurrency, on both backends: the store compares
body hashes in its transaction, so two racing POSTs with one key and
different bodies end as one 202 and one 409, never a 500 and never two
202s. Keys expire after ``api.idempotency_ttl``. A real HTTP server on
loopback over real SQLite files and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.client import Client, IdempotencyConflict
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.store.models import Idempotency
from tests.backends import postgres_schema
from tests.conftest import SURVEY, make_config
from tests.test_api import AUTH, KEY, PUBLIC_URL, SECRET, body_for
from tests.test_store_contract import DIST, sends
from tests.test_store_contract import store as store  # the fixture, on both backends

PAIRS = 100


@contextlib.asynccontextmanager
async def database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield str(tmp_path / "mailer.sqlite3")
    else:
        async with postgres_schema() as url:
            yield url


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_racing_pairs_with_one_key_get_one_202_and_one_409(
    backend: str, tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    async with database(backend, tmp_path) as url:
        config = make_config(
            tmp_path,
            dns_server,
            smtp_port,
            database=url,
            api={"keys": [KEY], "secret": SECRET, "public_url": PUBLIC_URL},
        )
        async with (
            App(config) as app,
            ApiServer(create_api(app)) as server,
            httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http,
        ):

            async def post(key: str, addresses: list[str]) -> httpx.Response:
                return await http.post(
                    "/v1/distributions",
                    json=body_for(addresses),
                    headers={"Idempotency-Key": key},
                )

            outcomes: list[tuple[int, int]] = []
            winners: list[str] = []
            # ten pairs in flight at a time, each pair's two bodies differ
            for start in range(0, PAIRS, 10):
                replies = await asyncio.gather(
                    *(
                        post(f"race-{i}", [f"a{i}@dest.test"] if side == 0 else [f"b{i}@dest.test"])
                        for i in range(start, start + 10)
                        for side in (0, 1)
                    )
                )
                for left, right in zip(replies[::2], replies[1::2], strict=True):
                    outcomes.append(tuple(sorted((left.status_code, right.status_code))))
                    winners += [
                        r.json()["distribution_id"] for r in (left, right) if r.status_code == 202
                    ]
            counts = await app.store.counts()
    assert outcomes == [(202, 409)] * PAIRS
    assert len(set(winners)) == PAIRS
    assert sum(counts.values()) == PAIRS  # one send per stored distribution


async def test_same_key_same_body_raced_stores_once_and_answers_alike(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    async with App(make_config(tmp_path, dns_server, smtp_port)) as app:
        client = Client(app)
        people = [RecipientInput(f"p{i}@dest.test", "P", {"token": "t"}) for i in range(3)]
        answers = await asyncio.gather(
            *(client.enqueue(SURVEY, people, idempotency_key="same") for _ in range(10))
        )
        counts = await app.store.counts()
    assert len({a.distribution_id for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    assert sum(counts.values()) == 3


async def test_an_expired_key_is_used_anew(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    now = [1_000_000.0]
    config = make_config(tmp_path, dns_server, smtp_port, api={"idempotency_ttl": 3600})
    async with App(config) as app:
        client = Client(app, clock=lambda: now[0])
        one = [RecipientInput("a@dest.test", "A", {"token": "t"})]
        two = [*one, RecipientInput("b@dest.test", "B", {"token": "t"})]
        first = await client.enqueue(SURVEY, one, idempotency_key="k")
        now[0] += 3599
        with pytest.raises(IdempotencyConflict):
            await client.enqueue(SURVEY, two, idempotency_key="k")
        now[0] += 2
        later = await client.enqueue(SURVEY, two, idempotency_key="k")
        again = await client.enqueue(SURVEY, two, idempotency_key="k")
    assert later.distribution_id != first.distribution_id
    assert not later.replayed
    assert again.replayed
    assert again.distribution_id == later.distribution_id


async def test_store_refuses_a_reused_key_with_another_body_in_its_transaction(
    store,
) -> None:
    first = await store.enqueue(
        DIST, sends(2), hostname="h", now=100.0, idempotency=Idempotency("k", "h1")
    )
    with pytest.raises(IdempotencyConflict):
        await store.enqueue(
            DIST, sends(5), hostname="h", now=101.0, idempotency=Idempotency("k", "h2")
        )
    same = await store.enqueue(
        DIST, sends(2), hostname="h", now=101.0, idempotency=Idempotency("k", "h1")
    )
    assert same == first
    assert sum((await store.counts()).values()) == 2
    # stale: recorded before stale_before, the key is taken over
    anew = await store.enqueue(
        DIST,
        sends(5),
        hostname="h",
        now=200.0,
        idempotency=Idempotency("k", "h2", stale_before=150.0),
    )
    assert anew != first
    record = await store.idempotent("acme", "k")
    assert record is not None
    assert (record.body_hash, record.distribution_id) == ("h2", anew[0])
    assert await store.idempotent("acme", "k", stale_before=250.0) is None
