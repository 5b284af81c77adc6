"""Accounts, API keys and the fair-share claim of the SQLite store (SQL
and the work inside a transaction; no I/O of their own).

The fair claim walks the ``sends_fair`` index (account, distribution,
due time) of waiting sends: the accounts with waiting mail and their
distributions are found by skipping from one key to the next (a loose
index scan, one probe per account or distribution), and each lane's due
sends are the front of its index range. Nothing scans the queue.
"""

from __future__ import annotations

import sqlite3

from mailer.store import fair
from mailer.store.models import AccountChange

# Free-string accounts of the distributions and suppressions become
# records named after their id. The account row also holds the claim's
# round-robin state (served_at, cursor) and the rate cap's bucket.
SCHEMA_ACCOUNTS = """
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    language TEXT NOT NULL DEFAULT 'en',
    rate_cap INTEGER,
    priority TEXT NOT NULL DEFAULT 'normal',
    created_at REAL NOT NULL,
    served_at REAL NOT NULL DEFAULT 0,
    cursor TEXT NOT NULL DEFAULT '',
    tokens REAL,
    tokens_at REAL
);
INSERT INTO accounts (id, name, created_at)
SELECT account, account, min(created_at) FROM distributions GROUP BY account;
INSERT OR IGNORE INTO accounts (id, name, created_at)
SELECT account, account, min(created_at) FROM suppressions WHERE account <> '' GROUP BY account;
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    account TEXT NOT NULL REFERENCES accounts(id),
    operator INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);
ALTER TABLE distributions ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
CREATE INDEX distributions_account ON distributions (account, id);
CREATE INDEX sends_fair ON sends (account, distribution_id, due_at)
    WHERE state IN ('queued', 'deferred')
"""

ENSURE_ACCOUNT = "INSERT OR IGNORE INTO accounts (id, name, created_at) VALUES (?1, ?1, ?2)"
# Params: the distribution's own priority or NULL, account, distribution id.
SET_PRIORITY = """
UPDATE distributions SET priority = coalesce(?1, (SELECT priority FROM accounts WHERE id = ?2))
WHERE id = ?3
"""
INSERT_ACCOUNT = """
INSERT INTO accounts (id, name, language, rate_cap, priority, created_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
SELECT_ACCOUNT = "SELECT * FROM accounts WHERE id = ?"
# Params: account or NULL (every account), after (id), limit.
LIST_DISTRIBUTIONS = """
SELECT * FROM distributions WHERE (?1 IS NULL OR account = ?1) AND id > ?2 ORDER BY id LIMIT ?3
"""
SELECT_ACCOUNTS = "SELECT * FROM accounts ORDER BY id"
UPDATE_ACCOUNT = """
UPDATE accounts SET name = coalesce(?, name), language = coalesce(?, language),
    rate_cap = CASE WHEN ? THEN NULL ELSE coalesce(?, rate_cap) END,
    priority = coalesce(?, priority)
WHERE id = ?
"""

INSERT_KEY = """
INSERT INTO api_keys (id, digest, account, operator, name, created_at) VALUES (?, ?, ?, ?, ?, ?)
"""
SELECT_KEY_BY_DIGEST = "SELECT * FROM api_keys WHERE digest = ?"
SELECT_KEYS = "SELECT * FROM api_keys ORDER BY created_at, id"
SELECT_ACCOUNT_KEYS = "SELECT * FROM api_keys WHERE account = ? ORDER BY created_at, id"
REVOKE_KEY = "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"

# The loose index scan: the next account, or distribution of an account,
# with waiting sends (sends_fair).
NEXT_ACCOUNT = """
SELECT account FROM sends WHERE state IN ('queued', 'deferred') AND account > ?
ORDER BY account LIMIT 1
"""
NEXT_DISTRIBUTION = """
SELECT distribution_id FROM sends
WHERE state IN ('queued', 'deferred') AND account = ? AND distribution_id > ?
ORDER BY account, distribution_id LIMIT 1
"""
# Params: owner, lease_until, now, account, distribution id, now, limit.
CLAIM_LANE = """
UPDATE sends SET state = 'sending', lease_owner = ?, lease_until = ?, updated_at = ?
WHERE id IN (
    SELECT id FROM sends
    WHERE state IN ('queued', 'deferred') AND account = ? AND distribution_id = ? AND due_at <= ?
    ORDER BY account, distribution_id, due_at LIMIT ?
)
RETURNING *
"""
ACCOUNT_STATE = """
SELECT id, served_at, cursor, rate_cap, tokens, tokens_at FROM accounts WHERE id = ?
"""
DISTRIBUTION_PRIORITY = "SELECT priority FROM distributions WHERE id = ?"
SERVED = "UPDATE accounts SET served_at = ?, cursor = ? WHERE id = ?"
DRAW = "UPDATE accounts SET tokens = ?, tokens_at = ? WHERE id = ?"

# Walking more lanes than this in one claim would be a scan by another name.
MAX_LANES = 1000


def _loose_scan(conn: sqlite3.Connection, query: str, *prefix: object) -> list[str]:
    found: list[str] = []
    last = ""
    while len(found) < MAX_LANES:
        row = conn.execute(query, (*prefix, last)).fetchone()
        if row is None:
            break
        last = row[0]
        found.append(last)
    return found


def claim_due(
    conn: sqlite3.Connection, owner: str, limit: int, *, until: float, now: float
) -> list[sqlite3.Row]:
    """Lease up to ``limit`` due sends, dealt fairly over the accounts with
    due mail (least recently served first) and, within each account, over
    its distributions by priority, within each account's rate cap."""
    accounts = []
    for account in _loose_scan(conn, NEXT_ACCOUNT):
        state = conn.execute(ACCOUNT_STATE, (account,)).fetchone()
        accounts.append((state["served_at"] if state else 0.0, account, state))
    accounts.sort(key=lambda item: (item[0], item[1]))
    leased: list[sqlite3.Row] = []

    def take_account(entry: tuple[float, str, sqlite3.Row | None], share: int) -> int:
        _, account, state = entry
        cap = state["rate_cap"] if state else None
        available = 0.0
        if state is not None and cap:
            available = fair.tokens(cap, state["tokens"], state["tokens_at"], now)
        room = fair.allowance(cap, available - drawn.get(account, 0), share)
        lanes = [
            (dist_id, conn.execute(DISTRIBUTION_PRIORITY, (dist_id,)).fetchone()[0])
            for dist_id in _loose_scan(conn, NEXT_DISTRIBUTION, account)
        ]
        cursor = state["cursor"] if state else ""
        got = 0
        for group in fair.by_priority(lanes):
            if got >= room:
                break

            def take_lane(dist_id: str, n: int) -> int:
                rows = conn.execute(
                    CLAIM_LANE, (owner, until, now, account, dist_id, now, n)
                ).fetchall()
                leased.extend(rows)
                if rows:
                    served[account] = dist_id
                return len(rows)

            got += fair.deal(fair.rotate(group, cursor), room - got, take_lane)
        drawn[account] = drawn.get(account, 0) + got
        return got

    drawn: dict[str, int] = {}
    served: dict[str, str] = {}
    fair.deal(accounts, limit, take_account)
    for _, account, state in accounts:
        if account in served:
            conn.execute(SERVED, (now, served[account], account))
        cap = state["rate_cap"] if state else None
        if cap and account in drawn:
            left = fair.tokens(cap, state["tokens"], state["tokens_at"], now) - drawn[account]
            conn.execute(DRAW, (left, fair.drawn_at(state["tokens_at"], now), account))
    return leased


def update_account(conn: sqlite3.Connection, account_id: str, change: AccountChange) -> int:
    return conn.execute(
        UPDATE_ACCOUNT,
        (
            change.name,
            change.language,
            change.clear_rate_cap,
            change.rate_cap,
            change.priority,
            account_id,
        ),
    ).rowcount
