"""Schemas of the PostgreSQL store: versioned migrations, the advisory-lock
key of a schema, and scratch schemas (tests, ``mailer bench``).

psycopg exceptions are translated here into StoreError.
"""

from __future__ import annotations

import re
import zlib
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow

from mailer.errors import StoreError, ValidationError
from mailer.store.postgres import sql as q
from mailer.store.rules import split_statements

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


async def migrate(conn: psycopg.AsyncConnection[DictRow], dsn: str) -> int:
    """Bring the schema on the search_path up to date, inside the caller's
    transaction; returns the schema's advisory-lock key.

    Several processes may start at once: one migrates, the others wait for
    it and find nothing left to do. Raises StoreError when no schema on the
    search_path exists or the schema is newer than this program.
    """
    cur = await conn.execute(q.CURRENT_SCHEMA)
    row = await cur.fetchone()
    schema = row["schema"] if row else None
    if schema is None:
        raise StoreError(f"postgres {describe(dsn)}: no schema on the search_path exists")
    key = schema_key(schema)
    await conn.execute(q.ADVISORY_LOCK, (q.LOCK_MIGRATE, key))
    await conn.execute(q.CREATE_SCHEMA_VERSION)
    cur = await conn.execute(q.SELECT_SCHEMA_VERSION)
    row = await cur.fetchone()
    current = row["version"] if row else 0
    if current > len(q.MIGRATIONS):
        raise StoreError(
            f"postgres {describe(dsn)}: schema version {current} is newer than this program "
            f"({len(q.MIGRATIONS)})"
        )
    for version, script in enumerate(q.MIGRATIONS[current:], start=current + 1):
        for statement in split_statements(script):
            await conn.execute(statement)
        await conn.execute(q.INSERT_SCHEMA_VERSION, (version,))
    return key


def schema_key(schema: str) -> int:
    """A stable signed 32-bit number for ``schema``: the object part of the
    store's advisory locks, so that deployments in separate schemas of one
    database do not wait on each other (pure)."""
    return int.from_bytes(zlib.crc32(schema.encode()).to_bytes(4, "big"), "big", signed=True)


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without credentials, for messages
    (pure)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparseable DSN)"
    host = params.get("host") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


def _check_name(schema: str) -> None:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValidationError("schema", f"{schema!r} is not a plain lower-case identifier")


def with_schema(dsn: str, schema: str) -> str:
    """The URL ``dsn`` with ``schema`` as its search_path, through libpq's
    ``options`` parameter (pure).

    Raises ValidationError for a schema name that would need quoting or a
    DSN that is not a postgres:// URL.
    """
    _check_name(schema)
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValidationError("database", "expected a postgresql:// URL")
    query = parse_qsl(parts.query)
    options = [v for k, v in query if k == "options"]
    rest = [(k, v) for k, v in query if k != "options"]
    rest.append(("options", " ".join([*options, f"-csearch_path={schema}"])))
    # libpq decodes %XX only, not "+" for a space
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))


async def create_schema(dsn: str, schema: str) -> str:
    """Create the empty ``schema`` and return the URL that uses it.

    Raises StoreError when the server cannot be reached or refuses,
    ValidationError like :func:`with_schema`.
    """
    url = with_schema(dsn, schema)
    await _admin(dsn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return url


async def drop_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` and everything in it. Raises StoreError,
    ValidationError for a name that would need quoting."""
    _check_name(schema)
    await _admin(dsn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def _admin(dsn: str, statement: sql.Composed) -> None:
    try:
        async with await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=10
        ) as conn:
            await conn.execute(statement)
    except psycopg.Error as exc:
        raise StoreError(f"postgres {describe(dsn)}: {exc}") from exc
