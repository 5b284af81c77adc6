"""Named SQL of the SQLite store, kept apart from the code that runs it."""

from __future__ import annotations

from mailer.store.models import SendFilter

SCHEMA_V1 = """
CREATE TABLE distributions (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    sender_address TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT,
    text TEXT,
    unsubscribe_url TEXT,
    send_at REAL,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE TABLE sends (
    id TEXT PRIMARY KEY,
    distribution_id TEXT NOT NULL REFERENCES distributions(id),
    account TEXT NOT NULL,
    recipient TEXT NOT NULL,
    rcpt_key TEXT NOT NULL,
    domain TEXT NOT NULL,
    name TEXT NOT NULL,
    variables TEXT NOT NULL,
    reference TEXT,
    message_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    reason TEXT NOT NULL DEFAULT 'queued',
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_code INTEGER,
    last_enhanced TEXT,
    last_text TEXT,
    identity TEXT
);
CREATE INDEX sends_ready ON sends (due_at) WHERE state IN ('queued', 'deferred');
CREATE INDEX sends_leased ON sends (lease_until) WHERE state = 'sending';
CREATE INDEX sends_distribution ON sends (distribution_id, state);
CREATE INDEX sends_domain ON sends (domain, state);
CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    send_id TEXT NOT NULL REFERENCES sends(id),
    number INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    reason TEXT NOT NULL,
    mx_host TEXT,
    address TEXT,
    tls_version TEXT,
    tls_cipher TEXT,
    code INTEGER,
    enhanced TEXT,
    text TEXT
);
CREATE INDEX attempts_send ON attempts (send_id, number);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    send_id TEXT NOT NULL,
    distribution_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    code INTEGER,
    enhanced TEXT,
    text TEXT,
    detail TEXT
);
CREATE INDEX events_send ON events (send_id, seq);
CREATE TABLE suppressions (
    account TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    detail TEXT,
    PRIMARY KEY (account, address)
);
"""


def split_statements(script: str) -> list[str]:
    """The schema scripts hold no ';' inside statements, so a split is
    enough (and keeps every statement inside the migration transaction,
    which executescript() would commit)."""
    return [part.strip() for part in script.split(";") if part.strip()]


INSERT_DISTRIBUTION = """
INSERT INTO distributions (id, account, sender_address, sender_name, subject, html, text,
    unsubscribe_url, send_at, tags, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

INSERT_SEND = """
INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, variables,
    reference, message_id, due_at, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

INSERT_EVENT = """
INSERT INTO events (send_id, distribution_id, at, state, reason, code, enhanced, text, detail)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

SELECT_DISTRIBUTION = "SELECT * FROM distributions WHERE id = ?"

# Sends whose lease ran out (their worker died) come first, then due sends,
# oldest due first. Params: owner, lease_until, now, now, limit.
CLAIM_EXPIRED = """
UPDATE sends SET state = 'sending', lease_owner = ?, lease_until = ?, updated_at = ?
WHERE id IN (
    SELECT id FROM sends WHERE state = 'sending' AND lease_until < ?
    ORDER BY lease_until LIMIT ?
)
RETURNING *
"""

CLAIM_DUE = """
UPDATE sends SET state = 'sending', lease_owner = ?, lease_until = ?, updated_at = ?
WHERE id IN (
    SELECT id FROM sends WHERE state IN ('queued', 'deferred') AND due_at <= ?
    ORDER BY due_at LIMIT ?
)
RETURNING *
"""

SUPPRESSED_FOR = """
SELECT reason FROM suppressions WHERE address = ? AND account IN (?, '') LIMIT 1
"""

LEASED_SEND = """
SELECT * FROM sends WHERE id = ? AND state = 'sending' AND lease_owner = ?
"""

FINISH_SEND = """
UPDATE sends SET state = ?, reason = ?, due_at = ?, attempts = ?, updated_at = ?,
    last_code = ?, last_enhanced = ?, last_text = ?, identity = coalesce(?, identity),
    lease_owner = NULL, lease_until = NULL
WHERE id = ?
"""

RELEASE = """
UPDATE sends SET state = 'queued', due_at = ?, updated_at = ?, lease_owner = NULL,
    lease_until = NULL
WHERE id = ? AND state = 'sending' AND lease_owner = ?
"""

INSERT_ATTEMPT = """
INSERT INTO attempts (send_id, number, started_at, finished_at, reason, mx_host, address,
    tls_version, tls_cipher, code, enhanced, text)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

SELECT_SEND = "SELECT * FROM sends WHERE id = ?"
SELECT_ATTEMPTS = "SELECT * FROM attempts WHERE send_id = ? ORDER BY number"
SELECT_EVENTS = "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
SELECT_SEND_EVENTS = "SELECT * FROM events WHERE send_id = ? AND seq > ? ORDER BY seq LIMIT ?"
COUNT_STATES = "SELECT state, count(*) FROM sends GROUP BY state"
COUNT_DISTRIBUTION_STATES = (
    "SELECT state, count(*) FROM sends WHERE distribution_id = ? GROUP BY state"
)

SUMMARY = """
SELECT
    sum(CASE WHEN state IN ('queued', 'deferred') AND due_at <= ? THEN 1
             WHEN state = 'sending' AND lease_until < ? THEN 1 ELSE 0 END) AS due,
    sum(CASE WHEN state = 'sending' AND lease_until >= ? THEN 1 ELSE 0 END) AS in_flight,
    sum(CASE WHEN state IN ('queued', 'deferred') AND due_at > ? THEN 1 ELSE 0 END) AS waiting,
    min(CASE WHEN state IN ('queued', 'deferred') THEN due_at
             WHEN state = 'sending' THEN lease_until END) AS next_due
FROM sends WHERE state IN ('queued', 'deferred', 'sending')
"""

UPSERT_SUPPRESSION = """
INSERT INTO suppressions (account, address, reason, created_at, detail) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
"""
DELETE_SUPPRESSION = "DELETE FROM suppressions WHERE account = ? AND address = ?"
SELECT_SUPPRESSIONS = "SELECT * FROM suppressions ORDER BY account, address"
SELECT_ACCOUNT_SUPPRESSIONS = "SELECT * FROM suppressions WHERE account = ? ORDER BY address"


def send_filter(
    flt: SendFilter, after: str | None, *, placeholder: str
) -> tuple[str, list[object]]:
    """The WHERE clause of a send listing (pure; shared by the backends)."""
    clauses: list[str] = []
    params: list[object] = []

    def some(column: str, values: tuple[str, ...]) -> None:
        clauses.append(f"{column} IN ({', '.join(placeholder for _ in values)})")
        params.extend(values)

    if flt.states:
        some("state", tuple(s.value for s in flt.states))
    if flt.reasons:
        some("reason", tuple(r.value for r in flt.reasons))
    if flt.distribution_id is not None:
        clauses.append(f"distribution_id = {placeholder}")
        params.append(flt.distribution_id)
    if flt.domain is not None:
        clauses.append(f"domain = {placeholder}")
        params.append(flt.domain.lower())
    if flt.since is not None:
        clauses.append(f"updated_at >= {placeholder}")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append(f"updated_at < {placeholder}")
        params.append(flt.until)
    if after is not None:
        clauses.append(f"id > {placeholder}")
        params.append(after)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
