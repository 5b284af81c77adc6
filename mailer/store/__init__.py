"""The durable queue: a :class:`Store` protocol with an SQLite backend
(embedded default) and a PostgreSQL backend loaded only when configured."""

from __future__ import annotations

from mailer.errors import ConfigError
from mailer.store.base import Store
from mailer.store.sqlite import SQLiteStore


def open_store(database: str) -> Store:
    """The backend for a ``database`` setting: a PostgreSQL URL or an SQLite
    path. The store still has to be opened (``async with``)."""
    if database.startswith(("postgres://", "postgresql://")):
        raise ConfigError("database", "this build has no PostgreSQL store; use an SQLite path")
    return SQLiteStore(database)


__all__ = ["SQLiteStore", "Store", "open_store"]
