"""TLS reporting counts and report jobs in the PostgreSQL store
(:class:`mailer.store.tlsrpt.TLSReportStore`). Report jobs are claimed with
``FOR UPDATE SKIP LOCKED``, so two workers never lease the same one; the SQL
is shared with SQLite (mailer.store.tlsrpt)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg
from psycopg.rows import DictRow

from mailer.store import tlsrpt as t

if TYPE_CHECKING:
    from mailer.store.postgres.store import PostgresStore

Conn = psycopg.AsyncConnection[DictRow]

SCHEMA_TLSRPT = t.SCHEMA
_CLAIM = t.CLAIM_REPORTS.format(lock="FOR UPDATE SKIP LOCKED")


async def add_counts(conn: Conn, counts: Sequence[t.TLSCount]) -> None:
    """Within the caller's transaction (the outcome batch's). The rows go
    in key order, so two workers adding to the same keys cannot deadlock."""
    if counts:
        async with conn.cursor() as cur:
            await cur.executemany(t.ADD_COUNT, t.count_params(counts))


class PostgresTLSReports:
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def add_counts(self, counts: Sequence[t.TLSCount]) -> None:
        async with self._store._tx() as conn:
            await add_counts(conn, counts)

    async def counts(self, day: str, domain: str | None = None) -> list[t.TLSCount]:
        if domain is None:
            found = await self._store._all(t.SELECT_COUNTS, (day,))
        else:
            found = await self._store._all(t.SELECT_DOMAIN_COUNTS, (day, domain))
        return [t.tls_count(row) for row in found]

    async def claim_reports(
        self, owner: str, *, before_day: str, limit: int, lease_seconds: float, now: float
    ) -> list[t.ReportJob]:
        async with self._store._tx() as conn:
            await conn.execute(t.MAKE_REPORTS, (now, before_day))
            cur = await conn.execute(_CLAIM, (owner, now + lease_seconds, now, now, limit))
            rows = await cur.fetchall()
        return sorted((t.report_job(row) for row in rows), key=lambda j: (j.next_at, j.id))

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
        async with self._store._tx() as conn:
            cur = await conn.execute(t.FINISH_REPORT, params)
            return cur.rowcount == 1

    async def prune_reports(self, *, before_day: str) -> int:
        async with self._store._tx() as conn:
            cur = await conn.execute(t.PRUNE_COUNTS, (before_day,))
            await conn.execute(t.PRUNE_REPORTS, (before_day,))
            return cur.rowcount

    async def reports(self, day: str) -> list[t.ReportJob]:
        return [t.report_job(row) for row in await self._store._all(t.SELECT_REPORTS, (day,))]
