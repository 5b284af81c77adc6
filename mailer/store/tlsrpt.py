"""SMTP TLS reporting (RFC 8460) in the store: daily aggregate counts and
the once-a-day report jobs, the protocol both backends implement
(``store.tlsrpt``) and the SQL they share.

Counts are keyed by UTC day, policy domain, the policy (type, string, MX
patterns) and, for failures, the result type with the sending address,
the receiving MX and address and the failure reason code. Every worker adds
its counts with an upsert (``count = count + excluded.count``), in the same
transaction as the outcome batch of the sessions they describe, so that a
session counts once whichever worker made it and a crash loses the counts
together with the outcomes (whose sends go out, and are counted, again).

A report is a row per (day, domain), made for every domain with counts of a
finished day, claimed under a lease: one worker at a time builds and sends
it; a worker that dies leaves it due again when the lease ends.

The shared SQL uses ``%s`` placeholders (psycopg); SQLite runs it through
:func:`mailer.store.webhooks.qmark`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ReportState = Literal["due", "sent", "no-record", "failed"]


@dataclass(frozen=True)
class TLSCount:
    """One line of the daily aggregate; ``result_type`` is empty for
    successful sessions (whose address fields are empty too)."""

    day: str  # YYYY-MM-DD, UTC
    domain: str
    policy_type: str
    policy_string: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()
    result_type: str = ""
    sending_ip: str = ""
    receiving_mx: str = ""
    receiving_ip: str = ""
    reason_code: str = ""
    count: int = 1

    def key(self) -> tuple[str, ...]:
        """Everything but the count: what one row of the table is."""
        return (
            self.day,
            self.domain,
            self.policy_type,
            json.dumps(list(self.policy_string)),
            json.dumps(list(self.mx_host)),
            self.result_type,
            self.sending_ip,
            self.receiving_mx,
            self.receiving_ip,
            self.reason_code,
        )


@dataclass(frozen=True)
class ReportJob:
    id: str
    day: str
    domain: str
    state: str
    tries: int
    next_at: float
    sent_at: float | None
    detail: str | None


class TLSReportStore(Protocol):
    """Daily TLS counts and report jobs. Every method raises StoreError on
    backend failure."""

    async def add_counts(self, counts: Sequence[TLSCount]) -> None:
        """Add ``counts`` to the daily aggregates in one transaction."""
        ...

    async def counts(self, day: str, domain: str | None = None) -> list[TLSCount]:
        """The aggregates of ``day`` (one domain's, or all), ordered."""
        ...

    async def claim_reports(
        self, owner: str, *, before_day: str, limit: int, lease_seconds: float, now: float
    ) -> list[ReportJob]:
        """Make the report jobs of every (day, domain) with counts on a day
        before ``before_day`` that has none yet, then lease up to ``limit``
        due ones whose ``next_at`` has come and whose lease (if any) ended."""
        ...

    async def finish_report(
        self,
        owner: str,
        job_id: str,
        state: ReportState,
        *,
        now: float,
        next_at: float | None = None,
        detail: str | None = None,
    ) -> bool:
        """End ``owner``'s lease of the job with ``state`` (``due`` with
        ``next_at``: try again then). False when ``owner`` no longer holds
        it."""
        ...

    async def reports(self, day: str) -> list[ReportJob]:
        """The report jobs of ``day``, by domain."""
        ...

    async def prune_reports(self, *, before_day: str) -> int:
        """Delete the counts and report jobs of days before ``before_day``
        whose report is no longer due (sent, no record, failed); returns
        how many count rows went."""
        ...


def count_params(counts: Sequence[TLSCount]) -> list[tuple[Any, ...]]:
    """One upsert's parameters per distinct key, counts of a key summed:
    fewer rows to write, and no two updates of one row in a statement."""
    summed: dict[tuple[str, ...], int] = {}
    for count in counts:
        key = count.key()
        summed[key] = summed.get(key, 0) + count.count
    return [(*key, n) for key, n in sorted(summed.items())]


def tls_count(row: Mapping[str, Any]) -> TLSCount:
    return TLSCount(
        day=row["day"],
        domain=row["domain"],
        policy_type=row["policy_type"],
        policy_string=tuple(json.loads(row["policy_string"])),
        mx_host=tuple(json.loads(row["mx_host"])),
        result_type=row["result_type"],
        sending_ip=row["sending_ip"],
        receiving_mx=row["receiving_mx"],
        receiving_ip=row["receiving_ip"],
        reason_code=row["reason_code"],
        count=int(row["count"]),
    )


def report_job(row: Mapping[str, Any]) -> ReportJob:
    return ReportJob(
        id=row["id"],
        day=row["day"],
        domain=row["domain"],
        state=row["state"],
        tries=int(row["tries"]),
        next_at=float(row["next_at"]),
        sent_at=None if row["sent_at"] is None else float(row["sent_at"]),
        detail=row["detail"],
    )


# SQL shared by both backends ------------------------------------------------------

# V10 (the numbering is the store's: both backends append it to MIGRATIONS)
SCHEMA = """
CREATE TABLE tlsrpt_counts (
    day text NOT NULL,
    domain text NOT NULL,
    policy_type text NOT NULL,
    policy_string text NOT NULL,
    mx_host text NOT NULL,
    result_type text NOT NULL,
    sending_ip text NOT NULL,
    receiving_mx text NOT NULL,
    receiving_ip text NOT NULL,
    reason_code text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (day, domain, policy_type, policy_string, mx_host, result_type,
                 sending_ip, receiving_mx, receiving_ip, reason_code)
);
CREATE TABLE tlsrpt_reports (
    id text PRIMARY KEY,
    day text NOT NULL,
    domain text NOT NULL,
    state text NOT NULL,
    tries integer NOT NULL DEFAULT 0,
    next_at double precision NOT NULL,
    lease_owner text,
    lease_until double precision,
    sent_at double precision,
    detail text
);
CREATE INDEX tlsrpt_reports_due ON tlsrpt_reports (next_at) WHERE state = 'due'
"""

COLUMNS = (
    "day, domain, policy_type, policy_string, mx_host, result_type, "
    "sending_ip, receiving_mx, receiving_ip, reason_code"
)

ADD_COUNT = f"""
INSERT INTO tlsrpt_counts ({COLUMNS}, count)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT ({COLUMNS}) DO UPDATE SET count = tlsrpt_counts.count + excluded.count
"""

SELECT_COUNTS = f"""
SELECT {COLUMNS}, count FROM tlsrpt_counts WHERE day = %s ORDER BY {COLUMNS}
"""
SELECT_DOMAIN_COUNTS = f"""
SELECT {COLUMNS}, count FROM tlsrpt_counts WHERE day = %s AND domain = %s ORDER BY {COLUMNS}
"""

# Params: now, before_day.
MAKE_REPORTS = """
INSERT INTO tlsrpt_reports (id, day, domain, state, tries, next_at)
SELECT DISTINCT day || ' ' || domain, day, domain, 'due', 0, %s
FROM tlsrpt_counts WHERE day < %s
ON CONFLICT (id) DO NOTHING
"""

# Params: owner, lease_until, now, now, limit. {lock} is PostgreSQL's row
# lock clause, empty for SQLite (whose writers take turns anyway).
CLAIM_REPORTS = """
UPDATE tlsrpt_reports SET lease_owner = %s, lease_until = %s
WHERE id IN (
    SELECT id FROM tlsrpt_reports
    WHERE state = 'due' AND next_at <= %s AND (lease_until IS NULL OR lease_until < %s)
    ORDER BY next_at, id LIMIT %s {lock}
)
RETURNING id, day, domain, state, tries, next_at, sent_at, detail
"""

# Params: state, next_at, sent_at, detail, id, owner.
FINISH_REPORT = """
UPDATE tlsrpt_reports
SET state = %s, tries = tries + 1, next_at = %s, sent_at = %s, detail = %s,
    lease_owner = NULL, lease_until = NULL
WHERE id = %s AND lease_owner = %s
"""

# Params: before_day, before_day.
PRUNE_COUNTS = """
DELETE FROM tlsrpt_counts WHERE day < %s AND NOT EXISTS (
    SELECT 1 FROM tlsrpt_reports r
    WHERE r.day = tlsrpt_counts.day AND r.domain = tlsrpt_counts.domain AND r.state = 'due'
)
"""
PRUNE_REPORTS = "DELETE FROM tlsrpt_reports WHERE day < %s AND state <> 'due'"

SELECT_REPORTS = """
SELECT id, day, domain, state, tries, next_at, sent_at, detail
FROM tlsrpt_reports WHERE day = %s ORDER BY domain
"""
