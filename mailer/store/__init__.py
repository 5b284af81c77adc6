"""The durable queue: a :class:`Store` protocol with an SQLite backend
(embedded default) and a PostgreSQL backend loaded only when configured."""

from __future__ import annotations

from mailer.errors import ConfigError
from mailer.store.base import Store
from mailer.store.sqlite.store import SQLiteStore


def is_postgres(database: str) -> bool:
    """Whether the ``database`` setting names a PostgreSQL server (else an
    SQLite file)."""
    return database.startswith(("postgres://", "postgresql://"))


def open_store(database: str) -> Store:
    """The backend for a ``database`` setting: a PostgreSQL URL or an SQLite
    path. The store still has to be opened (``async with``).

    Raises ConfigError for a PostgreSQL URL when the ``postgres`` extra
    (psycopg) is not installed.
    """
    if is_postgres(database):
        # imported here: psycopg is an optional extra, needed only when configured
        try:
            from mailer.store.postgres.store import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                "database",
                "a PostgreSQL URL needs the postgres extra "
                f"(pip install 'mailer[postgres]'): {exc}",
            ) from exc
        return PostgresStore(database)
    return SQLiteStore(database)


__all__ = ["SQLiteStore", "Store", "is_postgres", "open_store"]
