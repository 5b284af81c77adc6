"""TLS reporting counts and report jobs in the SQLite store
(:class:`mailer.store.tlsrpt.TLSReportStore`); the SQL is shared with
PostgreSQL (mailer.store.tlsrpt)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailer.store import tlsrpt as t
from mailer.store.webhooks import qmark as q

if TYPE_CHECKING:
    from mailer.store.sqlite.store import SQLiteStore

SCHEMA_TLSRPT = t.SCHEMA
_CLAIM = q(t.CLAIM_REPORTS.format(lock=""))


def add_counts(conn: sqlite3.Connection, counts: Sequence[t.TLSCount]) -> None:
    """Within the caller's transaction (the outcome batch's)."""
    if counts:
        conn.executemany(q(t.ADD_COUNT), t.count_params(counts))


class SQLiteTLSReports:
    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    async def add_counts(self, counts: Sequence[t.TLSCount]) -> None:
        await self._store._run(self._store._tx, lambda conn: add_counts(conn, counts))

    async def counts(self, day: str, domain: str | None = None) -> list[t.TLSCount]:
        conn = self._store.conn
        query = q(t.SELECT_COUNTS if domain is None else t.SELECT_DOMAIN_COUNTS)
        params: tuple[str, ...] = (day,) if domain is None else (day, domain)
        found = await self._store._run(lambda: conn.execute(query, params).fetchall())
        return [t.tls_count(row) for row in found]

    async def claim_reports(
        self, owner: str, *, before_day: str, limit: int, lease_seconds: float, now: float
    ) -> list[t.ReportJob]:
        def work(conn: sqlite3.Connection) -> list[t.ReportJob]:
            conn.execute(q(t.MAKE_REPORTS), (now, before_day))
            params = (owner, now + lease_seconds, now, now, limit)
            return [t.report_job(row) for row in conn.execute(_CLAIM, params).fetchall()]

        return await self._store._run(self._store._tx, work)

    async def finish_report(
        self,
        owner: str,
        job_id: str,
        state: t.ReportState,
        *,
        now: float,
        next_at: float | None = None,
        detail: str | None = None,
    ) -> bool:
        sent_at = now if state == "sent" else None
        params = (state, next_at if next_at is not None else now, sent_at, detail, job_id, owner)

        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute(q(t.FINISH_REPORT), params).rowcount == 1

        return await self._store._run(self._store._tx, work)

    async def prune_reports(self, *, before_day: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            pruned = conn.execute(q(t.PRUNE_COUNTS), (before_day,)).rowcount
            conn.execute(q(t.PRUNE_REPORTS), (before_day,))
            return pruned

        return await self._store._run(self._store._tx, work)

    async def reports(self, day: str) -> list[t.ReportJob]:
        conn = self._store.conn
        found = await self._store._run(lambda: conn.execute(q(t.SELECT_REPORTS), (day,)).fetchall())
        return [t.report_job(row) for row in found]
