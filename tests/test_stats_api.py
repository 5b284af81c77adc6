"""``GET /v1/stats`` over HTTP on both store backends: each account's
rolling hard-bounce and complaint rates over the circuit breaker's window
and its paused state; an account's key sees its own account only."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.accounts import create_key, new_account
from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.feedback.circuit import Breaker
from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    FeedbackEffect,
    FeedbackResult,
    NewDistribution,
    NewInbound,
    NewSend,
    Outcome,
)
from tests.backends import postgres_schema
from tests.conftest import make_config

OPERATOR_KEY = "operator-config-key-0123456789"
OURS = "spf=fail → neutral sender"
BREAKER = {"complaint_rate": 0.1, "bounce_rate": 0.2, "min_sends": 20, "window_sends": 100}


@contextlib.asynccontextmanager
async def sqlite_database(tmp_path: Path) -> AsyncIterator[str]:
    yield str(tmp_path / "mailer.sqlite3")


@contextlib.asynccontextmanager
async def postgres_database(tmp_path: Path) -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


@dataclass
class World:
    app: App
    http: httpx.AsyncClient
    keys: dict[str, str]

    async def get(self, who: str, url: str) -> httpx.Response:
        key = OPERATOR_KEY if who == "operator" else self.keys[who]
        return await self.http.get(url, headers={"Authorization": f"Bearer {key}"})


async def finished(app: App, account: str, n: int, *, bounced: int, complained: int) -> None:
    """``n`` sends of ``account`` finished now under our envelope, the
    first ``bounced`` of them bounced, the next ``complained`` complained
    about (by a processed returned message, as the listener records it)."""
    store = app.store
    now = time.time()
    dist = NewDistribution(account, "a@customer.test", "A", "Umfrage", "<p>x</p>", None)
    _, ids = await store.enqueue(
        dist, [NewSend(f"u{i}@dest.test") for i in range(n)], hostname="mta.test", now=now
    )
    await store.claim("w", n, lease_seconds=60, now=now)
    attempt = Attempt(now, now, Reason.DELIVERED, code=250)
    outcomes = [
        Outcome(
            send_id,
            State.BOUNCED if i < bounced else State.DELIVERED,
            Reason.MAILBOX_UNKNOWN if i < bounced else Reason.DELIVERED,
            attempt=attempt,
            identity=OURS,
        )
        for i, send_id in enumerate(ids)
    ]
    await store.complete("w", outcomes, now=now + 1)
    for send_id in ids[bounced : bounced + complained]:
        [inbound] = await store.inbound_put([NewInbound("", ("fbl@b.test",), b"x")], now=now)
        effect = FeedbackEffect(send_id, Reason.COMPLAINED, suppress=Reason.SUPPRESSED_COMPLAINT)
        result = FeedbackResult("complaint", "arf", "{}", send_id, "message-id", effects=(effect,))
        await store.inbound_done(inbound, result, now=now + 2)


@pytest.fixture(
    params=[
        pytest.param(sqlite_database, id="sqlite"),
        pytest.param(postgres_database, id="postgres", marks=pytest.mark.postgres),
    ]
)
async def world(
    request: pytest.FixtureRequest, tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> AsyncIterator[World]:
    async with request.param(tmp_path) as database:
        config = make_config(
            tmp_path,
            dns_server,
            smtp_port,
            database=database,
            api={"keys": [OPERATOR_KEY]},
            feedback={"breaker": BREAKER},
        )
        async with App(config) as app, ApiServer(create_api(app)) as server:
            keys = {}
            for account in ("acme", "beta", "quiet"):
                await app.store.add_account(new_account(account, now=1.0))
                _, keys[account] = await create_key(
                    app.store, account, operator=False, name=None, now=1.0
                )
            # acme: 3 of 20 bounced (15 %), 1 complaint (5 %): under both
            await finished(app, "acme", 20, bounced=3, complained=1)
            # beta: 5 of 20 bounced (25 %): the breaker pauses it
            await finished(app, "beta", 20, bounced=5, complained=0)
            assert (await Breaker(app.store, config.feedback.breaker).check("beta")).trip
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                yield World(app, http, keys)


def rates(reply: httpx.Response) -> dict[str, dict[str, Any]]:
    assert reply.status_code == 200, reply.text
    return {item["account"]: item for item in reply.json()["accounts"]}


async def test_an_account_sees_its_own_rates_over_the_window(world: World) -> None:
    reply = await world.get("acme", "/v1/stats")
    [acme] = rates(reply).values()
    assert acme == {
        "account": "acme",
        "sends": 20,
        "hard_bounces": 3,
        "complaints": 1,
        "hard_bounce_rate": 0.15,
        "complaint_rate": 0.05,
        "judged": True,
        "paused": False,
        "paused_at": None,
        "pause_detail": None,
    }
    assert reply.json()["breaker"] == {
        "hard_bounce_rate": 0.2,
        "complaint_rate": 0.1,
        "min_sends": 20,
        "window_sends": 100,
        "window_days": 7.0,
    }
    assert rates(await world.get("acme", "/v1/stats?account=acme")) == {"acme": acme}


async def test_a_paused_account_sees_why(world: World) -> None:
    beta = rates(await world.get("beta", "/v1/stats"))["beta"]
    assert (beta["sends"], beta["hard_bounces"], beta["hard_bounce_rate"]) == (20, 5, 0.25)
    assert beta["paused"] is True
    assert beta["paused_at"] is not None
    assert "hard-bounce rate 5/20" in beta["pause_detail"]


async def test_an_account_without_sends_has_zero_rates_and_is_not_judged(world: World) -> None:
    quiet = rates(await world.get("quiet", "/v1/stats"))["quiet"]
    assert (quiet["sends"], quiet["hard_bounce_rate"], quiet["complaint_rate"]) == (0, 0.0, 0.0)
    assert (quiet["judged"], quiet["paused"]) == (False, False)


async def test_another_accounts_rates_are_a_404_like_an_account_that_does_not_exist(
    world: World,
) -> None:
    other = await world.get("acme", "/v1/stats?account=beta")
    missing = await world.get("acme", "/v1/stats?account=nobody")
    assert other.status_code == missing.status_code == 404
    assert other.text == missing.text.replace("nobody", "beta")
    assert "0.25" not in other.text


async def test_an_operator_sees_every_active_or_paused_account_or_the_one_it_names(
    world: World,
) -> None:
    everyone = rates(await world.get("operator", "/v1/stats"))
    # quiet has no finished sends in the window and is not paused
    assert sorted(everyone) == ["acme", "beta"]
    assert everyone["beta"]["paused"] is True
    assert rates(await world.get("operator", "/v1/stats?account=quiet")).keys() == {"quiet"}
    assert (await world.get("operator", "/v1/stats?account=nobody")).status_code == 404


async def test_stats_need_a_key_and_are_documented(world: World) -> None:
    assert (await world.http.get("/v1/stats")).status_code == 401
    operation = create_api(world.app).openapi()["paths"]["/v1/stats"]["get"]
    assert {"200", "401", "404", "422"} <= set(operation["responses"])
    [parameter] = operation["parameters"]
    assert parameter["name"] == "account"
