"""The circuit breaker at work over a real store: a late bounce that takes
an account to its threshold pauses the account's unsent mail; a release
queues it again and the breaker judges only later sends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import cli
from mailer.config import BreakerConfig
from mailer.feedback.circuit import Breaker
from mailer.feedback.processor import Matcher, Processor
from mailer.feedback.rehearsal import build_dsn
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, NewDistribution, NewInbound, NewSend, Outcome
from mailer.store.sqlite.store import SQLiteStore
from tests.backends import BACKENDS, StoreFactory

DIST = NewDistribution("acct", "a@customer.test", "A", "Umfrage", "<p>x</p>", None)
OURS = "spf=fail → neutral sender"
CONFIG = BreakerConfig(complaint_rate=0.1, bounce_rate=0.2, min_sends=20, window_sends=100)
NOW = 1_000_000.0


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    factory: StoreFactory = request.param
    async with factory(request) as s:
        yield s


async def finished(store, n: int, bounced: int, *, identity: str = OURS) -> list[str]:
    _, ids = await store.enqueue(
        DIST, [NewSend(f"u{i}@dest.test") for i in range(n)], hostname="mta.test", now=NOW
    )
    await store.claim("w", n, lease_seconds=60, now=NOW)
    attempt = Attempt(NOW, NOW, Reason.DELIVERED, code=250)
    await store.complete(
        "w",
        [
            Outcome(
                send_id,
                State.BOUNCED if i < bounced else State.DELIVERED,
                Reason.MAILBOX_UNKNOWN if i < bounced else Reason.DELIVERED,
                attempt=attempt,
                identity=identity,
            )
            for i, send_id in enumerate(ids)
        ],
        now=NOW + 1,
    )
    return ids


async def test_a_late_bounce_at_the_threshold_pauses_the_account(store) -> None:
    ids = await finished(store, 20, bounced=3)
    breaker = Breaker(store, CONFIG, clock=lambda: NOW + 10)
    assert not (await breaker.check("acct")).trip  # 3/20 = 15 % < 20 %
    _, [waiting] = await store.enqueue(DIST, [NewSend("later@dest.test")], hostname="h", now=NOW)
    processor = Processor(
        store, Matcher(None, frozenset()), breaker=breaker, clock=lambda: NOW + 10
    )
    send = await store.send(ids[10])
    dsn = build_dsn(
        f"Message-ID: {send.message_id}\r\n\r\nx".encode(),
        return_path="survey@platform.test",
        recipient=send.recipient,
        reporting_mta="mx.dest.test",
    )
    await store.inbound_put([NewInbound("", ("survey@platform.test",), dsn)], now=NOW + 5)
    assert await processor.drain() == 1
    assert (await store.send(ids[10])).state is State.BOUNCED
    held = await store.send(waiting)
    assert (held.state, held.reason) == (State.HELD, Reason.ACCOUNT_PAUSED)
    [pause] = await store.account_pauses()
    assert pause.paused_at == NOW + 10
    assert "4/20" in (pause.detail or "")
    # released: only sends made since count, so it does not trip again at once
    assert await store.release_account("acct", now=NOW + 20) == 1
    released = Breaker(store, CONFIG, clock=lambda: NOW + 30)
    verdict = await released.check("acct")
    assert (verdict.sends, verdict.trip) == (0, False)


async def test_sends_with_the_customers_envelope_never_trip_it(store) -> None:
    await finished(store, 40, bounced=40, identity="spf=pass → customer sender")
    verdict = await Breaker(store, CONFIG, clock=lambda: NOW + 10).check("acct")
    assert (verdict.sends, verdict.trip) == (0, False)
    assert await store.account_pauses() == []


async def test_the_sweep_pauses_an_account_that_bounced_at_smtp_time(store) -> None:
    await finished(store, 20, bounced=4)
    paused: list[str] = []
    breaker = Breaker(store, CONFIG, clock=lambda: NOW + 10, on_pause=lambda a, _: paused.append(a))
    await breaker.sweep()
    await breaker.sweep()  # once paused, not again
    assert paused == ["acct"]


def paused_account(database: Path) -> dict[str, str]:
    """A store whose account ``acct`` is paused with one send queued and
    held (none finished); the environment that points the CLI at it."""

    async def pause() -> None:
        async with SQLiteStore(database) as store:
            await store.enqueue(DIST, [NewSend("x@dest.test")], hostname="h", now=NOW)
            await store.pause_account("acct", now=NOW, detail="complaint rate")

    asyncio.run(pause())
    return {"MAILER_DATABASE": str(database)}


def test_release_account_from_the_command_line(tmp_path: Path) -> None:
    env = paused_account(tmp_path / "m.sqlite3")
    result = CliRunner().invoke(cli, ["release", "--account", "acct"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "released account acct: 1 send(s) queued"
    again = CliRunner().invoke(cli, ["release", "--account", "acct"], env=env)
    assert again.exit_code == 1
    assert "paused account acct not found" in again.output


def test_rates_per_account_in_stats_and_bounces_accounts(tmp_path: Path) -> None:
    import json
    import time

    database = tmp_path / "m.sqlite3"
    now = time.time()

    async def history() -> None:
        async with SQLiteStore(database) as store:
            _, ids = await store.enqueue(
                DIST, [NewSend(f"r{i}@dest.test") for i in range(4)], hostname="h", now=now
            )
            await store.claim("w", 4, lease_seconds=60, now=now)
            attempt = Attempt(now, now, Reason.DELIVERED, code=250)
            await store.complete(
                "w",
                [
                    Outcome(
                        i,
                        State.BOUNCED if n == 0 else State.DELIVERED,
                        Reason.MAILBOX_UNKNOWN if n == 0 else Reason.DELIVERED,
                        attempt=attempt,
                        identity=OURS,
                    )
                    for n, i in enumerate(ids)
                ],
                now=now,
            )

    asyncio.run(history())
    env = {"MAILER_DATABASE": str(database)}
    result = CliRunner().invoke(cli, ["bounces", "accounts", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {
            "account": "acct",
            "sends": 4,
            "hard_bounces": 1,
            "complaints": 0,
            "hard_bounce_rate": 0.25,
            "complaint_rate": 0.0,
            "paused": False,
        }
    ]
    shown = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=120)
    assert "circuit breaker" in shown.output
    assert "25.00%" in shown.output


def test_a_paused_account_without_sends_in_the_window_is_listed_as_the_api_lists_it(
    tmp_path: Path,
) -> None:
    import json

    # nothing finished: no sends in the window
    env = paused_account(tmp_path / "m.sqlite3")
    listed = CliRunner().invoke(cli, ["bounces", "accounts", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [acct] = json.loads(listed.output)
    assert (acct["account"], acct["sends"], acct["paused"]) == ("acct", 0, True)
    text = CliRunner().invoke(cli, ["bounces", "accounts"], env=env)
    assert "acct: 0 sends" in text.output
    assert "PAUSED" in text.output
    shown = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=120)
    assert shown.exit_code == 0, shown.output
    assert "paused" in shown.output


async def test_a_sweep_exports_aggregate_rates_and_paused_accounts_without_account_labels(
    store,
) -> None:
    from mailer.metrics import Metrics

    await finished(store, 20, bounced=4)
    metrics = Metrics()
    await Breaker(store, CONFIG, clock=lambda: NOW + 10, metrics=metrics).sweep()
    value = metrics.registry.get_sample_value
    assert value("mailer_feedback_rate", {"kind": "hard-bounce"}) == 0.2
    assert value("mailer_feedback_rate", {"kind": "complaint"}) == 0.0
    assert value("mailer_accounts_paused") == 1
    assert b"acct" not in metrics.render()
