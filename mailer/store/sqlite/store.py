"""The embedded store: one SQLite file in WAL mode.

sqlite3 is blocking, so every call runs on one dedicated thread that owns
the connection; a whole operation (one transaction) is one hop to that
thread. sqlite3 exceptions are translated here into StoreError.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from mailer.errors import IdempotencyConflict, NotFound, StoreError, ValidationError
from mailer.reasons import Reason, State
from mailer.store import rows as typed
from mailer.store import rules
from mailer.store.models import (
    Account,
    AccountChange,
    AccountOutcome,
    AccountPause,
    ApiKey,
    Attempt,
    CachedPolicy,
    Claimed,
    Distribution,
    Event,
    FeedbackResult,
    Hold,
    HoldKind,
    Idempotency,
    IdempotencyRecord,
    Inbound,
    NewDistribution,
    NewInbound,
    NewSend,
    Outcome,
    Pruned,
    QueueSummary,
    ReplayBatch,
    ReplayPlan,
    Send,
    SendFilter,
    Stats,
    Suppression,
    new_id,
    new_ids,
)
from mailer.store.sqlite import accounts, feedback, ops, sql
from mailer.store.sqlite.tlsrpt import SCHEMA_TLSRPT, SQLiteTLSReports
from mailer.store.sqlite.tlsrpt import add_counts as add_tls_counts
from mailer.store.sqlite.webhooks import SQLiteWebhooks
from mailer.store.tlsrpt import TLSCount

T = TypeVar("T")

MIGRATIONS: tuple[str, ...] = (
    sql.SCHEMA_V1,
    sql.SCHEMA_V2,
    sql.SCHEMA_V3,
    sql.SCHEMA_V4,
    sql.SCHEMA_V5,
    sql.SCHEMA_V6,
    sql.SCHEMA_V7,
    accounts.SCHEMA_ACCOUNTS,
    sql.SCHEMA_V9,
    SCHEMA_TLSRPT,  # V10
    sql.SCHEMA_V11,
    sql.SCHEMA_V12,
)


def _create_private(path: Path) -> None:
    """Creates the database file, empty, readable by its owner alone, when
    there is none: it holds recipients' addresses and variables. SQLite
    gives the -wal and -shm files it makes beside it the database file's
    mode. Raises StoreError when the file cannot be made."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the database: {exc.strerror}") from exc
    # the umask can only narrow 0600; an inherited default ACL could widen it
    os.fchmod(fd, 0o600)
    os.close(fd)


class SQLiteStore:
    """:class:`mailer.store.base.Store` over one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self.webhooks = SQLiteWebhooks(self)
        self.tlsrpt = SQLiteTLSReports(self)

    # lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns ("accepted means durable")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        self._conn = conn
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path}: schema version {current} is newer than this program "
                    f"({len(MIGRATIONS)})"
                )
            for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in rules.split_statements(script):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            conn = self._conn
            await self._run(conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("store is not open")
        return self._conn

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    # enqueue ---------------------------------------------------------------

    async def enqueue(
        self,
        distribution: NewDistribution,
        sends: Sequence[NewSend],
        *,
        hostname: str,
        now: float,
        idempotency: Idempotency | None = None,
        distribution_id: str | None = None,
    ) -> tuple[str, list[str]]:
        dist_id = distribution_id or new_id()
        due = distribution.send_at if distribution.send_at is not None else now
        ids = new_ids(len(sends))
        rows = typed.new_sends_json(ids, sends, hostname=hostname)

        def work(conn: sqlite3.Connection) -> tuple[str, list[str]]:
            if idempotency is not None:
                # BEGIN IMMEDIATE: no other writer between this read and
                # the insert below
                row = conn.execute(
                    sql.SELECT_IDEMPOTENCY, (distribution.account, idempotency.key)
                ).fetchone()
                if row is not None and row["created_at"] >= idempotency.stale_before:
                    if row["body_hash"] != idempotency.body_hash:
                        raise IdempotencyConflict(idempotency.key)
                    return row["distribution_id"], json.loads(row["send_ids"])
                if row is not None:
                    conn.execute(sql.DELETE_IDEMPOTENCY, (distribution.account, idempotency.key))
            conn.execute(
                sql.INSERT_DISTRIBUTION,
                (
                    dist_id,
                    distribution.account,
                    distribution.sender_address,
                    distribution.sender_name,
                    distribution.subject,
                    distribution.html,
                    distribution.text,
                    distribution.unsubscribe_url,
                    distribution.send_at,
                    json.dumps(list(distribution.tags)),
                    now,
                    int(distribution.unsubscribe_one_click),
                    distribution.language,
                ),
            )
            conn.execute(accounts.ENSURE_ACCOUNT, (distribution.account, now))
            conn.execute(
                accounts.SET_PRIORITY, (distribution.priority, distribution.account, dist_id)
            )
            conn.execute(sql.INSERT_SENDS_JSON, (dist_id, distribution.account, due, now, rows))
            conn.execute(sql.INSERT_QUEUED_EVENTS, (dist_id, now))
            ops.hold_new_sends(conn, dist_id, now)
            if idempotency is not None:
                conn.execute(
                    sql.INSERT_IDEMPOTENCY,
                    (
                        distribution.account,
                        idempotency.key,
                        idempotency.body_hash,
                        dist_id,
                        json.dumps(ids),
                        idempotency.data,
                        now,
                    ),
                )
            return dist_id, ids

        return await self._run(self._tx, work)

    async def idempotent(
        self, account: str, key: str, *, stale_before: float = float("-inf")
    ) -> IdempotencyRecord | None:
        row = await self._run(
            lambda: self.conn.execute(sql.SELECT_IDEMPOTENCY, (account, key)).fetchone()
        )
        if row is None or row["created_at"] < stale_before:
            return None
        return typed.idempotency_record(row)

    async def distribution(self, distribution_id: str) -> Distribution:
        row = await self._run(
            lambda: self.conn.execute(sql.SELECT_DISTRIBUTION, (distribution_id,)).fetchone()
        )
        if row is None:
            raise NotFound("distribution", distribution_id)
        return typed.distribution(row)

    # the worker's side ------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, *, lease_seconds: float, now: float
    ) -> list[Claimed]:
        def work(conn: sqlite3.Connection) -> list[Claimed]:
            lease = (owner, now + lease_seconds, now, now)
            leased = conn.execute(sql.CLAIM_EXPIRED, (*lease, limit)).fetchall()
            expired = len(leased)
            if expired < limit:
                leased += accounts.claim_due(
                    conn, owner, limit - expired, until=now + lease_seconds, now=now
                )
            suppressed = ops.suppressions_of(conn, leased)
            claimed = []
            events = []
            for index, row in enumerate(leased):
                reason = suppressed.get((row["account"], row["rcpt_key"])) or suppressed.get(
                    ("", row["rcpt_key"])
                )
                claimed.append(Claimed(typed.send(row), Reason(reason) if reason else None))
                why = Reason.LEASE_EXPIRED if index < expired else Reason.QUEUED
                events.append(
                    typed.event_row(
                        row["id"], row["distribution_id"], now, State.SENDING, why, detail=owner
                    )
                )
            conn.executemany(sql.INSERT_EVENT, events)
            return claimed

        return await self._run(self._tx, work)

    async def complete(
        self,
        owner: str,
        outcomes: Sequence[Outcome],
        *,
        now: float,
        tls_counts: Sequence[TLSCount] = (),
    ) -> int:
        # the first outcome per send counts, as if recorded one after another
        first: dict[str, Outcome] = {}
        for outcome in outcomes:
            first.setdefault(outcome.send_id, outcome)
        ids = json.dumps(list(first))

        def work(conn: sqlite3.Connection) -> int:
            leased = {row["id"]: row for row in conn.execute(sql.LEASED_SENDS_JSON, (ids, owner))}
            held = ops.held_values(conn) if leased else set()
            recorded = [
                (row, rules.unless_held(outcome, row["domain"], row["distribution_id"], held))
                for send_id, outcome in first.items()
                if (row := leased.get(send_id)) is not None
            ]
            ops.record_outcomes(conn, recorded, now)
            add_tls_counts(conn, tls_counts)
            return len(recorded)

        return await self._run(self._tx, work)

    async def renew(
        self, owner: str, send_ids: Sequence[str], *, lease_seconds: float, now: float
    ) -> int:
        until = now + lease_seconds

        def work(conn: sqlite3.Connection) -> int:
            return sum(
                conn.execute(sql.RENEW, (until, send_id, owner)).rowcount for send_id in send_ids
            )

        return await self._run(self._tx, work)

    async def release(self, owner: str, send_ids: Sequence[str], *, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            count = 0
            for send_id in send_ids:
                count += conn.execute(sql.RELEASE, (now, now, send_id, owner)).rowcount
            ops.hold_if_held(conn, send_ids, now)
            return count

        return await self._run(self._tx, work)

    async def cancel(self, distribution_id: str, *, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            if conn.execute(sql.SELECT_DISTRIBUTION, (distribution_id,)).fetchone() is None:
                raise NotFound("distribution", distribution_id)
            rows = conn.execute(sql.CANCEL_DISTRIBUTION, (now, distribution_id)).fetchall()
            conn.executemany(
                sql.INSERT_EVENT,
                [
                    typed.event_row(
                        row["id"], distribution_id, now, State.CANCELLED, Reason.CANCELLED
                    )
                    for row in rows
                ],
            )
            return len(rows)

        return await self._run(self._tx, work)

    async def flush(self, *, now: float, domain: str | None = None) -> int:
        domain = rules.hold_value("domain", domain) if domain is not None else None

        def work(conn: sqlite3.Connection) -> int:
            return conn.execute(sql.FLUSH_DEFERRED, (now, domain)).rowcount

        return await self._run(self._tx, work)

    # reading ---------------------------------------------------------------

    async def send(self, send_id: str) -> Send:
        row = await self._run(lambda: self.conn.execute(sql.SELECT_SEND, (send_id,)).fetchone())
        if row is None:
            raise NotFound("send", send_id)
        return typed.send(row)

    async def send_to(self, distribution_id: str, account: str, recipient: str) -> Send:
        params = (distribution_id, recipient.lower(), account)
        row = await self._run(
            lambda: self.conn.execute(sql.SELECT_SEND_OF_DISTRIBUTION_TO, params).fetchone()
        )
        if row is None:
            raise NotFound("send", f"{distribution_id} to {recipient}")
        return typed.send(row)

    async def attempts(self, send_id: str) -> list[Attempt]:
        found = await self._run(
            lambda: self.conn.execute(sql.SELECT_ATTEMPTS, (send_id,)).fetchall()
        )
        return [typed.attempt(row) for row in found]

    async def list_sends(
        self, flt: SendFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Send]:
        where, params = rules.send_filter(flt, after, placeholder="?")
        query = f"SELECT * FROM sends {where} ORDER BY id LIMIT ?"
        found = await self._run(lambda: self.conn.execute(query, (*params, limit)).fetchall())
        return [typed.send(row) for row in found]

    async def events(
        self,
        *,
        after: int = 0,
        limit: int = 100,
        send_id: str | None = None,
        account: str | None = None,
    ) -> list[Event]:
        params = (account, send_id, after, limit)
        found = await self._run(lambda: self.conn.execute(sql.SELECT_EVENTS, params).fetchall())
        return [typed.event(row) for row in found]

    async def counts(self, distribution_id: str | None = None) -> dict[State, int]:
        query: str = sql.COUNT_STATES
        params: tuple[object, ...] = ()
        if distribution_id is not None:
            query, params = sql.COUNT_DISTRIBUTION_STATES, (distribution_id,)
        found = await self._run(lambda: self.conn.execute(query, params).fetchall())
        return {State(row[0]): row[1] for row in found}

    async def prune(
        self, *, before: float, limit: int, idempotency_before: float | None = None
    ) -> Pruned:
        def work(conn: sqlite3.Connection) -> Pruned:
            ids = [row[0] for row in conn.execute(sql.PRUNABLE_SENDS, (before, limit))]
            batch = json.dumps(ids)
            attempts = conn.execute(sql.PRUNE_ATTEMPTS, (batch,)).rowcount if ids else 0
            events = conn.execute(sql.PRUNE_EVENTS_OF, (batch, before)).rowcount if ids else 0
            sends = conn.execute(sql.PRUNE_SENDS, (batch,)).rowcount if ids else 0
            events += conn.execute(sql.PRUNE_ORPHAN_EVENTS, (before, limit)).rowcount
            deliveries = conn.execute(sql.PRUNE_DELIVERIES, (before, limit)).rowcount
            keys = 0
            if idempotency_before is not None:
                keys = conn.execute(sql.PRUNE_IDEMPOTENCY, (idempotency_before, limit)).rowcount
            return Pruned(sends, attempts, events, deliveries, keys)

        return await self._run(self._tx, work)

    async def queue_depth(self) -> dict[State, int]:
        found = await self._run(lambda: self.conn.execute(sql.QUEUE_DEPTH).fetchall())
        return {State(row[0]): row[1] for row in found}

    async def summary(self, *, now: float) -> QueueSummary:
        row = await self._run(
            lambda: self.conn.execute(sql.SUMMARY, (now, now, now, now)).fetchone()
        )
        return QueueSummary(
            due=row["due"] or 0,
            in_flight=row["in_flight"] or 0,
            waiting=row["waiting"] or 0,
            next_due=row["next_due"],
        )

    # suppression -----------------------------------------------------------

    async def suppress(
        self,
        account: str,
        address: str,
        reason: Reason,
        *,
        now: float,
        detail: str | None = None,
        replace: bool = False,
    ) -> bool:
        query = sql.REPLACE_SUPPRESSION if replace else sql.UPSERT_SUPPRESSION
        params = (account, address.lower(), reason.value, now, detail)
        written = await self._run(self._tx, lambda conn: conn.execute(query, params).rowcount)
        return bool(written)

    async def unsubscribe(
        self,
        account: str,
        address: str,
        *,
        now: float,
        send_id: str | None = None,
        detail: str | None = None,
    ) -> bool:
        key = address.lower()
        unsubscribed = Reason.SUPPRESSED_UNSUBSCRIBE

        def work(conn: sqlite3.Connection) -> bool:
            before = conn.execute(sql.SELECT_SUPPRESSION, (account, key)).fetchone()
            if before is not None and not rules.replaces(unsubscribed.value, before["reason"]):
                return False
            conn.execute(sql.UPSERT_SUPPRESSION, (account, key, unsubscribed.value, now, detail))
            row = None
            if send_id is not None:
                row = conn.execute(sql.SELECT_SEND_TO, (send_id, account, key)).fetchone()
            if row is not None:
                state = State(row["state"])
                conn.execute(
                    sql.INSERT_EVENT,
                    typed.event_row(
                        row["id"], row["distribution_id"], now, state, unsubscribed, detail=detail
                    ),
                )
            return True

        return await self._run(self._tx, work)

    async def unsuppress(self, account: str, address: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(sql.DELETE_SUPPRESSION, (account, address.lower()))
            return cur.rowcount > 0

        return await self._run(self._tx, work)

    async def suppressions(self, account: str | None = None) -> list[Suppression]:
        query: str = sql.SELECT_SUPPRESSIONS
        params: tuple[object, ...] = ()
        if account is not None:
            query, params = sql.SELECT_ACCOUNT_SUPPRESSIONS, (account,)
        found = await self._run(lambda: self.conn.execute(query, params).fetchall())
        return [typed.suppression(row) for row in found]

    # operator tools ----------------------------------------------------------

    async def suppress_many(self, entries: Sequence[Suppression], *, replace: bool = False) -> int:
        rows = [
            (e.account, e.address.lower(), e.reason.value, e.created_at, e.detail) for e in entries
        ]
        query = sql.REPLACE_SUPPRESSION if replace else sql.UPSERT_SUPPRESSION

        def work(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(query, row).rowcount for row in rows)

        return await self._run(self._tx, work)

    async def hold(self, kind: HoldKind, value: str, *, now: float, note: str | None = None) -> int:
        value = rules.hold_value(kind, value)
        detail = f"{kind} {value} held" + (f": {note}" if note else "")

        def work(conn: sqlite3.Connection) -> int:
            known = kind == "domain" or conn.execute(sql.SELECT_DISTRIBUTION, (value,)).fetchone()
            if not known:
                raise NotFound("distribution", value)
            conn.execute(sql.UPSERT_HOLD, (kind, value, note, now))
            rows = conn.execute(sql.HOLD_SENDS[kind], (now, value)).fetchall()
            conn.executemany(
                sql.INSERT_EVENT,
                [
                    typed.event_row(
                        r["id"], r["distribution_id"], now, State.HELD, Reason.HELD, detail=detail
                    )
                    for r in rows
                ],
            )
            return len(rows)

        return await self._run(self._tx, work)

    async def release_hold(self, kind: HoldKind, value: str, *, now: float) -> int:
        value = rules.hold_value(kind, value)
        detail = f"{kind} {value} released"

        def work(conn: sqlite3.Connection) -> int:
            if conn.execute(sql.DELETE_HOLD, (kind, value)).rowcount == 0:
                raise NotFound("hold", f"on {kind} {value}")
            rows = conn.execute(sql.RELEASE_HELD[kind], (now, now, value)).fetchall()
            conn.executemany(
                sql.INSERT_EVENT,
                [
                    typed.event_row(
                        r["id"],
                        r["distribution_id"],
                        now,
                        State.QUEUED,
                        Reason.RELEASED,
                        detail=detail,
                    )
                    for r in rows
                ],
            )
            return len(rows)

        return await self._run(self._tx, work)

    async def holds(self) -> list[Hold]:
        found = await self._run(lambda: self.conn.execute(sql.SELECT_HOLDS).fetchall())
        return [typed.hold(row) for row in found]

    async def replay_plan(self, flt: SendFilter) -> ReplayPlan:
        where, params = rules.send_filter(rules.replay_filter(flt), None, placeholder="?")
        query = sql.REPLAY_COUNT.format(where=where)
        row = await self._run(
            ops.snapshot, self.conn, lambda conn: conn.execute(query, params).fetchone()
        )
        return ReplayPlan(
            matching=row["matching"] or 0,
            suppressed=row["suppressed"] or 0,
            globally_suppressed=row["globally_suppressed"] or 0,
        )

    async def replay(
        self,
        flt: SendFilter,
        *,
        now: float,
        note: str | None = None,
        include_suppressed: bool = False,
        after: str | None = None,
        limit: int = 1000,
    ) -> ReplayBatch:
        where, params = rules.send_filter(rules.replay_filter(flt), after, placeholder="?")
        query = sql.REPLAY_CANDIDATES.format(where=where)

        def work(conn: sqlite3.Connection) -> ReplayBatch:
            found = rules.replay_work(
                conn.execute(query, (*params, limit)).fetchall(),
                now=now,
                note=note,
                include_suppressed=include_suppressed,
                limit=limit,
            )
            lifted = conn.executemany(sql.DELETE_SUPPRESSION, found.lift).rowcount
            conn.executemany(sql.REQUEUE, found.requeue)
            conn.executemany(sql.INSERT_EVENT, found.events)
            held = ops.hold_if_held(conn, [item[3] for item in found.requeue], now)
            return ReplayBatch(
                requeued=len(found.requeue),
                skipped=found.skipped,
                unsuppressed=max(lifted, 0),
                held=held,
                last_id=found.last_id,
            )

        return await self._run(self._tx, work)

    async def stats(self, *, now: float, minutes: int = 15, top: int = 10) -> Stats:
        def work(conn: sqlite3.Connection) -> Stats:
            return rules.stats_of(
                counts={r[0]: r[1] for r in conn.execute(sql.COUNT_STATES)},
                reasons=conn.execute(sql.FAILURE_REASONS, (top,)).fetchall(),
                deferring=conn.execute(sql.DEFERRING, (top,)).fetchall(),
                domains=conn.execute(sql.DOMAIN_STATES, (top,)).fetchall(),
                throughput=conn.execute(sql.THROUGHPUT, rules.window(now, minutes)).fetchall(),
                holds=[typed.hold(r) for r in conn.execute(sql.SELECT_HOLDS)],
                now=now,
                minutes=minutes,
            )

        return await self._run(ops.snapshot, self.conn, work)

    async def suppression_for(self, account: str, address: str) -> list[Suppression]:
        found = await self._run(
            lambda: self.conn.execute(sql.SUPPRESSIONS_FOR, (address.lower(), account)).fetchall()
        )
        return [typed.suppression(row) for row in found]

    # after the 250 (mailer.store.sqlite.feedback) -------------------------

    async def inbound_put(self, messages: Sequence[NewInbound], *, now: float) -> list[str]:
        return await self._run(self._tx, lambda conn: feedback.put(conn, messages, now))

    async def inbound_pending(self, *, limit: int = 100) -> list[Inbound]:
        def work() -> list[Inbound]:
            rows = self.conn.execute(sql.SELECT_PENDING_INBOUND, (limit,)).fetchall()
            return [feedback.inbound(r) for r in rows]

        return await self._run(work)

    async def inbound_get(self, inbound_id: str) -> Inbound:
        def work() -> Inbound:
            row = self.conn.execute(sql.SELECT_INBOUND, (inbound_id,)).fetchone()
            if row is None:
                raise NotFound("inbound message", inbound_id)
            return feedback.inbound(row)

        return await self._run(work)

    async def inbound_list(
        self, *, unmatched: bool = False, limit: int = 100, after: str = ""
    ) -> list[Inbound]:
        query = sql.LIST_UNMATCHED_INBOUND if unmatched else sql.LIST_INBOUND

        def work() -> list[Inbound]:
            return [feedback.inbound(r) for r in self.conn.execute(query, (after, limit))]

        return await self._run(work)

    async def inbound_done(self, inbound_id: str, result: FeedbackResult, *, now: float) -> bool:
        return await self._run(
            self._tx, lambda conn: feedback.finish(conn, inbound_id, result, now)
        )

    async def account_window(
        self, account: str, *, since: float, limit: int
    ) -> list[AccountOutcome]:
        return await self._run(lambda: feedback.account_window(self.conn, account, since, limit))

    async def pause_account(self, account: str, *, now: float, detail: str | None = None) -> int:
        return await self._run(self._tx, lambda conn: feedback.pause(conn, account, now, detail))

    async def release_account(self, account: str, *, now: float) -> int:
        return await self._run(self._tx, lambda conn: feedback.release(conn, account, now))

    async def active_accounts(self, *, since: float) -> list[str]:
        def work() -> list[str]:
            return [r[0] for r in self.conn.execute(sql.ACTIVE_ACCOUNTS, (since,))]

        return await self._run(work)

    async def account_pauses(self) -> list[AccountPause]:
        def work() -> list[AccountPause]:
            return [feedback.account_pause(r) for r in self.conn.execute(sql.SELECT_PAUSES)]

        return await self._run(work)

    # MTA-STS policies ---------------------------------------------------------

    async def sts_policy(self, domain: str) -> CachedPolicy | None:
        row = await self._run(
            lambda: self.conn.execute(sql.SELECT_STS_POLICY, (domain,)).fetchone()
        )
        return None if row is None else typed.cached_policy(row)

    async def put_sts_policy(self, policy: CachedPolicy) -> None:
        params = typed.cached_policy_row(policy)
        await self._run(self._tx, lambda conn: conn.execute(sql.UPSERT_STS_POLICY, params))

    async def drop_sts_policy(self, domain: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute(sql.DELETE_STS_POLICY, (domain,)).rowcount > 0

        return await self._run(self._tx, work)

    async def sts_policies_due(self, *, now: float, limit: int = 100) -> list[CachedPolicy]:
        found = await self._run(
            lambda: self.conn.execute(sql.STS_POLICIES_DUE, (now, limit)).fetchall()
        )
        return [typed.cached_policy(row) for row in found]

    # accounts and API keys -------------------------------------------------

    async def add_account(self, account: Account) -> Account:
        def work(conn: sqlite3.Connection) -> Account:
            if conn.execute(accounts.SELECT_ACCOUNT, (account.id,)).fetchone() is not None:
                raise ValidationError("id", f"account {account.id!r} exists already")
            conn.execute(
                accounts.INSERT_ACCOUNT,
                (
                    account.id,
                    account.name,
                    account.language,
                    account.rate_cap,
                    account.priority,
                    account.created_at,
                ),
            )
            return account

        return await self._run(self._tx, work)

    async def account(self, account_id: str) -> Account:
        row = await self._run(
            lambda: self.conn.execute(accounts.SELECT_ACCOUNT, (account_id,)).fetchone()
        )
        if row is None:
            raise NotFound("account", account_id)
        return typed.account(row)

    async def list_distributions(
        self, account: str | None = None, *, after: str = "", limit: int = 100
    ) -> list[Distribution]:
        params = (account, after, limit)
        found = await self._run(
            lambda: self.conn.execute(accounts.LIST_DISTRIBUTIONS, params).fetchall()
        )
        return [typed.distribution(row) for row in found]

    async def accounts(self) -> list[Account]:
        found = await self._run(lambda: self.conn.execute(accounts.SELECT_ACCOUNTS).fetchall())
        return [typed.account(row) for row in found]

    async def update_account(self, account_id: str, change: AccountChange) -> Account:
        def work(conn: sqlite3.Connection) -> Account:
            if accounts.update_account(conn, account_id, change) == 0:
                raise NotFound("account", account_id)
            return typed.account(conn.execute(accounts.SELECT_ACCOUNT, (account_id,)).fetchone())

        return await self._run(self._tx, work)

    async def add_api_key(self, key: ApiKey, digest: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if conn.execute(accounts.SELECT_ACCOUNT, (key.account,)).fetchone() is None:
                raise NotFound("account", key.account)
            conn.execute(
                accounts.INSERT_KEY,
                (key.id, digest, key.account, int(key.operator), key.name, key.created_at),
            )

        await self._run(self._tx, work)

    async def api_key(self, digest: str) -> ApiKey | None:
        row = await self._run(
            lambda: self.conn.execute(accounts.SELECT_KEY_BY_DIGEST, (digest,)).fetchone()
        )
        return None if row is None else typed.api_key(row)

    async def api_keys(self, account: str | None = None) -> list[ApiKey]:
        query: str = accounts.SELECT_KEYS
        params: tuple[object, ...] = ()
        if account is not None:
            query, params = accounts.SELECT_ACCOUNT_KEYS, (account,)
        found = await self._run(lambda: self.conn.execute(query, params).fetchall())
        return [typed.api_key(row) for row in found]

    async def revoke_api_key(self, key_id: str, *, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute(accounts.REVOKE_KEY, (now, key_id)).rowcount > 0

        return await self._run(self._tx, work)


__all__ = ["SQLiteStore"]
