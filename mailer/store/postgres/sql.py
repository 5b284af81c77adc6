"""Named SQL of the PostgreSQL store, kept apart from the code that runs it.

Migrations are numbered like the SQLite ones: PostgreSQL migration N makes
the same change as SQLite migration N, in PostgreSQL's types (times are
``double precision`` seconds, like SQLite's REAL; event ``seq`` is an
identity column). Placeholders are psycopg's ``%s`` / ``%(name)s``.
"""

from __future__ import annotations

from mailer.store.postgres.accounts import SCHEMA_ACCOUNTS
from mailer.store.postgres.tlsrpt import SCHEMA_TLSRPT
from mailer.store.rows import FEED_COLUMNS
from mailer.store.rules import suppression_strength_sql

SCHEMA_V1 = """
CREATE TABLE distributions (
    id text PRIMARY KEY,
    account text NOT NULL,
    sender_address text NOT NULL,
    sender_name text NOT NULL,
    subject text NOT NULL,
    html text,
    text text,
    unsubscribe_url text,
    send_at double precision,
    tags jsonb NOT NULL DEFAULT '[]',
    created_at double precision NOT NULL
);
CREATE TABLE sends (
    id text PRIMARY KEY,
    distribution_id text NOT NULL REFERENCES distributions(id),
    account text NOT NULL,
    recipient text NOT NULL,
    rcpt_key text NOT NULL,
    domain text NOT NULL,
    name text NOT NULL,
    variables jsonb NOT NULL,
    reference text,
    message_id text NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    reason text NOT NULL DEFAULT 'queued',
    due_at double precision NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_until double precision,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    last_code integer,
    last_enhanced text,
    last_text text,
    identity text
);
CREATE INDEX sends_ready ON sends (due_at) WHERE state IN ('queued', 'deferred');
CREATE INDEX sends_leased ON sends (lease_until) WHERE state = 'sending';
CREATE INDEX sends_active ON sends (state) WHERE state IN ('queued', 'deferred', 'sending');
CREATE INDEX sends_distribution ON sends (distribution_id, state);
CREATE INDEX sends_domain ON sends (domain, state);
CREATE TABLE attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    send_id text NOT NULL REFERENCES sends(id),
    number integer NOT NULL,
    started_at double precision NOT NULL,
    finished_at double precision NOT NULL,
    reason text NOT NULL,
    mx_host text,
    address text,
    tls_version text,
    tls_cipher text,
    code integer,
    enhanced text,
    text text
);
CREATE INDEX attempts_send ON attempts (send_id, number);
CREATE TABLE events (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    send_id text NOT NULL,
    distribution_id text NOT NULL,
    at double precision NOT NULL,
    state text NOT NULL,
    reason text NOT NULL,
    code integer,
    enhanced text,
    text text,
    detail text
);
CREATE INDEX events_send ON events (send_id, seq);
CREATE TABLE suppressions (
    account text NOT NULL,
    address text NOT NULL,
    reason text NOT NULL,
    created_at double precision NOT NULL,
    detail text,
    PRIMARY KEY (account, address)
)
"""

# The foreign key is checked at commit so that the key can be inserted
# first in the enqueue transaction: a concurrent enqueue with the same key
# then waits on it and finds the first one's ids instead of failing.
SCHEMA_V2 = """
CREATE TABLE idempotency (
    account text NOT NULL,
    key text NOT NULL,
    body_hash text NOT NULL,
    distribution_id text NOT NULL REFERENCES distributions(id) DEFERRABLE INITIALLY DEFERRED,
    send_ids text[] NOT NULL,
    data text NOT NULL,
    created_at double precision NOT NULL,
    PRIMARY KEY (account, key)
)
"""

# Holds on a recipient domain or a distribution; events by time for the
# throughput of the last minutes.
SCHEMA_V3 = """
CREATE TABLE holds (
    kind text NOT NULL,
    value text NOT NULL,
    note text,
    created_at double precision NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX events_at ON events (at);
ALTER TABLE sends ADD COLUMN replayed_at double precision
"""

# A distribution's unsubscribe options: whether its own URL takes RFC 8058
# one-click POSTs, and the language of the footer and unsubscribe page.
SCHEMA_V4 = """
ALTER TABLE distributions ADD COLUMN unsubscribe_one_click boolean NOT NULL DEFAULT false;
ALTER TABLE distributions ADD COLUMN language text
"""

# Returned messages (mailer.feedback), stored raw before the listener's
# 250 and processed after it; a partial index finds the unprocessed ones.
SCHEMA_V5 = """
CREATE TABLE inbound (
    id text PRIMARY KEY,
    received_at double precision NOT NULL,
    mail_from text NOT NULL,
    recipients jsonb NOT NULL,
    raw bytea NOT NULL,
    size integer NOT NULL,
    tls boolean NOT NULL,
    peer text,
    processed_at double precision,
    kind text,
    layout text,
    send_id text,
    matched_by text,
    problem text,
    report text
);
CREATE INDEX inbound_pending ON inbound (id) WHERE processed_at IS NULL;
CREATE INDEX inbound_send ON inbound (send_id);
CREATE TABLE account_pauses (
    account text PRIMARY KEY,
    paused_at double precision,
    released_at double precision,
    detail text
);
CREATE INDEX sends_account ON sends (account, created_at)
"""

# Transport security: the MTA-STS policies of receiving domains (RFC 8461),
# shared by every worker, and the TLS policy each attempt was made under.
SCHEMA_V6 = """
CREATE TABLE sts_policies (
    domain text PRIMARY KEY,
    policy_id text NOT NULL,
    mode text NOT NULL,
    mx text NOT NULL,
    max_age integer NOT NULL,
    fetched_at double precision NOT NULL,
    expires_at double precision NOT NULL
);
ALTER TABLE attempts ADD COLUMN tls_policy text
"""


# Webhook endpoints per account with their event-feed cursor and lease,
# the one fixed batch of each, and the log of delivery attempts.
SCHEMA_V7 = """
CREATE TABLE webhook_endpoints (
    id text PRIMARY KEY,
    account text NOT NULL,
    url text NOT NULL,
    description text,
    event_types text NOT NULL,
    secret text NOT NULL,
    previous_secret text,
    previous_until double precision,
    enabled integer NOT NULL,
    disabled_reason text,
    cursor bigint NOT NULL,
    failures integer NOT NULL,
    failing_since double precision,
    next_attempt_at double precision NOT NULL,
    lease_owner text,
    lease_until double precision,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account);
CREATE INDEX webhook_endpoints_due ON webhook_endpoints (next_attempt_at) WHERE enabled = 1;
CREATE TABLE webhook_batches (
    endpoint_id text PRIMARY KEY REFERENCES webhook_endpoints(id),
    id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    events integer NOT NULL,
    body bytea NOT NULL,
    created_at double precision NOT NULL
);
CREATE TABLE webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints(id),
    webhook_id text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    events integer NOT NULL,
    at double precision NOT NULL,
    status integer,
    latency double precision NOT NULL,
    outcome text NOT NULL,
    excerpt text NOT NULL,
    error text
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id)
"""

# Params: owner, lease until, now, now, limit.
CLAIM_WEBHOOK_ENDPOINTS = """
UPDATE webhook_endpoints SET lease_owner = %s, lease_until = %s
WHERE id IN (
    SELECT id FROM webhook_endpoints
    WHERE enabled = 1 AND next_attempt_at <= %s AND (lease_until IS NULL OR lease_until < %s)
    ORDER BY next_attempt_at LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING *
"""


# The unfinished sends alone, for the queue depth (`mailer_queue_depth`):
# counting them reads this index, never the finished history.
SCHEMA_V9 = """
CREATE INDEX sends_unfinished ON sends (state)
WHERE state IN ('queued', 'held', 'sending', 'deferred');
CREATE INDEX sends_finished ON sends (updated_at)
WHERE state IN ('delivered', 'bounced', 'failed', 'suppressed', 'cancelled')
"""

# Events of an account, not of a send (mailer.reasons.AccountEventKind):
# send, distribution, state and reason become optional, the account, kind
# and data (JSON text, as in SQLite) are new; the CHECK (NOT VALID: every
# existing row is a send's) keeps each new row one or the other. The
# webhook delivery log and the idempotency records are pruned by age.
SCHEMA_V11 = """
ALTER TABLE events
    ALTER COLUMN send_id DROP NOT NULL,
    ALTER COLUMN distribution_id DROP NOT NULL,
    ALTER COLUMN state DROP NOT NULL,
    ALTER COLUMN reason DROP NOT NULL,
    ADD COLUMN account text,
    ADD COLUMN kind text,
    ADD COLUMN data text,
    ADD CONSTRAINT events_send_or_account CHECK (
        kind IS NULL AND send_id IS NOT NULL AND distribution_id IS NOT NULL
            AND state IS NOT NULL AND reason IS NOT NULL
        OR kind IS NOT NULL AND account IS NOT NULL
    ) NOT VALID;
CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
CREATE INDEX idempotency_created ON idempotency (created_at)
"""

# A send named by its distribution and recipient, as a returned message's
# Feedback-ID and recipient name it (mailer.feedback): without this index
# the lookup would read the distribution's every send.
SCHEMA_V12 = """
CREATE INDEX sends_recipient ON sends (distribution_id, rcpt_key)
"""
# Params: distribution id, rcpt_key, account.
SELECT_SEND_OF_DISTRIBUTION_TO = """
SELECT * FROM sends WHERE distribution_id = %s AND rcpt_key = %s AND account = %s
ORDER BY created_at DESC, id DESC LIMIT 1
"""

# Retention: a batch of finished sends, their attempts and old events, then
# old events whose send is gone. Params: before, limit (named).
PRUNE = """
WITH batch AS (
    SELECT id FROM sends
    WHERE state IN ('delivered', 'bounced', 'failed', 'suppressed', 'cancelled')
      AND updated_at < %(before)s
    ORDER BY updated_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), gone_attempts AS (
    DELETE FROM attempts WHERE send_id IN (SELECT id FROM batch) RETURNING 1
), gone_events AS (
    DELETE FROM events WHERE send_id IN (SELECT id FROM batch) AND at < %(before)s RETURNING 1
), gone_sends AS (
    DELETE FROM sends WHERE id IN (SELECT id FROM batch) RETURNING 1
)
SELECT (SELECT count(*) FROM gone_sends) AS sends,
       (SELECT count(*) FROM gone_attempts) AS attempts,
       (SELECT count(*) FROM gone_events) AS events
"""
# The webhook delivery log (SKIP LOCKED: workers pruning at once take
# different rows) and expired idempotency records. Params: before, limit.
PRUNE_DELIVERIES = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries WHERE at < %(before)s ORDER BY at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""
PRUNE_IDEMPOTENCY = """
DELETE FROM idempotency WHERE (account, key) IN (
    SELECT account, key FROM idempotency WHERE created_at < %(before)s
    ORDER BY created_at LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""
PRUNE_ORPHAN_EVENTS = """
DELETE FROM events WHERE seq IN (
    SELECT seq FROM events e WHERE e.at < %(before)s
    AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.id = e.send_id)
    ORDER BY e.at LIMIT %(limit)s
)
"""


MIGRATIONS: tuple[str, ...] = (
    SCHEMA_V1,
    SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V4,
    SCHEMA_V5,
    SCHEMA_V6,
    SCHEMA_V7,
    SCHEMA_ACCOUNTS,
    SCHEMA_V9,
    SCHEMA_TLSRPT,  # V10
    SCHEMA_V11,
    SCHEMA_V12,
)


# Advisory-lock keys (two-int form: class, object). The object part is the
# schema's key, so deployments in separate schemas do not wait on each other.
LOCK_MIGRATE = 0x6D61_696C  # "mail"
LOCK_EVENTS = 0x6D61_696D
# Taken shared by enqueue and exclusively by hold(): new sends, invisible to
# a concurrent hold's UPDATE, must see every hold committed before them.
LOCK_HOLDS = 0x6D61_696E

CURRENT_SCHEMA = "SELECT current_schema() AS schema"
CREATE_SCHEMA_VERSION = "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
SELECT_SCHEMA_VERSION = "SELECT coalesce(max(version), 0) AS version FROM schema_version"
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version) VALUES (%s)"
ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(%s, %s)"
ADVISORY_LOCK_SHARED = "SELECT pg_advisory_xact_lock_shared(%s, %s)"

INSERT_DISTRIBUTION = """
INSERT INTO distributions (id, account, sender_address, sender_name, subject, html, text,
    unsubscribe_url, send_at, tags, created_at, unsubscribe_one_click, language)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

# A whole batch of new sends in one statement, from one JSON array
# (rows.new_sends_json), parsed by the server rather than formatted row by
# row here. Params: distribution id, account, due_at, now, the array.
INSERT_SENDS_JSON = """
INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, variables,
    reference, message_id, due_at, created_at, updated_at)
SELECT e->>0, %(distribution)s, %(account)s, e->>1, e->>2, e->>3, e->>4, (e->5)::jsonb,
    e->>6, e->>7, %(due)s, %(now)s, %(now)s
FROM json_array_elements(%(rows)s::json) AS e
"""

# The queued event of each send of a new distribution, in the order of the
# send ids (their order in the request), which is their seq order.
INSERT_QUEUED_EVENTS = """
INSERT INTO events (send_id, distribution_id, at, state, reason)
SELECT id, distribution_id, %(now)s, 'queued', 'queued'
FROM sends WHERE distribution_id = %(distribution)s ORDER BY id
"""

# Rows as one array per column (pg_rows.columns): one statement, one round
# trip, however many rows; unnest keeps their order, and so their seq order.
INSERT_EVENTS = """
INSERT INTO events (send_id, distribution_id, at, state, reason, code, enhanced, text, detail)
SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[], %s::text[], %s::int[],
                     %s::text[], %s::text[], %s::text[])
"""

# Inserted before the distribution (the foreign key is deferred): a second
# enqueue with the same key blocks here until the first commits, then
# inserts nothing.
INSERT_IDEMPOTENCY = """
INSERT INTO idempotency (account, key, body_hash, distribution_id, send_ids, data, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (account, key) DO UPDATE SET
    body_hash = EXCLUDED.body_hash,
    distribution_id = EXCLUDED.distribution_id,
    send_ids = EXCLUDED.send_ids,
    data = EXCLUDED.data,
    created_at = EXCLUDED.created_at
WHERE idempotency.created_at < %s
RETURNING key
"""
SELECT_IDEMPOTENCY = "SELECT * FROM idempotency WHERE account = %s AND key = %s"

SELECT_DISTRIBUTION = "SELECT * FROM distributions WHERE id = %s"

_SUPPRESSED = """(
    SELECT reason FROM suppressions
    WHERE address = s.rcpt_key AND account IN (s.account, '')
    ORDER BY account DESC LIMIT 1
) AS suppressed"""

# Sends whose lease ran out (their worker died) first, then due sends,
# oldest first. SKIP LOCKED: rows another worker is claiming right now are
# passed over instead of waited for; a row that another worker claimed and
# committed meanwhile is re-checked against the WHERE clause and dropped.
# ``ord`` is the order before the update (RETURNING has no order).
CLAIM_EXPIRED = f"""
UPDATE sends s SET state = 'sending', lease_owner = %(owner)s, lease_until = %(until)s,
    updated_at = %(now)s
FROM (
    SELECT id, lease_until AS ord FROM sends
    WHERE state = 'sending' AND lease_until < %(now)s
    ORDER BY lease_until LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) picked
WHERE s.id = picked.id
RETURNING s.*, picked.ord, {_SUPPRESSED}
"""

# The rows a batch of outcomes may touch, locked until the batch commits.
LEASED_SENDS = """
SELECT id, distribution_id, account, rcpt_key, domain, attempts, due_at FROM sends
WHERE id = ANY(%s) AND state = 'sending' AND lease_owner = %s
ORDER BY id
FOR UPDATE
"""

# A whole batch in one statement: one array per column (pg_rows.columns),
# in the order of rows.OutcomeRows.finish.
FINISH_SENDS = """
UPDATE sends SET state = o.state, reason = o.reason, due_at = o.due_at, attempts = o.attempts,
    updated_at = o.updated_at, last_code = o.code, last_enhanced = o.enhanced,
    last_text = o.text, identity = coalesce(o.identity, sends.identity),
    lease_owner = NULL, lease_until = NULL
FROM unnest(%s::text[], %s::text[], %s::float8[], %s::int[], %s::float8[], %s::int[],
            %s::text[], %s::text[], %s::text[], %s::text[])
    AS o(state, reason, due_at, attempts, updated_at, code, enhanced, text, identity, id)
WHERE sends.id = o.id
"""

INSERT_ATTEMPTS = """
INSERT INTO attempts (send_id, number, started_at, finished_at, reason, mx_host, address,
    tls_version, tls_cipher, code, enhanced, text, tls_policy)
SELECT * FROM unnest(%s::text[], %s::int[], %s::float8[], %s::float8[], %s::text[], %s::text[],
                     %s::text[], %s::text[], %s::text[], %s::int[], %s::text[], %s::text[],
                     %s::text[])
"""

RELEASE = """
UPDATE sends SET state = 'queued', due_at = %(now)s, updated_at = %(now)s, lease_owner = NULL,
    lease_until = NULL
WHERE id = ANY(%(ids)s) AND state = 'sending' AND lease_owner = %(owner)s
"""

RENEW = """
UPDATE sends SET lease_until = %(until)s
WHERE id = ANY(%(ids)s) AND state = 'sending' AND lease_owner = %(owner)s
"""

# Leased sends are left to their worker.
CANCEL_DISTRIBUTION = """
UPDATE sends SET state = 'cancelled', reason = 'cancelled', updated_at = %s
WHERE distribution_id = %s AND state IN ('queued', 'deferred', 'held')
RETURNING id
"""

# Params: now, now, domain, domain (NULL: every domain). `mailer flush`.
FLUSH_DEFERRED = """
UPDATE sends SET due_at = %s
WHERE state = 'deferred' AND due_at > %s AND (%s::text IS NULL OR domain = %s)
"""

SELECT_SEND = "SELECT * FROM sends WHERE id = %s"
SELECT_ATTEMPTS = "SELECT * FROM attempts WHERE send_id = %s ORDER BY number"
# Events with the send's account and reference and the distribution's tags.
_EVENTS = f"""
SELECT {FEED_COLUMNS} FROM events e
LEFT JOIN sends s ON s.id = e.send_id
LEFT JOIN distributions d ON d.id = e.distribution_id
"""
SELECT_EVENTS = _EVENTS + "WHERE e.seq > %(after)s ORDER BY e.seq LIMIT %(limit)s"
SELECT_SEND_EVENTS = (
    _EVENTS + "WHERE e.send_id = %(send)s AND e.seq > %(after)s ORDER BY e.seq LIMIT %(limit)s"
)
SELECT_ACCOUNT_EVENTS = (
    _EVENTS + "WHERE coalesce(e.account, s.account) = %(account)s AND e.seq > %(after)s "
    "ORDER BY e.seq LIMIT %(limit)s"
)
SELECT_ACCOUNT_SEND_EVENTS = (
    _EVENTS + "WHERE s.account = %(account)s AND e.send_id = %(send)s AND e.seq > %(after)s "
    "ORDER BY e.seq LIMIT %(limit)s"
)
COUNT_STATES = "SELECT state, count(*) AS n FROM sends GROUP BY state"
QUEUE_DEPTH = """
SELECT state, count(*) AS n FROM sends
WHERE state IN ('queued', 'held', 'sending', 'deferred') GROUP BY state
"""
COUNT_DISTRIBUTION_STATES = (
    "SELECT state, count(*) AS n FROM sends WHERE distribution_id = %s GROUP BY state"
)

SUMMARY = """
SELECT
    count(*) FILTER (WHERE (state IN ('queued', 'deferred') AND due_at <= %(now)s)
                        OR (state = 'sending' AND lease_until < %(now)s)) AS due,
    count(*) FILTER (WHERE state = 'sending' AND lease_until >= %(now)s) AS in_flight,
    count(*) FILTER (WHERE state IN ('queued', 'deferred') AND due_at > %(now)s) AS waiting,
    min(CASE WHEN state IN ('queued', 'deferred') THEN due_at
             WHEN state = 'sending' THEN lease_until END) AS next_due
FROM sends WHERE state IN ('queued', 'deferred', 'sending')
"""

# A suppression only ever gives way to a stronger one (store/rules.py):
# never downgraded, its note kept. REPLACE_SUPPRESSION overwrites (an
# operator's explicit --replace).
UPSERT_SUPPRESSION = f"""
INSERT INTO suppressions (account, address, reason, created_at, detail) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
WHERE {suppression_strength_sql("excluded.reason")}
    > {suppression_strength_sql("suppressions.reason")}
"""
REPLACE_SUPPRESSION = """
INSERT INTO suppressions (account, address, reason, created_at, detail) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
"""

# Inserts or overwrites unless the address is already unsubscribed (or
# suppressed for a complaint, stronger): no row
# comes back then, atomically with respect to a concurrent unsubscribe.
UNSUBSCRIBE = f"""
INSERT INTO suppressions (account, address, reason, created_at, detail)
VALUES (%(account)s, %(address)s, 'suppressed-unsubscribe', %(now)s, %(detail)s)
ON CONFLICT (account, address) DO UPDATE SET reason = excluded.reason,
    created_at = excluded.created_at, detail = excluded.detail
WHERE {suppression_strength_sql("suppressions.reason")}
    < {suppression_strength_sql("'suppressed-unsubscribe'")}
RETURNING address
"""

DELETE_SUPPRESSION = "DELETE FROM suppressions WHERE account = %s AND address = %s"
SELECT_SUPPRESSIONS = "SELECT * FROM suppressions ORDER BY account, address"
SELECT_ACCOUNT_SUPPRESSIONS = "SELECT * FROM suppressions WHERE account = %s ORDER BY address"
SELECT_SEND_TO = "SELECT * FROM sends WHERE id = %s AND account = %s AND rcpt_key = %s"
SUPPRESSIONS_FOR = """
SELECT * FROM suppressions WHERE address = %s AND account IN (%s, '') ORDER BY account DESC
"""


# Operator tools ---------------------------------------------------------------

UPSERT_HOLD = """
INSERT INTO holds (kind, value, note, created_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (kind, value) DO UPDATE SET note = coalesce(excluded.note, holds.note)
"""
DELETE_HOLD = "DELETE FROM holds WHERE kind = %s AND value = %s"
SELECT_HOLDS = "SELECT * FROM holds ORDER BY kind, value"
# a send matching any hold
_HELD = """(domain IN (SELECT value FROM holds WHERE kind = 'domain')
    OR distribution_id IN (SELECT value FROM holds WHERE kind = 'distribution'))"""

_HOLD_COLUMNS = (("domain", "domain"), ("distribution", "distribution_id"))

# Params: now, value.
HOLD_SENDS = {
    kind: f"""
UPDATE sends SET state = 'held', reason = 'held', updated_at = %s
WHERE {column} = %s AND state IN ('queued', 'deferred')
RETURNING id, distribution_id
"""
    for kind, column in _HOLD_COLUMNS
}

# Run after the hold is deleted, so that _HELD sees only the other holds.
# Params: now (due), now, value.
RELEASE_HELD = {
    kind: f"""
UPDATE sends SET state = 'queued', reason = 'released', due_at = %s, updated_at = %s
WHERE {column} = %s AND state = 'held' AND NOT {_HELD}
RETURNING id, distribution_id
"""
    for kind, column in _HOLD_COLUMNS
}

# A new distribution cannot be held yet, so only domain holds apply.
# Params: distribution id.
HOLD_NEW_SENDS = """
UPDATE sends SET state = 'held', reason = 'held'
WHERE distribution_id = %s AND state = 'queued'
    AND domain IN (SELECT value FROM holds WHERE kind = 'domain')
RETURNING id
"""

# Sends queued although a hold covers them (given back, replayed).
# Params: now, send ids.
HOLD_IF_HELD = f"""
UPDATE sends SET state = 'held', reason = 'held', updated_at = %s
WHERE id = ANY(%s) AND state = 'queued' AND {_HELD}
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
    count(*) FILTER (WHERE {_ON_ACCOUNT} OR {_ON_GLOBAL}) AS suppressed,
    count(*) FILTER (WHERE {_ON_GLOBAL}) AS globally_suppressed
FROM sends {{where}}
"""

# Locked so that a concurrent replay of the same sends waits, then finds
# them queued and leaves them.
REPLAY_CANDIDATES = f"""
SELECT id, distribution_id, account, rcpt_key, {_ON_ACCOUNT} AS on_account,
    {_ON_GLOBAL} AS on_global
FROM sends {{where}} ORDER BY id LIMIT %s
FOR UPDATE OF sends
"""

# Params: now (due), now, now (replayed), send id. Attempts are kept: the
# count goes on, while the retry window starts again at replayed_at.
REQUEUE = """
UPDATE sends SET state = 'queued', reason = 'replayed', due_at = %s, updated_at = %s,
    replayed_at = %s, lease_owner = NULL, lease_until = NULL
WHERE id = %s AND state IN ('bounced', 'failed')
"""

READ_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

FAILURE_REASONS = """
SELECT state, reason, count(*) AS n FROM sends
WHERE state IN ('bounced', 'failed', 'suppressed')
GROUP BY state, reason ORDER BY n DESC, state, reason LIMIT %s
"""
DEFERRING = """
SELECT domain, reason, count(*) AS n FROM sends WHERE state = 'deferred'
GROUP BY domain, reason ORDER BY n DESC, domain, reason LIMIT %s
"""
# Params: top. The domains with the most sends (the sends_domain index
# answers it), each counted per state.
DOMAIN_STATES = """
SELECT domain, state, count(*) AS n FROM sends
WHERE domain IN (
    SELECT domain FROM sends GROUP BY domain ORDER BY count(*) DESC, domain LIMIT %s
)
GROUP BY domain, state
"""
# Params: from, to. Minutes are wall-clock minutes (epoch seconds / 60);
# floor, since a cast to an integer type rounds in PostgreSQL.
THROUGHPUT = """
SELECT floor(at / 60)::bigint AS minute, state, count(*) AS n FROM events
WHERE at >= %s AND at < %s
    AND state IN ('delivered', 'deferred', 'bounced', 'failed', 'suppressed')
GROUP BY minute, state
"""


# After the 250 (mailer.feedback) --------------------------------------------

INBOUND_COLUMNS = (
    "id, received_at, mail_from, recipients, size, tls, peer, processed_at, kind, layout, "
    "send_id, matched_by, problem, report"
)
INSERT_INBOUND = """
INSERT INTO inbound (id, received_at, mail_from, recipients, raw, size, tls, peer)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""
SELECT_PENDING_INBOUND = (
    f"SELECT {INBOUND_COLUMNS}, raw FROM inbound WHERE processed_at IS NULL ORDER BY id LIMIT %s"
)
SELECT_INBOUND = f"SELECT {INBOUND_COLUMNS}, raw FROM inbound WHERE id = %s"
LOCK_INBOUND = "SELECT processed_at FROM inbound WHERE id = %s FOR UPDATE"
LIST_INBOUND = f"SELECT {INBOUND_COLUMNS} FROM inbound WHERE id > %s ORDER BY id LIMIT %s"
LIST_UNMATCHED_INBOUND = (
    f"SELECT {INBOUND_COLUMNS} FROM inbound WHERE id > %s AND processed_at IS NOT NULL "
    "AND send_id IS NULL ORDER BY id LIMIT %s"
)
FINISH_INBOUND = """
UPDATE inbound SET processed_at = %s, kind = %s, layout = %s, send_id = %s, matched_by = %s,
    problem = %s, report = %s
WHERE id = %s AND processed_at IS NULL
"""
SELECT_SEND_STATE = (
    "SELECT id, distribution_id, account, recipient, state FROM sends WHERE id = %s FOR UPDATE"
)
BOUNCE_DELIVERED = """
UPDATE sends SET state = 'bounced', reason = %s, last_code = %s, last_enhanced = %s,
    last_text = %s, updated_at = %s
WHERE id = %s AND state = 'delivered'
"""

# The circuit breaker: an account's paused mail and the window it judges.
UPSERT_PAUSE = """
INSERT INTO account_pauses (account, paused_at, released_at, detail) VALUES (%s, %s, NULL, %s)
ON CONFLICT (account) DO UPDATE SET paused_at = excluded.paused_at, detail = excluded.detail
"""
PAUSE_SENDS = """
UPDATE sends SET state = 'held', reason = 'account-paused', updated_at = %s
WHERE account = %s AND state IN ('queued', 'deferred')
RETURNING id, distribution_id
"""
UNPAUSE = """
UPDATE account_pauses SET paused_at = NULL, released_at = %s
WHERE account = %s AND paused_at IS NOT NULL
"""
RELEASE_PAUSED_SENDS = """
UPDATE sends SET state = 'queued', reason = 'released', due_at = %s, updated_at = %s
WHERE account = %s AND state = 'held' AND reason = 'account-paused'
RETURNING id, distribution_id
"""
SELECT_PAUSES = "SELECT * FROM account_pauses ORDER BY account"
SELECT_PAUSE = "SELECT * FROM account_pauses WHERE account = %s"
HOLD_NEW_SENDS_PAUSED = """
UPDATE sends SET state = 'held', reason = 'account-paused'
WHERE distribution_id = %s AND state = 'queued'
    AND account IN (SELECT account FROM account_pauses WHERE paused_at IS NOT NULL)
RETURNING id
"""
ACCOUNT_WINDOW = """
SELECT s.created_at AS at, s.state = 'bounced' AS hard_bounce,
    EXISTS (SELECT 1 FROM events e WHERE e.send_id = s.id AND e.reason = 'complained')
        AS complaint
FROM sends s
WHERE s.account = %s AND s.created_at >= %s AND s.state IN ('delivered', 'bounced')
    AND s.identity IS NOT NULL AND s.identity NOT LIKE %s
ORDER BY s.created_at DESC LIMIT %s
"""

# accounts with sends finished since a time: those the breaker sweeps
ACTIVE_ACCOUNTS = """
SELECT DISTINCT account FROM sends
WHERE updated_at >= %s AND state IN ('delivered', 'bounced')
ORDER BY account
"""

UPSERT_STS_POLICY = """
INSERT INTO sts_policies (domain, policy_id, mode, mx, max_age, fetched_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id, mode = excluded.mode,
    mx = excluded.mx, max_age = excluded.max_age, fetched_at = excluded.fetched_at,
    expires_at = excluded.expires_at
"""
SELECT_STS_POLICY = "SELECT * FROM sts_policies WHERE domain = %s"
DELETE_STS_POLICY = "DELETE FROM sts_policies WHERE domain = %s"
# Params: now, limit; as in the SQLite store.
STS_POLICIES_DUE = """
SELECT * FROM sts_policies WHERE fetched_at + 0.75 * max_age <= %s ORDER BY expires_at LIMIT %s
"""
