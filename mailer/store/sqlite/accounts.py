"""Accounts, API keys and the fair-share claim of the SQLite store (SQL
and the work inside a transaction; no I/O of their own).

The fair claim walks the ``sends_fair`` index (account, distribution,
due time) of waiting sends: the accounts with waiting mail and their
distributions are found by skipping from one key to the next (a loose
index scan, one probe per account or distribution), and each lane's due
sends are the front of its index range. Nothing scans the queue.
"""

from __future__ import annotations

import json
import sqlite3

from mailer.store import fair
from mailer.store.models import AccountChange

# Free-string accounts of the distributions and suppressions become
# records named after their id. The account row also holds the claim's
# round-robin state (served_at, cursor) and the rate cap's bucket. The
# claim walks sends_fair now; sends_ready (due time alone) served only the
# first-due claim, and keeping both would slow every claim and enqueue.
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
    WHERE state IN ('queued', 'deferred');
DROP INDEX sends_ready
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
# Each step comes with its account's claim state, or its distribution's
# priority, in the same statement.
NEXT_ACCOUNT = """
SELECT next.account, a.served_at, a.cursor, a.rate_cap, a.tokens, a.tokens_at
FROM (
    SELECT account FROM sends WHERE state IN ('queued', 'deferred') AND account > ?
    ORDER BY account LIMIT 1
) next LEFT JOIN accounts a ON a.id = next.account
"""
NEXT_DISTRIBUTION = """
SELECT next.distribution_id, d.priority
FROM (
    SELECT distribution_id FROM sends
    WHERE state IN ('queued', 'deferred') AND account = ? AND distribution_id > ?
    ORDER BY account, distribution_id LIMIT 1
) next JOIN distributions d ON d.id = next.distribution_id
"""
# The front of a lane: its next due sends after the ones this claim has
# taken already. Params: account, distribution id, now, limit, offset.
LANE = """
SELECT id FROM sends
WHERE state IN ('queued', 'deferred') AND account = ? AND distribution_id = ? AND due_at <= ?
ORDER BY account, distribution_id, due_at LIMIT ? OFFSET ?
"""
# The picked sends (a JSON array of ids) leased in one statement: one
# UPDATE per lane cost more than the picking. Params: owner, lease_until,
# now, the ids.
LEASE = """
UPDATE sends SET state = 'sending', lease_owner = ?, lease_until = ?, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?))
RETURNING *
"""
SERVED = "UPDATE accounts SET served_at = ?, cursor = ? WHERE id = ?"
DRAW = "UPDATE accounts SET tokens = ?, tokens_at = ? WHERE id = ?"

# Walking more lanes than this in one claim would be a scan by another name.
MAX_LANES = 1000


def _loose_scan(conn: sqlite3.Connection, query: str, *prefix: object) -> list[sqlite3.Row]:
    found: list[sqlite3.Row] = []
    last = ""
    while len(found) < MAX_LANES:
        row = conn.execute(query, (*prefix, last)).fetchone()
        if row is None:
            break
        last = row[0]
        found.append(row)
    return found


def claim_due(
    conn: sqlite3.Connection, owner: str, limit: int, *, until: float, now: float
) -> list[sqlite3.Row]:
    """Lease up to ``limit`` due sends, dealt fairly over the accounts with
    due mail (least recently served first) and, within each account, over
    its distributions by priority, within each account's rate cap."""
    accounts = sorted(_loose_scan(conn, NEXT_ACCOUNT), key=lambda r: (r["served_at"] or 0.0, r[0]))
    picked: dict[str, list[str]] = {}
    lanes: dict[str, list[tuple[str, str]]] = {}
    drawn: dict[str, int] = {}
    served: dict[str, str] = {}

    def take_account(state: sqlite3.Row, share: int) -> int:
        account, cap = state[0], state["rate_cap"]
        available = fair.tokens(cap, state["tokens"], state["tokens_at"], now) if cap else 0.0
        room = fair.allowance(cap, available - drawn.get(account, 0), share)
        if account not in lanes:
            lanes[account] = [(r[0], r[1]) for r in _loose_scan(conn, NEXT_DISTRIBUTION, account)]

        def take_lane(dist_id: str, n: int) -> int:
            taken = picked.setdefault(dist_id, [])
            rows = conn.execute(LANE, (account, dist_id, now, n, len(taken))).fetchall()
            taken.extend(row[0] for row in rows)
            if rows:
                served[account] = dist_id
            return len(rows)

        got = 0
        for group in fair.by_priority(lanes[account]):
            if got >= room:
                break
            got += fair.deal(fair.rotate(group, state["cursor"] or ""), room - got, take_lane)
        drawn[account] = drawn.get(account, 0) + got
        return got

    fair.deal(accounts, limit, take_account)
    ids = [send_id for taken in picked.values() for send_id in taken]
    leased = conn.execute(LEASE, (owner, until, now, json.dumps(ids))).fetchall() if ids else []
    for state in accounts:
        account = state[0]
        # the round-robin state only matters where there is more than one
        # lane to turn between: one account with one distribution (the
        # common case) writes nothing
        if account in served and (len(accounts) > 1 or len(lanes[account]) > 1):
            conn.execute(SERVED, (now, served[account], account))
        if state["rate_cap"] and account in drawn:
            held = fair.tokens(state["rate_cap"], state["tokens"], state["tokens_at"], now)
            at = fair.drawn_at(state["tokens_at"], now)
            conn.execute(DRAW, (held - drawn[account], at, account))
    # in the order dealt: best priority first
    position = {send_id: index for index, send_id in enumerate(ids)}
    return sorted(leased, key=lambda row: position[row["id"]])


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
