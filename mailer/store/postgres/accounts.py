"""Accounts, API keys and the fair-share claim of the PostgreSQL store
(SQL and the work inside the caller's transaction).

Like the SQLite side (mailer.store.sqlite.accounts), the fair claim walks
the ``sends_fair`` index by skipping from one account or distribution to
the next, and leases each lane's due sends from the front of its index
range with ``FOR UPDATE SKIP LOCKED``. The rows of the accounts with due
mail are locked first, in id order, so that workers sharing the store see
one another's draws from a rate cap's bucket.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import DictRow

from mailer.store import fair
from mailer.store.models import AccountChange

Conn = psycopg.AsyncConnection[DictRow]

# As SQLite's (mailer.store.sqlite.accounts): records for the free-string
# accounts, the claim's round-robin state and rate-cap bucket in the account
# row, sends_fair in place of sends_ready.
SCHEMA_ACCOUNTS = """
CREATE TABLE accounts (
    id text PRIMARY KEY,
    name text NOT NULL,
    language text NOT NULL DEFAULT 'en',
    rate_cap integer,
    priority text NOT NULL DEFAULT 'normal',
    created_at double precision NOT NULL,
    served_at double precision NOT NULL DEFAULT 0,
    cursor text NOT NULL DEFAULT '',
    tokens double precision,
    tokens_at double precision
);
INSERT INTO accounts (id, name, created_at)
SELECT account, account, min(created_at) FROM distributions GROUP BY account;
INSERT INTO accounts (id, name, created_at)
SELECT account, account, min(created_at) FROM suppressions WHERE account <> '' GROUP BY account
ON CONFLICT (id) DO NOTHING;
CREATE TABLE api_keys (
    id text PRIMARY KEY,
    digest text NOT NULL UNIQUE,
    account text NOT NULL REFERENCES accounts(id),
    operator boolean NOT NULL DEFAULT false,
    name text,
    created_at double precision NOT NULL,
    revoked_at double precision
);
ALTER TABLE distributions ADD COLUMN priority text NOT NULL DEFAULT 'normal';
CREATE INDEX distributions_account ON distributions (account, id);
CREATE INDEX sends_fair ON sends (account, distribution_id, due_at)
    WHERE state IN ('queued', 'deferred');
DROP INDEX sends_ready
"""

ENSURE_ACCOUNT = """
INSERT INTO accounts (id, name, created_at) VALUES (%(account)s, %(account)s, %(now)s)
ON CONFLICT (id) DO NOTHING
"""
SET_PRIORITY = """
UPDATE distributions
SET priority = coalesce(%(priority)s, (SELECT priority FROM accounts WHERE id = %(account)s))
WHERE id = %(distribution)s
"""
INSERT_ACCOUNT = """
INSERT INTO accounts (id, name, language, rate_cap, priority, created_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""
SELECT_ACCOUNT = "SELECT * FROM accounts WHERE id = %s"
LIST_DISTRIBUTIONS = "SELECT * FROM distributions WHERE id > %s ORDER BY id LIMIT %s"
LIST_ACCOUNT_DISTRIBUTIONS = (
    "SELECT * FROM distributions WHERE account = %s AND id > %s ORDER BY id LIMIT %s"
)
SELECT_ACCOUNTS = "SELECT * FROM accounts ORDER BY id"
UPDATE_ACCOUNT = """
UPDATE accounts SET name = coalesce(%s, name), language = coalesce(%s, language),
    rate_cap = CASE WHEN %s THEN NULL ELSE coalesce(%s, rate_cap) END,
    priority = coalesce(%s, priority)
WHERE id = %s
RETURNING *
"""

INSERT_KEY = """
INSERT INTO api_keys (id, digest, account, operator, name, created_at)
VALUES (%s, %s, %s, %s, %s, %s)
"""
SELECT_KEY_BY_DIGEST = "SELECT * FROM api_keys WHERE digest = %s"
SELECT_KEYS = "SELECT * FROM api_keys ORDER BY created_at, id"
SELECT_ACCOUNT_KEYS = "SELECT * FROM api_keys WHERE account = %s ORDER BY created_at, id"
REVOKE_KEY = "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"

NEXT_ACCOUNT = """
SELECT account FROM sends WHERE state IN ('queued', 'deferred') AND account > %s
ORDER BY account LIMIT 1
"""
NEXT_DISTRIBUTION = """
SELECT next.distribution_id, d.priority
FROM (
    SELECT distribution_id FROM sends
    WHERE state IN ('queued', 'deferred') AND account = %s AND distribution_id > %s
    ORDER BY account, distribution_id LIMIT 1
) next JOIN distributions d ON d.id = next.distribution_id
"""
LOCK_ACCOUNTS = """
SELECT id, served_at, cursor, rate_cap, tokens, tokens_at FROM accounts
WHERE id = ANY(%s) ORDER BY id FOR UPDATE
"""

_SUPPRESSED = """(
    SELECT reason FROM suppressions
    WHERE address = s.rcpt_key AND account IN (s.account, '')
    ORDER BY account DESC LIMIT 1
) AS suppressed"""

CLAIM_LANE = f"""
UPDATE sends s SET state = 'sending', lease_owner = %(owner)s, lease_until = %(until)s,
    updated_at = %(now)s
FROM (
    SELECT id, due_at AS ord FROM sends
    WHERE state IN ('queued', 'deferred') AND account = %(account)s
        AND distribution_id = %(distribution)s AND due_at <= %(now)s
    ORDER BY account, distribution_id, due_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) picked
WHERE s.id = picked.id
RETURNING s.*, picked.ord, {_SUPPRESSED}
"""
SERVED = "UPDATE accounts SET served_at = %s, cursor = %s WHERE id = %s"
DRAW = "UPDATE accounts SET tokens = %s, tokens_at = %s WHERE id = %s"

MAX_LANES = 1000


async def _one(conn: Conn, query: str, params: Any) -> DictRow | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def _loose_scan(conn: Conn, query: str, *prefix: object) -> list[DictRow]:
    found: list[DictRow] = []
    last = ""
    while len(found) < MAX_LANES:
        row = await _one(conn, query, (*prefix, last))
        if row is None:
            break
        last = next(iter(row.values()))
        found.append(row)
    return found


async def claim_due(
    conn: Conn, owner: str, limit: int, *, until: float, now: float
) -> list[DictRow]:
    """Lease up to ``limit`` due sends, dealt fairly over the accounts with
    due mail (least recently served first) and, within each account, over
    its distributions by priority, within each account's rate cap. Rows
    come with ``ord`` (due time) and ``suppressed``."""
    names = [row["account"] for row in await _loose_scan(conn, NEXT_ACCOUNT)]
    if not names:
        return []
    cur = await conn.execute(LOCK_ACCOUNTS, (names,))
    states = {row["id"]: row for row in await cur.fetchall()}
    order = sorted(names, key=lambda n: (states[n]["served_at"] if n in states else 0.0, n))
    leased: list[DictRow] = []
    lanes: dict[str, list[tuple[str, str]]] = {}
    drawn: dict[str, int] = {}
    served: dict[str, str] = {}

    async def take_account(account: str, share: int) -> int:
        state = states.get(account)
        cap = state["rate_cap"] if state else None
        available = 0.0
        if state is not None and cap:
            available = fair.tokens(cap, state["tokens"], state["tokens_at"], now)
        room = fair.allowance(cap, available - drawn.get(account, 0), share)
        if account not in lanes:
            found = await _loose_scan(conn, NEXT_DISTRIBUTION, account)
            lanes[account] = [(r["distribution_id"], r["priority"]) for r in found]

        async def take_lane(dist_id: str, n: int) -> int:
            params = {
                "owner": owner,
                "until": until,
                "now": now,
                "account": account,
                "distribution": dist_id,
                "limit": n,
            }
            cur = await conn.execute(CLAIM_LANE, params)
            rows = sorted(await cur.fetchall(), key=lambda row: (row["ord"], row["id"]))
            leased.extend(rows)
            if rows:
                served[account] = dist_id
            return len(rows)

        got = 0
        cursor = state["cursor"] if state else ""
        for group in fair.by_priority(lanes[account]):
            if got >= room:
                break
            got += await fair.adeal(fair.rotate(group, cursor), room - got, take_lane)
        drawn[account] = drawn.get(account, 0) + got
        return got

    await fair.adeal(order, limit, take_account)
    for account, dist_id in served.items():
        # round-robin state matters only where there are lanes to turn between
        if len(names) > 1 or len(lanes[account]) > 1:
            await conn.execute(SERVED, (now, dist_id, account))
    for account, count in drawn.items():
        state = states.get(account)
        if state and state["rate_cap"]:
            held = fair.tokens(state["rate_cap"], state["tokens"], state["tokens_at"], now)
            at = fair.drawn_at(state["tokens_at"], now)
            await conn.execute(DRAW, (held - count, at, account))
    return leased


def change_params(account_id: str, change: AccountChange) -> tuple[object, ...]:
    return (
        change.name,
        change.language,
        change.clear_rate_cap,
        change.rate_cap,
        change.priority,
        account_id,
    )
