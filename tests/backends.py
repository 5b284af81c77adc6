"""The store backends the contract tests run against.

PostgreSQL: the server in ``MAILER_TEST_POSTGRES_DSN`` (a postgresql://
URL; default the local trust-auth server, database ``test``). Every test
gets a fresh schema, dropped afterwards. When the server cannot be reached
the PostgreSQL tests are skipped, saying so, except under CI (``CI`` set),
where they fail: CI must exercise that side.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailer.store.sqlite.store import SQLiteStore

StoreFactory = Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[Any]]

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_dsn() -> str:
    return os.environ.get("MAILER_TEST_POSTGRES_DSN") or DEFAULT_POSTGRES_DSN


def _unavailable(why: str) -> None:
    message = f"PostgreSQL not reachable at {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must reach it: start it or set MAILER_TEST_POSTGRES_DSN)")
    pytest.skip(f"{message} (set MAILER_TEST_POSTGRES_DSN to run the PostgreSQL side)")


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh, empty schema on the test server; yields the URL that uses it.
    Skips (fails under CI) when the server cannot be reached."""
    dsn = postgres_dsn()
    try:
        from mailer.store.postgres.schema import create_schema, describe, drop_schema
    except ImportError as exc:
        _unavailable(f"{dsn}: psycopg is not installed ({exc})")
        raise
    from mailer.errors import StoreError

    schema = f"t_{secrets.token_hex(6)}"
    try:
        url = await create_schema(dsn, schema)
    except StoreError as exc:
        why = " ".join(str(exc.__cause__ or exc).split())  # libpq's message spans lines
        _unavailable(f"{describe(dsn)}: {why}")
        raise
    try:
        yield url
    finally:
        await drop_schema(dsn, schema)


@contextlib.asynccontextmanager
async def sqlite_store(request: pytest.FixtureRequest) -> AsyncIterator[SQLiteStore]:
    tmp = request.getfixturevalue("tmp_path")
    async with SQLiteStore(tmp / "store.sqlite3") as store:
        yield store


@contextlib.asynccontextmanager
async def postgres_store(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    async with postgres_schema() as url:
        from mailer.store.postgres.store import PostgresStore

        async with PostgresStore(url) as store:
            yield store


BACKENDS = [
    pytest.param(sqlite_store, id="sqlite"),
    pytest.param(postgres_store, id="postgres", marks=pytest.mark.postgres),
]
