"""Named SQL of the SQLite store, kept apart from the code that runs it."""

from __future__ import annotations

from mailer.store.rows import FEED_COLUMNS
from mailer.store.rules import suppression_strength_sql

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


# Idempotency keys of enqueue requests, per account; cancellation and
# unsubscription need no new columns.
SCHEMA_V2 = """
CREATE TABLE idempotency (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    distribution_id TEXT NOT NULL REFERENCES distributions(id),
    send_ids TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (account, key)
)
"""

# Webhook endpoints per account with their event-feed cursor and lease,
# the one fixed batch of each, and the log of delivery attempts.
SCHEMA_V7 = """
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT,
    event_types TEXT NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until REAL,
    enabled INTEGER NOT NULL,
    disabled_reason TEXT,
    cursor INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    failing_since REAL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account);
CREATE INDEX webhook_endpoints_due ON webhook_endpoints (next_attempt_at) WHERE enabled = 1;
CREATE TABLE webhook_batches (
    endpoint_id TEXT PRIMARY KEY REFERENCES webhook_endpoints(id),
    id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id),
    webhook_id TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    at REAL NOT NULL,
    status INTEGER,
    latency REAL NOT NULL,
    outcome TEXT NOT NULL,
    excerpt TEXT NOT NULL,
    error TEXT
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)
"""

# Params: owner, lease until, now, now, limit.
CLAIM_WEBHOOK_ENDPOINTS = """
UPDATE webhook_endpoints SET lease_owner = ?, lease_until = ?
WHERE id IN (
    SELECT id FROM webhook_endpoints
    WHERE enabled = 1 AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)
    ORDER BY next_attempt_at LIMIT ?
)
RETURNING *
"""


INSERT_DISTRIBUTION = """
INSERT INTO distributions (id, account, sender_address, sender_name, subject, html, text,
    unsubscribe_url, send_at, tags, created_at, unsubscribe_one_click, language)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# A whole batch of new sends in one statement, from a JSON array with one
# [id, recipient, rcpt_key, domain, name, variables, reference, message_id]
# per send (rows.new_sends_json): executemany() would hand the GIL
# back and take it again for every row, and under a busy event loop each
# take can wait a switch interval. Params: distribution id, account,
# due_at, now, the array.
INSERT_SENDS_JSON = """
INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, variables,
    reference, message_id, due_at, created_at, updated_at)
SELECT json_extract(value, '$[0]'), ?1, ?2, json_extract(value, '$[1]'),
    json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),
    json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
    ?3, ?4, ?4
FROM json_each(?5)
"""

# The queued event of each send of a new distribution, in the order of the
# send ids (their order in the request). Params: distribution id, now.
INSERT_QUEUED_EVENTS = """
INSERT INTO events (send_id, distribution_id, at, state, reason)
SELECT id, distribution_id, ?2, 'queued', 'queued'
FROM sends WHERE distribution_id = ?1 ORDER BY id
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

# Those of the sends (a JSON array of ids) leased by the owner.
LEASED_SENDS_JSON = """
SELECT * FROM sends
WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'sending' AND lease_owner = ?2
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

RENEW = """
UPDATE sends SET lease_until = ?
WHERE id = ? AND state = 'sending' AND lease_owner = ?
"""

INSERT_ATTEMPT = """
INSERT INTO attempts (send_id, number, started_at, finished_at, reason, mx_host, address,
    tls_version, tls_cipher, code, enhanced, text, tls_policy)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

SELECT_SEND = "SELECT * FROM sends WHERE id = ?"
SELECT_ATTEMPTS = "SELECT * FROM attempts WHERE send_id = ? ORDER BY number"
# Events with what the platform correlates them by: the send's account and
# reference, the distribution's tags. Params: account or NULL (every
# account), send id or NULL (every send), after, limit.
SELECT_EVENTS = f"""
SELECT {FEED_COLUMNS} FROM events e
LEFT JOIN sends s ON s.id = e.send_id
LEFT JOIN distributions d ON d.id = e.distribution_id
WHERE e.seq > ?3 AND (?1 IS NULL OR coalesce(e.account, s.account) = ?1)
    AND (?2 IS NULL OR e.send_id = ?2)
ORDER BY e.seq LIMIT ?4
"""
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

# A suppression only ever gives way to a stronger one (store/rules.py):
# never downgraded, its note kept. REPLACE_SUPPRESSION overwrites (an
# operator's explicit --replace).
UPSERT_SUPPRESSION = f"""
INSERT INTO suppressions (account, address, reason, created_at, detail) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
WHERE {suppression_strength_sql("excluded.reason")}
    > {suppression_strength_sql("suppressions.reason")}
"""
REPLACE_SUPPRESSION = """
INSERT INTO suppressions (account, address, reason, created_at, detail) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
"""
DELETE_SUPPRESSION = "DELETE FROM suppressions WHERE account = ? AND address = ?"
SELECT_SUPPRESSIONS = "SELECT * FROM suppressions ORDER BY account, address"
SELECT_ACCOUNT_SUPPRESSIONS = "SELECT * FROM suppressions WHERE account = ? ORDER BY address"


INSERT_IDEMPOTENCY = """
INSERT INTO idempotency (account, key, body_hash, distribution_id, send_ids, data, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
SELECT_IDEMPOTENCY = "SELECT * FROM idempotency WHERE account = ? AND key = ?"
# an expired key, before it is used anew
DELETE_IDEMPOTENCY = "DELETE FROM idempotency WHERE account = ? AND key = ?"
# retention: the webhook delivery log by age, expired keys, oldest first.
# Params: before, limit.
PRUNE_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE at < ? ORDER BY at LIMIT ?
)
"""
PRUNE_IDEMPOTENCY = """
DELETE FROM idempotency WHERE rowid IN (
    SELECT rowid FROM idempotency WHERE created_at < ? ORDER BY created_at LIMIT ?
)
"""

# Params: now, distribution_id. Leased sends are left to their worker.
CANCEL_DISTRIBUTION = """
UPDATE sends SET state = 'cancelled', reason = 'cancelled', updated_at = ?
WHERE distribution_id = ? AND state IN ('queued', 'deferred', 'held')
RETURNING id
"""

# Params: now, domain (NULL: every domain). `mailer flush`.
FLUSH_DEFERRED = """
UPDATE sends SET due_at = ?1
WHERE state = 'deferred' AND due_at > ?1 AND (?2 IS NULL OR domain = ?2)
"""

SELECT_SUPPRESSION = "SELECT reason FROM suppressions WHERE account = ? AND address = ?"
SELECT_SEND_TO = "SELECT * FROM sends WHERE id = ? AND account = ? AND rcpt_key = ?"


# Operator tools -------------------------------------------------------------

# Holds on a recipient domain or a distribution; events by time for the
# throughput of the last minutes.
SCHEMA_V3 = """
CREATE TABLE holds (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX events_at ON events (at);
ALTER TABLE sends ADD COLUMN replayed_at REAL
"""

# A distribution's unsubscribe options: whether its own URL takes RFC 8058
# one-click POSTs, and the language of the footer and unsubscribe page.
SCHEMA_V4 = """
ALTER TABLE distributions ADD COLUMN unsubscribe_one_click INTEGER NOT NULL DEFAULT 0;
ALTER TABLE distributions ADD COLUMN language TEXT
"""

# The unfinished sends alone, for the queue depth (`mailer_queue_depth`):
# counting them reads this index, never the finished history. The finished
# ones by age, for retention (`Store.prune`).
SCHEMA_V9 = """
CREATE INDEX sends_unfinished ON sends (state)
WHERE state IN ('queued', 'held', 'sending', 'deferred');
CREATE INDEX sends_finished ON sends (updated_at)
WHERE state IN ('delivered', 'bounced', 'failed', 'suppressed', 'cancelled')
"""

# Events of an account, not of a send (mailer.reasons.AccountEventKind):
# send, distribution, state and reason become optional, the account, kind
# and data (JSON text) are new; the CHECK keeps each row one or the other.
# SQLite changes NOT NULL only by copying the table; the AUTOINCREMENT
# counter goes with it, so that no seq is ever used twice. The webhook
# delivery log and the idempotency records are pruned by age (indexes).
SCHEMA_V11 = """
CREATE TABLE events_v11 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    send_id TEXT,
    distribution_id TEXT,
    at REAL NOT NULL,
    state TEXT,
    reason TEXT,
    code INTEGER,
    enhanced TEXT,
    text TEXT,
    detail TEXT,
    account TEXT,
    kind TEXT,
    data TEXT,
    CHECK (kind IS NULL AND send_id IS NOT NULL AND distribution_id IS NOT NULL
           AND state IS NOT NULL AND reason IS NOT NULL
        OR kind IS NOT NULL AND account IS NOT NULL)
);
INSERT INTO events_v11 (seq, send_id, distribution_id, at, state, reason, code, enhanced, text,
    detail)
SELECT seq, send_id, distribution_id, at, state, reason, code, enhanced, text, detail
FROM events ORDER BY seq;
DELETE FROM sqlite_sequence WHERE name = 'events_v11';
INSERT INTO sqlite_sequence (name, seq) SELECT 'events_v11', seq FROM sqlite_sequence
WHERE name = 'events';
DROP TABLE events;
ALTER TABLE events_v11 RENAME TO events;
CREATE INDEX events_send ON events (send_id, seq);
CREATE INDEX events_at ON events (at);
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
CREATE INDEX idempotency_created ON idempotency (created_at)
"""

# A send named by its distribution and recipient, as a returned message's
# Feedback-ID and recipient name it (mailer.feedback): without this index
# the lookup would read the distribution's every send.
SCHEMA_V12 = """
CREATE INDEX sends_recipient ON sends (distribution_id, rcpt_key)
"""
# Params: distribution id, rcpt_key, account. The unary + keeps the planner
# off sends_account (without statistics it would read the account's every
# send): the account only confirms what the index found.
SELECT_SEND_OF_DISTRIBUTION_TO = """
SELECT * FROM sends WHERE distribution_id = ? AND rcpt_key = ? AND +account = ?
ORDER BY created_at DESC, id DESC LIMIT 1
"""

# Retention. Params: before, limit.
PRUNABLE_SENDS = """
SELECT id FROM sends
WHERE state IN ('delivered', 'bounced', 'failed', 'suppressed', 'cancelled') AND updated_at < ?
ORDER BY updated_at LIMIT ?
"""
# Params: the ids (a JSON array), before.
PRUNE_ATTEMPTS = "DELETE FROM attempts WHERE send_id IN (SELECT value FROM json_each(?))"
PRUNE_EVENTS_OF = """
DELETE FROM events WHERE send_id IN (SELECT value FROM json_each(?1)) AND at < ?2
"""
PRUNE_SENDS = "DELETE FROM sends WHERE id IN (SELECT value FROM json_each(?))"
# Events of sends pruned earlier (recorded after their send was last
# changed). Params: before, limit.
PRUNE_ORPHAN_EVENTS = """
DELETE FROM events WHERE seq IN (
    SELECT seq FROM events WHERE at < ?
    AND NOT EXISTS (SELECT 1 FROM sends WHERE sends.id = events.send_id)
    ORDER BY at LIMIT ?
)
"""
QUEUE_DEPTH = """
SELECT state, count(*) FROM sends
WHERE state IN ('queued', 'held', 'sending', 'deferred') GROUP BY state
"""

UPSERT_HOLD = """
INSERT INTO holds (kind, value, note, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (kind, value) DO UPDATE SET note = coalesce(excluded.note, holds.note)
"""
DELETE_HOLD = "DELETE FROM holds WHERE kind = ? AND value = ?"
SELECT_HOLDS = "SELECT * FROM holds ORDER BY kind, value"
ANY_HOLD = "SELECT 1 FROM holds LIMIT 1"

# a send matching any hold
_HELD = """(domain IN (SELECT value FROM holds WHERE kind = 'domain')
    OR distribution_id IN (SELECT value FROM holds WHERE kind = 'distribution'))"""

# The column a hold kind matches; params: now, value.
HOLD_SENDS = {
    kind: f"""
UPDATE sends SET state = 'held', reason = 'held', updated_at = ?
WHERE {column} = ? AND state IN ('queued', 'deferred')
RETURNING id, distribution_id
"""
    for kind, column in (("domain", "domain"), ("distribution", "distribution_id"))
}

# Run after the hold is deleted, so that _HELD sees only the other holds.
# Params: now (due), now, value.
RELEASE_HELD = {
    kind: f"""
UPDATE sends SET state = 'queued', reason = 'released', due_at = ?, updated_at = ?
WHERE {column} = ? AND state = 'held' AND NOT {_HELD}
RETURNING id, distribution_id
"""
    for kind, column in (("domain", "domain"), ("distribution", "distribution_id"))
}

# A new distribution cannot be held yet, so only domain holds apply.
# Params: distribution id.
HOLD_NEW_SENDS = """
UPDATE sends SET state = 'held', reason = 'held'
WHERE distribution_id = ? AND state = 'queued'
    AND domain IN (SELECT value FROM holds WHERE kind = 'domain')
RETURNING id
"""

# Params: now, send id.
HOLD_IF_HELD = f"""
UPDATE sends SET state = 'held', reason = 'held', updated_at = ?
WHERE id = ? AND state = 'queued' AND {_HELD}
RETURNING id, distribution_id
"""

_ON_ACCOUNT = (
    "EXISTS (SELECT 1 FROM suppressions s WHERE s.account = sends.account "
    "AND s.address = sends.rcpt_key)"
)
_ON_GLOBAL = (
    "EXISTS (SELECT 1 FROM suppressions s WHERE s.account = '' AND s.address = sends.rcpt_key)"
)

# {where} from send_filter(replay_filter(...)).
REPLAY_COUNT = f"""
SELECT count(*) AS matching,
    sum(CASE WHEN {_ON_ACCOUNT} OR {_ON_GLOBAL} THEN 1 ELSE 0 END) AS suppressed,
    sum(CASE WHEN {_ON_GLOBAL} THEN 1 ELSE 0 END) AS globally_suppressed
FROM sends {{where}}
"""

REPLAY_CANDIDATES = f"""
SELECT id, distribution_id, account, rcpt_key, {_ON_ACCOUNT} AS on_account,
    {_ON_GLOBAL} AS on_global
FROM sends {{where}} ORDER BY id LIMIT ?
"""

# Params: now (due), now, now (replayed), send id. Attempts are kept: the
# count goes on, while the retry window starts again at replayed_at.
REQUEUE = """
UPDATE sends SET state = 'queued', reason = 'replayed', due_at = ?, updated_at = ?,
    replayed_at = ?, lease_owner = NULL, lease_until = NULL
WHERE id = ? AND state IN ('bounced', 'failed')
"""

FAILURE_REASONS = """
SELECT state, reason, count(*) AS n FROM sends
WHERE state IN ('bounced', 'failed', 'suppressed')
GROUP BY state, reason ORDER BY n DESC, state, reason LIMIT ?
"""
DEFERRING = """
SELECT domain, reason, count(*) AS n FROM sends WHERE state = 'deferred'
GROUP BY domain, reason ORDER BY n DESC, domain, reason LIMIT ?
"""
# Params: top. The domains with the most sends (the sends_domain index
# answers it), each counted per state.
DOMAIN_STATES = """
SELECT domain, state, count(*) AS n FROM sends
WHERE domain IN (
    SELECT domain FROM sends GROUP BY domain ORDER BY count(*) DESC, domain LIMIT ?
)
GROUP BY domain, state
"""
# Params: from, to. Minutes are wall-clock minutes (epoch seconds / 60).
THROUGHPUT = """
SELECT CAST(at / 60 AS INTEGER) AS minute, state, count(*) AS n FROM events
WHERE at >= ? AND at < ?
    AND state IN ('delivered', 'deferred', 'bounced', 'failed', 'suppressed')
GROUP BY minute, state
"""

# Params: address, account.
SUPPRESSIONS_FOR = """
SELECT * FROM suppressions WHERE address = ? AND account IN (?, '') ORDER BY account DESC
"""


# After the 250 (mailer.feedback) --------------------------------------------

# Returned messages, stored raw before the listener's 250 and processed
# after it; a partial index finds the unprocessed ones after a restart.
SCHEMA_V5 = """
CREATE TABLE inbound (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    raw BLOB NOT NULL,
    size INTEGER NOT NULL,
    tls INTEGER NOT NULL,
    peer TEXT,
    processed_at REAL,
    kind TEXT,
    layout TEXT,
    send_id TEXT,
    matched_by TEXT,
    problem TEXT,
    report TEXT
);
CREATE INDEX inbound_pending ON inbound (id) WHERE processed_at IS NULL;
CREATE INDEX inbound_send ON inbound (send_id);
CREATE TABLE account_pauses (
    account TEXT PRIMARY KEY,
    paused_at REAL,
    released_at REAL,
    detail TEXT
);
CREATE INDEX sends_account ON sends (account, created_at)
"""

INBOUND_COLUMNS = (
    "id, received_at, mail_from, recipients, size, tls, peer, processed_at, kind, layout, "
    "send_id, matched_by, problem, report"
)
INSERT_INBOUND = """
INSERT INTO inbound (id, received_at, mail_from, recipients, raw, size, tls, peer)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
SELECT_PENDING_INBOUND = (
    f"SELECT {INBOUND_COLUMNS}, raw FROM inbound WHERE processed_at IS NULL ORDER BY id LIMIT ?"
)
SELECT_INBOUND = f"SELECT {INBOUND_COLUMNS}, raw FROM inbound WHERE id = ?"
LIST_INBOUND = f"SELECT {INBOUND_COLUMNS} FROM inbound WHERE id > ? ORDER BY id LIMIT ?"
LIST_UNMATCHED_INBOUND = (
    f"SELECT {INBOUND_COLUMNS} FROM inbound WHERE id > ? AND processed_at IS NOT NULL "
    "AND send_id IS NULL ORDER BY id LIMIT ?"
)
FINISH_INBOUND = """
UPDATE inbound SET processed_at = ?, kind = ?, layout = ?, send_id = ?, matched_by = ?,
    problem = ?, report = ?
WHERE id = ? AND processed_at IS NULL
"""
SELECT_SEND_STATE = "SELECT id, distribution_id, account, recipient, state FROM sends WHERE id = ?"
# a late bounce: only a delivered send turns bounced
BOUNCE_DELIVERED = """
UPDATE sends SET state = 'bounced', reason = ?, last_code = ?, last_enhanced = ?,
    last_text = ?, updated_at = ?
WHERE id = ? AND state = 'delivered'
"""

# The circuit breaker: an account's paused mail and the window it judges.
UPSERT_PAUSE = """
INSERT INTO account_pauses (account, paused_at, released_at, detail) VALUES (?, ?, NULL, ?)
ON CONFLICT (account) DO UPDATE SET paused_at = excluded.paused_at, detail = excluded.detail
"""
PAUSE_SENDS = """
UPDATE sends SET state = 'held', reason = 'account-paused', updated_at = ?
WHERE account = ? AND state IN ('queued', 'deferred')
RETURNING id, distribution_id
"""
UNPAUSE = """
UPDATE account_pauses SET paused_at = NULL, released_at = ?
WHERE account = ? AND paused_at IS NOT NULL
"""
RELEASE_PAUSED_SENDS = """
UPDATE sends SET state = 'queued', reason = 'released', due_at = ?, updated_at = ?
WHERE account = ? AND state = 'held' AND reason = 'account-paused'
RETURNING id, distribution_id
"""
SELECT_PAUSES = "SELECT * FROM account_pauses ORDER BY account"
SELECT_PAUSE = "SELECT * FROM account_pauses WHERE account = ?"
# new sends of a paused account start held; params: distribution id
HOLD_NEW_SENDS_PAUSED = """
UPDATE sends SET state = 'held', reason = 'account-paused'
WHERE distribution_id = ? AND state = 'queued'
    AND account IN (SELECT account FROM account_pauses WHERE paused_at IS NOT NULL)
RETURNING id
"""
# params: account, since, customer-envelope LIKE pattern, limit
ACCOUNT_WINDOW = """
SELECT s.created_at AS at, s.state = 'bounced' AS hard_bounce,
    EXISTS (SELECT 1 FROM events e WHERE e.send_id = s.id AND e.reason = 'complained')
        AS complaint
FROM sends s
WHERE s.account = ? AND s.created_at >= ? AND s.state IN ('delivered', 'bounced')
    AND s.identity IS NOT NULL AND s.identity NOT LIKE ?
ORDER BY s.created_at DESC LIMIT ?
"""

# accounts with sends finished since a time: those the breaker sweeps
ACTIVE_ACCOUNTS = """
SELECT DISTINCT account FROM sends
WHERE updated_at >= ? AND state IN ('delivered', 'bounced')
ORDER BY account
"""

# Transport security: the MTA-STS policies of receiving domains (RFC 8461),
# shared by every worker, and the TLS policy each attempt was made under.
SCHEMA_V6 = """
CREATE TABLE sts_policies (
    domain TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    mode TEXT NOT NULL,
    mx TEXT NOT NULL,
    max_age INTEGER NOT NULL,
    fetched_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
ALTER TABLE attempts ADD COLUMN tls_policy TEXT
"""

UPSERT_STS_POLICY = """
INSERT INTO sts_policies (domain, policy_id, mode, mx, max_age, fetched_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode,
    mx = excluded.mx, max_age = excluded.max_age, fetched_at = excluded.fetched_at,
    expires_at = excluded.expires_at
"""
SELECT_STS_POLICY = "SELECT * FROM sts_policies WHERE domain = ?"
DELETE_STS_POLICY = "DELETE FROM sts_policies WHERE domain = ?"
# Params: now, limit. Due for a refresh once three quarters of max_age
# have passed (and still after expiry, while the domain publishes one).
STS_POLICIES_DUE = """
SELECT * FROM sts_policies WHERE fetched_at + 0.75 * max_age <= ? ORDER BY expires_at LIMIT ?
"""
