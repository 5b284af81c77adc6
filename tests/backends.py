"""The store backends the contract tests run against."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailer.store.sqlite import SQLiteStore

StoreFactory = Callable[[pytest.FixtureRequest], contextlib.AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def sqlite_store(request: pytest.FixtureRequest) -> AsyncIterator[SQLiteStore]:
    tmp = request.getfixturevalue("tmp_path")
    async with SQLiteStore(tmp / "store.sqlite3") as store:
        yield store


BACKENDS = [pytest.param(sqlite_store, id="sqlite")]
