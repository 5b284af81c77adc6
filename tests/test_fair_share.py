"""The fair share of the claim, the per-account rate cap and the account
records, on every store backend. The claims are the real store's; the
delivery is a fast fake (every leased send is recorded delivered at once),
so that 200,000 queued sends can be worked through in a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from mailer.enqueue import RecipientInput
from mailer.errors import NotFound, ValidationError
from mailer.intake import Intake
from mailer.reasons import Reason, State
from mailer.store.models import (
    Account,
    AccountChange,
    ApiKey,
    Attempt,
    Claimed,
    NewDistribution,
    NewSend,
    Outcome,
)
from tests.backends import BACKENDS, StoreFactory


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    factory: StoreFactory = request.param
    async with factory(request) as s:
        yield s


def dist(account: str, priority: str | None = None) -> NewDistribution:
    return NewDistribution(
        account=account,
        sender_address=f"hr@{account}.test",
        sender_name=account,
        subject="Umfrage",
        html=None,
        text="Hallo",
        priority=priority,
    )


def recipients(n: int, prefix: str) -> list[NewSend]:
    return [NewSend(f"{prefix}{i}@dest.test") for i in range(n)]


async def deliver(store, owner: str, claimed: Sequence[Claimed], now: float) -> None:
    attempt = Attempt(now, now, Reason.DELIVERED, code=250, enhanced="2.0.0", text="ok")
    outcomes = [
        Outcome(c.send.id, State.DELIVERED, Reason.DELIVERED, attempt=attempt) for c in claimed
    ]
    assert await store.complete(owner, outcomes, now=now) == len(outcomes)


async def test_a_small_account_is_served_before_the_big_ones_next_2000(store) -> None:
    now = 1000.0
    for _ in range(4):
        await store.enqueue(dist("big"), recipients(50_000, "a"), hostname="h", now=now)
    # the big account has been served a while when the small one arrives
    for _ in range(5):
        await deliver(store, "w", await store.claim("w", 100, lease_seconds=60, now=now), now)
    small_id, small = await store.enqueue(
        dist("small"), recipients(100, "b"), hostname="h", now=now
    )
    waiting = set(small)
    big_delivered = 0
    while waiting:
        now += 0.01
        claimed = await store.claim("w", 100, lease_seconds=60, now=now)
        assert claimed, "due sends were left unclaimed"
        await deliver(store, "w", claimed, now)
        waiting -= {c.send.id for c in claimed}
        big_delivered += sum(1 for c in claimed if c.send.account == "big")
        assert big_delivered < 2000, f"account big got {big_delivered} first"
    assert (await store.counts(small_id)) == {State.DELIVERED: 100}
    # and a whole claim goes to the big account again once the small one is done
    claimed = await store.claim("w", 100, lease_seconds=60, now=now + 1)
    assert len(claimed) == 100


async def test_a_high_distribution_goes_before_the_accounts_bulk_ones(store) -> None:
    await store.enqueue(dist("acme", "bulk"), recipients(300, "bulk"), hostname="h", now=10.0)
    reminder, ids = await store.enqueue(
        dist("acme", "high"), recipients(30, "high"), hostname="h", now=20.0
    )
    assert (await store.distribution(reminder)).priority == "high"
    first = await store.claim("w", 40, lease_seconds=60, now=30.0)
    assert {c.send.id for c in first[:30]} == set(ids)
    assert all(c.send.distribution_id != reminder for c in first[30:])


async def test_distributions_of_one_priority_share_the_accounts_claims(store) -> None:
    one, _ = await store.enqueue(dist("acme"), recipients(500, "one"), hostname="h", now=10.0)
    two, _ = await store.enqueue(dist("acme"), recipients(10, "two"), hostname="h", now=20.0)
    claimed = await store.claim("w", 20, lease_seconds=60, now=30.0)
    per = {d: sum(1 for c in claimed if c.send.distribution_id == d) for d in (one, two)}
    assert per == {one: 10, two: 10}


async def test_the_account_default_priority_applies_to_distributions_naming_none(store) -> None:
    await store.add_account(Account("acme", "ACME", priority="bulk", created_at=1.0))
    dist_id, _ = await store.enqueue(dist("acme"), recipients(1, "x"), hostname="h", now=10.0)
    assert (await store.distribution(dist_id)).priority == "bulk"


async def test_the_rate_cap_holds_within_5_percent_over_a_minute_with_two_workers(store) -> None:
    cap = 1200  # sends per minute
    await store.add_account(Account("capped", "Capped", rate_cap=cap, created_at=1.0))
    await store.enqueue(dist("capped"), recipients(5000, "c"), hostname="h", now=0.0)
    await store.enqueue(dist("free"), recipients(4000, "f"), hostname="h", now=0.0)
    counts = {"capped": 0, "free": 0}
    start = 100.0

    async def worker(owner: str, offset: float) -> None:
        step = 0.1
        tick = 0
        while (now := start + offset + tick * step) < start + 60.0:
            tick += 1
            claimed = await store.claim(owner, 50, lease_seconds=600, now=now)
            for c in claimed:
                counts[c.send.account] += 1
            await deliver(store, owner, claimed, now)

    await asyncio.gather(worker("w1", 0.0), worker("w2", 0.05))
    assert abs(counts["capped"] - cap) <= cap * 0.05, counts
    assert counts["free"] > counts["capped"]


async def test_free_string_accounts_get_records_and_new_ones_are_recorded(store) -> None:
    await store.enqueue(dist("newcomer"), recipients(1, "n"), hostname="h", now=10.0)
    account = await store.account("newcomer")
    assert (account.name, account.language, account.rate_cap) == ("newcomer", "en", None)


async def test_accounts_are_added_listed_and_changed(store) -> None:
    await store.add_account(Account("acme", "ACME", language="de", created_at=1.0))
    with pytest.raises(ValidationError) as err:
        await store.add_account(Account("acme", "Other", created_at=2.0))
    assert err.value.field == "id"
    changed = await store.update_account("acme", AccountChange(rate_cap=60, priority="high"))
    assert (changed.name, changed.language, changed.rate_cap, changed.priority) == (
        "ACME",
        "de",
        60,
        "high",
    )
    cleared = await store.update_account("acme", AccountChange(clear_rate_cap=True))
    assert cleared.rate_cap is None
    assert [a.id for a in await store.accounts()] == ["acme"]
    with pytest.raises(NotFound):
        await store.update_account("nobody", AccountChange(name="x"))
    with pytest.raises(NotFound):
        await store.account("nobody")


async def test_api_keys_are_found_by_digest_and_revoked(store) -> None:
    await store.add_account(Account("acme", "ACME", created_at=1.0))
    key = ApiKey("k1", "acme", operator=False, name="ci", created_at=5.0)
    await store.add_api_key(key, "d" * 64)
    assert await store.api_key("d" * 64) == key
    assert await store.api_key("e" * 64) is None
    assert await store.api_keys("acme") == [key]
    assert await store.revoke_api_key("k1", now=9.0)
    assert not await store.revoke_api_key("k1", now=10.0)
    assert await store.api_key("d" * 64) == replace(key, revoked_at=9.0)
    with pytest.raises(NotFound):
        await store.add_api_key(replace(key, id="k2", account="nobody"), "f" * 64)


OLD_ROWS = [
    "INSERT INTO distributions (id, account, sender_address, sender_name, subject, text,"
    " created_at) VALUES ('d1', 'legacy', 'a@legacy.test', 'L', 'S', 'T', 10)",
    "INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name,"
    " variables, message_id, due_at, created_at, updated_at) VALUES"
    " ('s1', 'd1', 'legacy', 'x@dest.test', 'x@dest.test', 'dest.test', '', '{}', '<s1@h>',"
    " 10, 10, 10)",
    "INSERT INTO suppressions (account, address, reason, created_at) VALUES"
    " ('listed', 'y@dest.test', 'suppressed-bounce', 11)",
]


async def test_migration_makes_records_of_the_free_string_accounts(tmp_path) -> None:
    import sqlite3

    from mailer.store.rules import split_statements
    from mailer.store.sqlite.store import MIGRATIONS, SQLiteStore

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for version, script in enumerate(MIGRATIONS[:3], start=1):
        for statement in split_statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    for statement in OLD_ROWS:
        conn.execute(statement)
    conn.commit()
    conn.close()
    async with SQLiteStore(path) as new:
        assert [(a.id, a.name) for a in await new.accounts()] == [
            ("legacy", "legacy"),
            ("listed", "listed"),
        ]
        assert (await new.distribution("d1")).priority == "normal"
        assert len(await new.claim("w", 10, lease_seconds=60, now=20.0)) == 1


async def test_postgres_migration_makes_records_of_the_free_string_accounts() -> None:
    import psycopg

    from mailer.store.postgres.sql import MIGRATIONS
    from mailer.store.postgres.store import PostgresStore
    from mailer.store.rules import split_statements
    from tests.backends import postgres_schema

    async with postgres_schema() as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
            for version, script in enumerate(MIGRATIONS[:3], start=1):
                for statement in split_statements(script):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
            for statement in OLD_ROWS:
                await conn.execute(statement)
        async with PostgresStore(url) as new:
            assert [(a.id, a.name) for a in await new.accounts()] == [
                ("legacy", "legacy"),
                ("listed", "listed"),
            ]
            assert len(await new.claim("w", 10, lease_seconds=60, now=20.0)) == 1


async def test_events_carry_account_reference_and_tags_and_filter_by_account(store) -> None:
    tagged = replace(dist("acme"), tags=("q3", "reminder"))
    _, [mine] = await store.enqueue(
        tagged, [NewSend("x@dest.test", reference="resp-17")], hostname="h", now=10.0
    )
    _, [theirs] = await store.enqueue(dist("other"), recipients(1, "o"), hostname="h", now=11.0)
    everything = await store.events()
    assert [(e.send_id, e.account) for e in everything] == [(mine, "acme"), (theirs, "other")]
    first = everything[0]
    assert (first.reference, first.tags) == ("resp-17", ("q3", "reminder"))
    assert [e.send_id for e in await store.events(account="other")] == [theirs]
    assert await store.events(account="other", send_id=mine) == []


async def test_a_distribution_naming_no_language_takes_its_accounts(store) -> None:
    await store.add_account(Account("acme", "ACME", language="de", created_at=1.0))
    intake = Intake(store, "mailer.test", None)
    plain = NewDistribution(
        account="acme",
        sender_address="hr@acme.test",
        sender_name="ACME",
        subject="Umfrage",
        html=None,
        text="Hallo {{ name }}",
    )
    recipients = [RecipientInput("anna@dest.test", "Anna")]
    inherited = await intake.enqueue(plain, recipients)
    named = await intake.enqueue(replace(plain, language="en"), recipients)
    newcomer = await intake.enqueue(replace(plain, account="newcomer"), recipients)
    assert (await store.distribution(inherited.distribution_id)).language == "de"
    assert (await store.distribution(named.distribution_id)).language == "en"
    # an account without a record yet: the browser's choice, as before
    assert (await store.distribution(newcomer.distribution_id)).language is None
