"""Operator tools of the PostgreSQL store (holds, replay, statistics, bulk
suppression) as functions over a connection in the caller's transaction.
:class:`mailer.store.postgres.store.PostgresStore` opens the transaction and
translates psycopg exceptions."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import DictRow

from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store import rows as typed
from mailer.store.models import (
    Hold,
    HoldKind,
    ReplayBatch,
    ReplayPlan,
    SendFilter,
    Stats,
    Suppression,
)
from mailer.store.postgres import events as pg_events
from mailer.store.postgres import sql as q
from mailer.store.rules import (
    hold_value,
    replay_filter,
    replay_work,
    send_filter,
    stats_of,
    window,
)

# the one validation of hold values, shared with the SQLite store

Conn = psycopg.AsyncConnection[DictRow]


async def unsubscribe(
    conn: Conn,
    key: int,
    account: str,
    address: str,
    *,
    now: float,
    send_id: str | None,
    detail: str | None,
) -> bool:
    """Store.unsubscribe: False, changing nothing, when already
    unsubscribed."""
    address = address.lower()
    params = {"account": account, "address": address, "now": now, "detail": detail}
    cur = await conn.execute(q.UNSUBSCRIBE, params)
    if await cur.fetchone() is None:
        return False
    if send_id is not None:
        cur = await conn.execute(q.SELECT_SEND_TO, (send_id, account, address))
        why = Reason.SUPPRESSED_UNSUBSCRIBE
        events = [
            typed.event_row(
                r["id"], r["distribution_id"], now, State(r["state"]), why, detail=detail
            )
            for r in await cur.fetchall()
        ]
        await pg_events.append(conn, key, events)
    return True


async def suppress_many(conn: Conn, entries: Sequence[Suppression], *, replace: bool) -> int:
    """Returns how many entries were written (a weaker reason over a
    stronger one is not, unless ``replace``)."""
    rows = [(e.account, e.address.lower(), e.reason.value, e.created_at, e.detail) for e in entries]
    query = q.REPLACE_SUPPRESSION if replace else q.UPSERT_SUPPRESSION
    written = 0
    async with conn.cursor() as cur:
        for row in rows:
            await cur.execute(query, row)
            written += max(cur.rowcount, 0)
    return written


async def hold(
    conn: Conn, key: int, kind: HoldKind, value: str, *, now: float, note: str | None
) -> int:
    """Raises NotFound for an unknown distribution, ValidationError for an
    unknown kind or a malformed value."""
    value = hold_value(kind, value)
    detail = f"{kind} {value} held" + (f": {note}" if note else "")
    if kind == "distribution":
        cur = await conn.execute(q.SELECT_DISTRIBUTION, (value,))
        if await cur.fetchone() is None:
            raise NotFound("distribution", value)
    # waits for enqueues in progress, whose new sends this UPDATE cannot see
    await conn.execute(q.ADVISORY_LOCK, (q.LOCK_HOLDS, key))
    await conn.execute(q.UPSERT_HOLD, (kind, value, note, now))
    cur = await conn.execute(q.HOLD_SENDS[kind], (now, value))
    rows = await cur.fetchall()
    await pg_events.append(
        conn,
        key,
        [
            typed.event_row(
                r["id"], r["distribution_id"], now, State.HELD, Reason.HELD, detail=detail
            )
            for r in rows
        ],
    )
    return len(rows)


async def release_hold(conn: Conn, key: int, kind: HoldKind, value: str, *, now: float) -> int:
    """Raises NotFound when there is no such hold."""
    value = hold_value(kind, value)
    cur = await conn.execute(q.DELETE_HOLD, (kind, value))
    if cur.rowcount == 0:
        raise NotFound("hold", f"on {kind} {value}")
    cur = await conn.execute(q.RELEASE_HELD[kind], (now, now, value))
    rows = await cur.fetchall()
    detail = f"{kind} {value} released"
    await pg_events.append(
        conn,
        key,
        [
            typed.event_row(
                r["id"], r["distribution_id"], now, State.QUEUED, Reason.RELEASED, detail=detail
            )
            for r in rows
        ],
    )
    return len(rows)


async def holds(conn: Conn) -> list[Hold]:
    cur = await conn.execute(q.SELECT_HOLDS)
    return [typed.hold(row) for row in await cur.fetchall()]


async def held_values(conn: Conn) -> set[tuple[str, str]]:
    """Every hold as (kind, value): a handful of rows, read once per batch."""
    return {(h.kind, h.value) for h in await holds(conn)}


async def hold_new_sends(
    conn: Conn, key: int, distribution_id: str, now: float
) -> list[tuple[object, ...]]:
    """Hold the new sends of a distribution to held domains; returns their
    events for the caller to append."""
    await conn.execute(q.ADVISORY_LOCK_SHARED, (q.LOCK_HOLDS, key))
    cur = await conn.execute(q.HOLD_NEW_SENDS, (distribution_id,))
    events = [
        typed.event_row(
            r["id"], distribution_id, now, State.HELD, Reason.HELD, detail="domain is held"
        )
        for r in await cur.fetchall()
    ]
    # the circuit breaker paused the account (mailer.feedback.breaker)
    cur = await conn.execute(q.HOLD_NEW_SENDS_PAUSED, (distribution_id,))
    events += [
        typed.event_row(r["id"], distribution_id, now, State.HELD, Reason.ACCOUNT_PAUSED)
        for r in await cur.fetchall()
    ]
    return events


async def hold_if_held(conn: Conn, send_ids: Sequence[str], now: float) -> list[tuple[object, ...]]:
    """Hold those of ``send_ids`` that are queued although a hold covers
    them (given back by a worker, replayed); returns their events."""
    if not send_ids:
        return []
    cur = await conn.execute(q.HOLD_IF_HELD, (now, list(send_ids)))
    return [
        typed.event_row(r["id"], r["distribution_id"], now, State.HELD, Reason.HELD)
        for r in await cur.fetchall()
    ]


async def replay_plan(conn: Conn, flt: SendFilter) -> ReplayPlan:
    """Raises ValidationError for states other than bounced and failed."""
    where, params = send_filter(replay_filter(flt), None, placeholder="%s")
    cur = await conn.execute(q.REPLAY_COUNT.format(where=where), params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate always gives a row
    return ReplayPlan(
        matching=row["matching"],
        suppressed=row["suppressed"],
        globally_suppressed=row["globally_suppressed"],
    )


async def replay(
    conn: Conn,
    key: int,
    flt: SendFilter,
    *,
    now: float,
    note: str | None,
    include_suppressed: bool,
    after: str | None,
    limit: int,
) -> ReplayBatch:
    """Raises ValidationError for states other than bounced and failed."""
    where, params = send_filter(replay_filter(flt), after, placeholder="%s")
    cur = await conn.execute(q.REPLAY_CANDIDATES.format(where=where), (*params, limit))
    work = replay_work(
        await cur.fetchall(),
        now=now,
        note=note,
        include_suppressed=include_suppressed,
        limit=limit,
    )
    lifted = 0
    async with conn.cursor() as cur2:
        for address in work.lift:
            await cur2.execute(q.DELETE_SUPPRESSION, address)
            lifted += cur2.rowcount
        if work.requeue:
            await cur2.executemany(q.REQUEUE, work.requeue)
    held = await hold_if_held(conn, [item[3] for item in work.requeue], now)
    await pg_events.append(conn, key, work.events + held)
    return ReplayBatch(
        requeued=len(work.requeue),
        skipped=work.skipped,
        unsuppressed=lifted,
        held=len(held),
        last_id=work.last_id,
    )


async def stats(conn: Conn, *, now: float, minutes: int, top: int) -> Stats:
    """Read in the caller's (snapshot) transaction."""

    async def fetch(query: str, params: Sequence[object] = ()) -> list[DictRow]:
        cur = await conn.execute(query, params)
        return await cur.fetchall()

    return stats_of(
        counts={r["state"]: r["n"] for r in await fetch(q.COUNT_STATES)},
        reasons=await fetch(q.FAILURE_REASONS, (top,)),
        deferring=await fetch(q.DEFERRING, (top,)),
        domains=await fetch(q.DOMAIN_STATES, (top,)),
        throughput=await fetch(q.THROUGHPUT, window(now, minutes)),
        holds=[typed.hold(r) for r in await fetch(q.SELECT_HOLDS)],
        now=now,
        minutes=minutes,
    )
