"""What is particular to the PostgreSQL store (the shared behaviour is in
test_store_contract.py): DSNs and schemas, migrations racing at start-up,
errors, and the pure row builders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import pytest

from mailer.errors import StoreError, ValidationError
from mailer.reasons import Reason, State
from mailer.sink.runner import pick_port
from mailer.store import open_store
from mailer.store.models import Attempt, Outcome
from mailer.store.postgres.schema import describe, schema_key, with_schema
from mailer.store.postgres.sql import MIGRATIONS
from mailer.store.postgres.store import PostgresStore
from mailer.store.rows import OutcomeRows
from mailer.store.rules import unless_held
from tests.backends import postgres_dsn, postgres_schema


def test_with_schema_sets_the_search_path_through_libpq_options() -> None:
    url = with_schema("postgresql://u:pw@db.test:5433/mail?sslmode=require", "t_1")
    assert url == (
        "postgresql://u:pw@db.test:5433/mail?sslmode=require&options=-csearch_path%3Dt_1"
    )
    params = psycopg.conninfo.conninfo_to_dict(url)
    assert params["options"] == "-csearch_path=t_1"
    assert params["sslmode"] == "require"


def test_with_schema_keeps_other_options() -> None:
    url = with_schema("postgres://h/db?options=-cstatement_timeout%3D5000", "s")
    options = psycopg.conninfo.conninfo_to_dict(url)["options"]
    assert options == "-cstatement_timeout=5000 -csearch_path=s"


@pytest.mark.parametrize("name", ["Upper", "semi;colon", "with space", "1digit", ""])
def test_with_schema_refuses_names_that_would_need_quoting(name: str) -> None:
    with pytest.raises(ValidationError):
        with_schema("postgresql://h/db", name)


def test_with_schema_needs_a_url() -> None:
    with pytest.raises(ValidationError):
        with_schema("host=h dbname=db", "s")


def test_describe_names_the_server_without_credentials() -> None:
    assert describe("postgresql://user:secret@db.test:6543/mail") == "db.test:6543/mail"
    assert "secret" not in describe("postgresql://user:secret@db.test/mail")


def test_schema_keys_are_stable_signed_32_bit_numbers() -> None:
    keys = {schema_key(f"s{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**31) <= key < 2**31 for key in keys)
    assert schema_key("public") == schema_key("public")


def test_open_store_picks_postgres_for_postgres_urls_without_connecting() -> None:
    store = open_store("postgresql://nobody@127.0.0.1:1/none")
    assert isinstance(store, PostgresStore)


def test_an_outcome_that_would_defer_a_held_send_holds_it() -> None:
    deferred = Outcome("s1", State.DEFERRED, Reason.CONNECTION, due_at=9.0, detail="refused")
    held = unless_held(deferred, "held.test", "d1", {("domain", "held.test")})
    assert (held.state, held.reason) == (State.HELD, Reason.HELD)
    assert held.detail == "deferred (connection) while held: refused"
    assert unless_held(deferred, "free.test", "d1", {("domain", "held.test")}) is deferred
    by_distribution = unless_held(deferred, "free.test", "d1", {("distribution", "d1")})
    assert by_distribution.state is State.HELD
    delivered = Outcome("s1", State.DELIVERED, Reason.DELIVERED)
    assert unless_held(delivered, "held.test", "d1", {("domain", "held.test")}) is delivered


def test_outcome_rows_number_attempts_and_keep_the_due_time_unless_given() -> None:
    row = {
        "distribution_id": "d1",
        "account": "acme",
        "rcpt_key": "a@dest.test",
        "attempts": 2,
        "due_at": 50.0,
    }
    batch = OutcomeRows()
    attempt = Attempt(1.0, 2.0, Reason.MAILBOX_UNKNOWN, code=550, enhanced="5.1.1", text="no")
    bounce = Outcome(
        "s1",
        State.BOUNCED,
        Reason.MAILBOX_UNKNOWN,
        attempt=attempt,
        suppress=Reason.SUPPRESSED_BOUNCE,
    )
    batch.add(row, bounce, 3.0)
    batch.add(row, Outcome("s2", State.DELIVERED, Reason.DELIVERED, detail="ok"), 3.0)
    [first, second] = batch.finish
    assert first[:4] == ("bounced", "mailbox-unknown", 50.0, 3)
    assert first[-1] == "s1"
    assert second[3] == 2  # no attempt, no new number
    assert second[7] == "ok"  # the detail stands in for a reply text
    assert [a[:2] for a in batch.attempts] == [("s1", 3)]
    assert batch.suppress == [("acme", "a@dest.test", "suppressed-bounce", 3.0, "no")]
    assert [e[3] for e in batch.events] == ["bounced", "delivered"]


# against the server ---------------------------------------------------------


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with postgres_schema() as url:
        yield url


async def test_an_unreachable_server_is_a_store_error() -> None:
    store = PostgresStore(f"postgresql://x@127.0.0.1:{pick_port(('127.0.0.1',))}/x")
    store.connect_timeout = 1.0
    with pytest.raises(StoreError, match="not reachable"):
        await store.open()


async def test_a_search_path_without_schema_is_a_store_error(database: str) -> None:
    missing = with_schema(postgres_dsn(), "no_such_schema_here")
    with pytest.raises(StoreError, match="no schema on the search_path"):
        await PostgresStore(missing).open()


async def test_workers_starting_together_migrate_once(database: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await asyncio.gather(
            *(stack.enter_async_context(PostgresStore(database)) for _ in range(5))
        )
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute("SELECT version FROM schema_version ORDER BY version")
        versions = [row[0] for row in await cur.fetchall()]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_a_schema_newer_than_the_program_is_refused(database: str) -> None:
    async with PostgresStore(database):
        pass
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute("INSERT INTO schema_version VALUES (%s)", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match="newer than this program"):
        await PostgresStore(database).open()


async def test_times_are_kept_to_the_bit(database: str) -> None:
    from tests.test_store_contract import DIST, sends

    now = 1_764_200_000.123456
    async with PostgresStore(database) as store:
        [send_id] = (await store.enqueue(DIST, sends(1), hostname="h", now=now))[1]
        assert (await store.send(send_id)).created_at == now


async def test_sends_are_indexed_by_distribution_and_recipient(database: str) -> None:
    # the planner's choice on an empty table says nothing; the index must exist
    async with PostgresStore(database):
        pass
    async with await psycopg.AsyncConnection.connect(database) as conn:
        cur = await conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND indexname = 'sends_recipient'"
        )
        [(definition,)] = await cur.fetchall()
    assert "(distribution_id, rcpt_key)" in definition
