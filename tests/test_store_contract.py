"""The store contract: every backend runs these tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.errors import NotFound, ValidationError
from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    CachedPolicy,
    Idempotency,
    NewDistribution,
    NewSend,
    Outcome,
    Pruned,
    SendFilter,
    Suppression,
)
from mailer.store.sqlite import sql as sqlite_sql
from mailer.store.sqlite.store import SQLiteStore
from mailer.store.tlsrpt import TLSCount
from mailer.store.webhooks import NewEndpoint, Result
from tests.backends import BACKENDS, StoreFactory

DIST = NewDistribution(
    account="acme",
    sender_address="hr@acme.test",
    sender_name="ACME HR",
    subject="Umfrage für {{ name }}",
    html="<p>Hallo {{ name }}</p>",
    text=None,
    tags=("q3",),
)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[object]:
    factory: StoreFactory = request.param
    async with factory(request) as s:
        yield s


def sends(n: int, domain: str = "dest.test") -> list[NewSend]:
    return [NewSend(f"user{i}@{domain}", f"User {i}", {"k": str(i)}) for i in range(n)]


async def test_enqueue_stores_distribution_and_sends_in_order(store) -> None:
    dist_id, ids = await store.enqueue(DIST, sends(3), hostname="mx.local", now=100.0)
    dist = await store.distribution(dist_id)
    assert dist.subject == DIST.subject
    assert dist.tags == ("q3",)
    got = [await store.send(i) for i in ids]
    assert [s.recipient for s in got] == ["user0@dest.test", "user1@dest.test", "user2@dest.test"]
    assert all(s.state is State.QUEUED for s in got)
    assert got[1].variables == {"k": "1"}
    assert got[0].message_id == f"<{ids[0]}@mx.local>"
    assert (await store.counts(dist_id)) == {State.QUEUED: 3}


async def test_distribution_keeps_its_unsubscribe_options_and_language(store) -> None:
    plain_id, _ = await store.enqueue(DIST, sends(1), hostname="h", now=100.0)
    plain = await store.distribution(plain_id)
    assert (plain.unsubscribe_one_click, plain.language) == (False, None)
    one_click = dataclasses.replace(
        DIST,
        unsubscribe_url="https://acme.test/unsub/{{ email }}",
        unsubscribe_one_click=True,
        language="de",
    )
    dist_id, _ = await store.enqueue(one_click, sends(1), hostname="h", now=100.0)
    dist = await store.distribution(dist_id)
    assert dist.unsubscribe_url == one_click.unsubscribe_url
    assert dist.unsubscribe_one_click is True
    assert dist.language == "de"


async def test_unknown_ids_raise_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.send("nope")
    with pytest.raises(NotFound):
        await store.distribution("nope")


async def test_claim_leases_due_sends_once(store) -> None:
    await store.enqueue(DIST, sends(5), hostname="h", now=100.0)
    first = await store.claim("w1", 3, lease_seconds=60, now=101.0)
    second = await store.claim("w2", 10, lease_seconds=60, now=101.0)
    assert len(first) == 3
    assert len(second) == 2
    assert not {c.send.id for c in first} & {c.send.id for c in second}
    assert await store.claim("w3", 10, lease_seconds=60, now=102.0) == []


async def test_send_at_in_the_future_is_not_due(store) -> None:
    later = NewDistribution(**{**DIST.__dict__, "send_at": 500.0})
    await store.enqueue(later, sends(1), hostname="h", now=100.0)
    assert await store.claim("w", 10, lease_seconds=60, now=200.0) == []
    assert len(await store.claim("w", 10, lease_seconds=60, now=500.0)) == 1


async def test_expired_lease_makes_the_send_due_again(store) -> None:
    _, ids = await store.enqueue(DIST, sends(1), hostname="h", now=100.0)
    await store.claim("dead", 10, lease_seconds=30, now=100.0)
    assert await store.claim("w2", 10, lease_seconds=30, now=120.0) == []
    again = await store.claim("w2", 10, lease_seconds=30, now=131.0)
    assert [c.send.id for c in again] == ids
    # the dead worker's late report is ignored: the lease is no longer its own
    late = Outcome(ids[0], State.DELIVERED, Reason.DELIVERED)
    assert await store.complete("dead", [late], now=132.0) == 0
    assert (await store.send(ids[0])).state is State.SENDING


async def test_concurrent_claims_never_share_a_send(store) -> None:
    await store.enqueue(DIST, sends(200), hostname="h", now=100.0)
    results = await asyncio.gather(
        *(store.claim(f"w{i}", 30, lease_seconds=60, now=101.0) for i in range(10))
    )
    ids = [c.send.id for batch in results for c in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_complete_records_state_attempt_event_and_suppression(store) -> None:
    dist_id, ids = await store.enqueue(DIST, sends(2), hostname="h", now=100.0)
    await store.claim("w", 10, lease_seconds=60, now=101.0)
    bounce = Attempt(
        101.0,
        101.5,
        Reason.MAILBOX_UNKNOWN,
        "mx1.dest.test",
        "127.0.0.2",
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
        550,
        "5.1.1",
        "no such user",
        "mta-sts enforce",
    )
    done = [
        Outcome(
            ids[0],
            State.BOUNCED,
            Reason.MAILBOX_UNKNOWN,
            attempt=bounce,
            suppress=Reason.SUPPRESSED_BOUNCE,
            identity="spf=fail → neutral sender",
        ),
        Outcome(
            ids[1],
            State.DEFERRED,
            Reason.CONNECTION,
            due_at=400.0,
            attempt=Attempt(101.0, 102.0, Reason.CONNECTION, text="refused"),
        ),
    ]
    assert await store.complete("w", done, now=102.0) == 2
    bounced = await store.send(ids[0])
    assert (bounced.state, bounced.reason, bounced.attempts) == (
        State.BOUNCED,
        Reason.MAILBOX_UNKNOWN,
        1,
    )
    assert (bounced.last_code, bounced.last_enhanced) == (550, "5.1.1")
    assert bounced.identity == "spf=fail → neutral sender"
    [attempt] = await store.attempts(ids[0])
    assert attempt.mx_host == "mx1.dest.test"
    assert attempt.tls_version == "TLSv1.3"
    assert attempt.tls_policy == "mta-sts enforce"
    [suppression] = await store.suppressions("acme")
    assert suppression.address == "user0@dest.test"
    assert suppression.reason is Reason.SUPPRESSED_BOUNCE
    deferred = await store.send(ids[1])
    assert deferred.state is State.DEFERRED
    assert deferred.due_at == 400.0
    states = [e.state for e in await store.events(send_id=ids[0])]
    assert states == [State.QUEUED, State.SENDING, State.BOUNCED]
    assert await store.counts(dist_id) == {State.BOUNCED: 1, State.DEFERRED: 1}


async def test_claim_marks_suppressed_addresses(store) -> None:
    await store.suppress("acme", "USER0@dest.test", Reason.SUPPRESSED_BOUNCE, now=1.0)
    await store.suppress("", "user1@dest.test", Reason.SUPPRESSED_UNSUBSCRIBE, now=1.0)
    await store.suppress("other", "user2@dest.test", Reason.SUPPRESSED_BOUNCE, now=1.0)
    await store.enqueue(DIST, sends(3), hostname="h", now=100.0)
    claimed = {
        c.send.recipient: c.suppressed
        for c in await store.claim("w", 10, lease_seconds=60, now=101.0)
    }
    assert claimed == {
        "user0@dest.test": Reason.SUPPRESSED_BOUNCE,
        "user1@dest.test": Reason.SUPPRESSED_UNSUBSCRIBE,
        "user2@dest.test": None,
    }
    assert await store.unsuppress("acme", "user0@dest.test")
    assert not await store.unsuppress("acme", "user0@dest.test")


async def test_release_returns_leased_sends_without_an_attempt(store) -> None:
    _, ids = await store.enqueue(DIST, sends(2), hostname="h", now=100.0)
    await store.claim("w", 10, lease_seconds=60, now=101.0)
    assert await store.release("w", ids, now=102.0) == 2
    again = await store.claim("w2", 10, lease_seconds=60, now=102.0)
    assert sorted(c.send.id for c in again) == sorted(ids)
    assert all(c.send.attempts == 0 for c in again)


async def test_list_sends_filters_and_pages(store) -> None:
    dist_id, ids = await store.enqueue(DIST, sends(5), hostname="h", now=100.0)
    await store.enqueue(DIST, sends(2, "other.test"), hostname="h", now=100.0)
    page1 = await store.list_sends(SendFilter(distribution_id=dist_id), limit=3)
    page2 = await store.list_sends(SendFilter(distribution_id=dist_id), limit=3, after=page1[-1].id)
    assert [s.id for s in page1 + page2] == ids
    other = await store.list_sends(SendFilter(domain="OTHER.test"))
    assert {s.domain for s in other} == {"other.test"}
    queued = await store.list_sends(SendFilter(states=(State.QUEUED,), reasons=(Reason.QUEUED,)))
    assert len(queued) == 7


async def test_event_feed_pages_without_gaps_or_repeats(store) -> None:
    await store.enqueue(DIST, sends(25), hostname="h", now=100.0)
    seen: list[int] = []
    after = 0
    while page := await store.events(after=after, limit=7):
        seen.extend(e.seq for e in page)
        after = page[-1].seq
    assert len(seen) == len(set(seen)) == 25
    assert seen == sorted(seen)


async def test_summary_counts_due_in_flight_and_waiting(store) -> None:
    await store.enqueue(DIST, sends(3), hostname="h", now=100.0)
    [claimed] = await store.claim("w", 1, lease_seconds=60, now=101.0)
    await store.complete(
        "w",
        [Outcome(claimed.send.id, State.DEFERRED, Reason.CONNECTION, due_at=300.0)],
        now=101.0,
    )
    await store.claim("w", 1, lease_seconds=60, now=101.0)
    summary = await store.summary(now=102.0)
    assert (summary.due, summary.in_flight, summary.waiting) == (1, 1, 1)
    assert summary.next_due == 100.0


async def test_idempotency_key_is_recorded_with_the_enqueue(store) -> None:
    key = Idempotency("req-1", "hash-a", '{"rejected": []}')
    dist_id, ids = await store.enqueue(DIST, sends(3), hostname="h", now=100.0, idempotency=key)
    record = await store.idempotent("acme", "req-1")
    assert record is not None
    assert (record.distribution_id, record.send_ids) == (dist_id, tuple(ids))
    assert (record.body_hash, record.data) == ("hash-a", '{"rejected": []}')
    assert record.created_at == 100.0
    assert await store.idempotent("other-account", "req-1") is None
    assert await store.idempotent("acme", "req-2") is None


async def test_reused_idempotency_key_stores_nothing_and_returns_the_first_ids(store) -> None:
    first = await store.enqueue(
        DIST, sends(2), hostname="h", now=100.0, idempotency=Idempotency("k", "h1")
    )
    again = await store.enqueue(
        DIST, sends(2), hostname="h", now=101.0, idempotency=Idempotency("k", "h1")
    )
    assert again == first
    assert await store.counts() == {State.QUEUED: 2}
    record = await store.idempotent("acme", "k")
    assert record is not None
    assert record.body_hash == "h1"
    other = NewDistribution(**{**DIST.__dict__, "account": "globex"})
    _, ids = await store.enqueue(
        other, sends(1), hostname="h", now=102.0, idempotency=Idempotency("k", "h1")
    )
    assert len(ids) == 1  # keys are per account


async def test_cancel_ends_what_is_not_yet_sent_with_an_event(store) -> None:
    dist_id, ids = await store.enqueue(DIST, sends(4), hostname="h", now=100.0)
    claimed = await store.claim("w", 2, lease_seconds=60, now=101.0)
    [leased, delivered] = [c.send.id for c in claimed]
    await store.complete("w", [Outcome(delivered, State.DELIVERED, Reason.DELIVERED)], now=102.0)
    assert await store.cancel(dist_id, now=103.0) == 2
    assert await store.counts(dist_id) == {
        State.CANCELLED: 2,
        State.SENDING: 1,
        State.DELIVERED: 1,
    }
    cancelled = [i for i in ids if i not in (leased, delivered)]
    for send_id in cancelled:
        send = await store.send(send_id)
        assert (send.state, send.reason) == (State.CANCELLED, Reason.CANCELLED)
        [*_, last] = await store.events(send_id=send_id)
        assert (last.state, last.reason, last.at) == (State.CANCELLED, Reason.CANCELLED, 103.0)
    assert await store.claim("w2", 10, lease_seconds=60, now=104.0) == []
    assert await store.cancel(dist_id, now=105.0) == 0
    with pytest.raises(NotFound):
        await store.cancel("nope", now=105.0)


async def test_flush_makes_deferred_sends_due_now_keeping_their_state(store) -> None:
    _, ids = await store.enqueue(DIST, sends(2) + sends(1, "Other.TEST"), hostname="h", now=100.0)
    claimed = await store.claim("w", 3, lease_seconds=60, now=101.0)
    await store.complete(
        "w",
        [Outcome(c.send.id, State.DEFERRED, Reason.CONNECTION, due_at=1000.0) for c in claimed],
        now=102.0,
    )
    assert await store.claim("w", 10, lease_seconds=60, now=103.0) == []
    # only the named domain (normalised like a hold's), only deferred sends
    assert await store.flush(now=104.0, domain="OTHER.test.") == 1
    [other] = await store.claim("w", 10, lease_seconds=60, now=104.0)
    assert other.send.id == ids[2]
    assert other.send.reason is Reason.CONNECTION
    assert await store.flush(now=105.0) == 2
    again = await store.claim("w", 10, lease_seconds=60, now=105.0)
    assert sorted(c.send.id for c in again) == sorted(ids[:2])
    assert await store.flush(now=106.0) == 0
    with pytest.raises(ValidationError):
        await store.flush(now=106.0, domain=" ")


async def test_queue_depth_counts_only_unfinished_sends(store) -> None:
    dist_id, _ = await store.enqueue(DIST, sends(5), hostname="h", now=100.0)
    claimed = await store.claim("w", 3, lease_seconds=60, now=101.0)
    done = [
        Outcome(claimed[0].send.id, State.DELIVERED, Reason.DELIVERED),
        Outcome(claimed[1].send.id, State.DEFERRED, Reason.CONNECTION, due_at=500.0),
    ]
    await store.complete("w", done, now=102.0)
    await store.hold("distribution", dist_id, now=103.0)
    assert await store.queue_depth() == {State.HELD: 3, State.SENDING: 1}
    await store.release_hold("distribution", dist_id, now=104.0)
    assert await store.queue_depth() == {State.QUEUED: 3, State.SENDING: 1}
    assert State.DELIVERED in await store.counts()


async def test_sqlite_queue_depth_reads_the_partial_index_of_unfinished_sends(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3") as store:
        plan = " ".join(
            str(tuple(row))
            for row in store.conn.execute("EXPLAIN QUERY PLAN " + sqlite_sql.QUEUE_DEPTH)
        )
    assert "sends_unfinished" in plan
    assert "SCAN sends " not in plan + " "


async def finished_history(store, now: float) -> tuple[list[str], list[str]]:
    """Two old sends (delivered at 110 with an attempt, bounced and
    suppressed at 120) and one deferred send, all enqueued at 100."""
    _, ids = await store.enqueue(DIST, sends(3), hostname="h", now=100.0)
    claimed = {c.send.id: c for c in await store.claim("w", 3, lease_seconds=60, now=101.0)}
    assert set(claimed) == set(ids)
    await store.complete(
        "w",
        [
            Outcome(ids[0], State.DELIVERED, Reason.DELIVERED,
                    attempt=Attempt(105.0, 106.0, Reason.DELIVERED, code=250)),
            Outcome(ids[1], State.BOUNCED, Reason.MAILBOX_UNKNOWN,
                    attempt=Attempt(115.0, 116.0, Reason.MAILBOX_UNKNOWN, code=550),
                    suppress=Reason.SUPPRESSED_BOUNCE),
            Outcome(ids[2], State.DEFERRED, Reason.CONNECTION, due_at=now + 60),
        ],
        now=120.0,
    )  # fmt: skip
    return ids[:2], ids[2:]


async def test_prune_removes_old_finished_sends_with_their_attempts_and_events(store) -> None:
    old, waiting = await finished_history(store, now=200.0)
    events_before = await store.events(after=0, limit=1000)
    last_seq = events_before[-1].seq
    # nothing is older than 110: nothing goes
    assert await store.prune(before=110.0, limit=100) == Pruned(0, 0, 0)
    pruned = await store.prune(before=150.0, limit=1)
    assert (pruned.sends, pruned.attempts) == (1, 1)
    again = await store.prune(before=150.0, limit=100)
    assert (again.sends, again.attempts) == (1, 1)
    assert pruned.events + again.events == sum(1 for e in events_before if e.send_id in old)
    for send_id in old:
        with pytest.raises(NotFound):
            await store.send(send_id)
        assert await store.attempts(send_id) == []
    # the unfinished send and its events stay; suppressions stay
    assert (await store.send(waiting[0])).state is State.DEFERRED
    left = await store.events(after=0, limit=1000)
    assert {e.send_id for e in left} == set(waiting)
    assert [s.address for s in await store.suppressions("acme")] == ["user1@dest.test"]
    # sequence numbers are never reused: a cursor keeps its meaning
    _, more = await store.enqueue(DIST, sends(1), hostname="h", now=300.0)
    newest = await store.events(after=last_seq, limit=1000)
    assert [e.send_id for e in newest] == more
    assert newest[0].seq > last_seq


async def test_prune_takes_the_webhook_delivery_log_by_age_in_batches(store) -> None:
    endpoint = await store.webhooks.create(
        NewEndpoint("acme", "https://h.test/", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), now=1.0
    )
    await store.enqueue(DIST, sends(1), hostname="h", now=100.0)
    await store.webhooks.claim("w", 1, lease_seconds=1e6, now=100.0)

    def build(events):
        return "msg_1", b"[]"

    batch = await store.webhooks.form_batch("w", endpoint.id, limit=10, build=build, now=100.0)
    for at in (100.0, 110.0, 120.0, 200.0):
        failed = Result(batch, "retry", 500, 0.1, "", error="HTTP 500", next_attempt_at=at)
        assert await store.webhooks.record("w", failed, lease_seconds=1e6, now=at)
    first = await store.prune(before=150.0, limit=2)
    assert first.deliveries == 2
    assert first.full(2)
    second = await store.prune(before=150.0, limit=2)
    assert second.deliveries == 1
    assert not second.full(2)
    assert [d.at for d in await store.webhooks.deliveries(endpoint.id)] == [200.0]
    assert (await store.prune(before=150.0, limit=2)).deliveries == 0


async def test_prune_purges_expired_idempotency_records_only(store) -> None:
    made = []
    for key, at in (("k-old", 100.0), ("k-older", 90.0), ("k-new", 200.0)):
        dist_id, _ = await store.enqueue(
            DIST, sends(1), hostname="h", now=at, idempotency=Idempotency(key, "hash")
        )
        made.append(dist_id)
    # without a cut-off they are kept, whatever their age
    assert (await store.prune(before=1e9, limit=100)).idempotency == 0
    assert await store.idempotent("acme", "k-older") is not None
    first = await store.prune(before=0.0, limit=1, idempotency_before=150.0)
    assert first.idempotency == 1
    assert await store.idempotent("acme", "k-older") is None  # the oldest first
    assert await store.idempotent("acme", "k-old") is not None
    assert (await store.prune(before=0.0, limit=100, idempotency_before=150.0)).idempotency == 1
    assert await store.idempotent("acme", "k-old") is None
    kept = await store.idempotent("acme", "k-new")
    assert kept is not None
    # the distributions they made stay; a purged key is a new request
    for dist_id in made:
        assert (await store.distribution(dist_id)).account == "acme"
    again, _ = await store.enqueue(
        DIST, sends(1), hostname="h", now=300.0, idempotency=Idempotency("k-old", "other")
    )
    assert again not in made


async def test_unsubscribe_link_of_a_pruned_send_still_suppresses(store) -> None:
    old, _ = await finished_history(store, now=200.0)
    await store.prune(before=150.0, limit=100)
    assert await store.unsubscribe("acme", "user0@dest.test", now=400.0, send_id=old[0])
    [entry] = [s for s in await store.suppressions("acme") if s.address == "user0@dest.test"]
    assert entry.reason is Reason.SUPPRESSED_UNSUBSCRIBE


async def test_prune_takes_late_events_of_pruned_sends_once_they_are_old(store) -> None:
    old, _ = await finished_history(store, now=200.0)
    # an event recorded after the send finished (an unsubscribe at 160)
    await store.unsubscribe("acme", "user0@dest.test", now=160.0, send_id=old[0])
    await store.prune(before=150.0, limit=100)
    late = [e for e in await store.events(after=0, limit=1000) if e.send_id == old[0]]
    assert [e.at for e in late] == [160.0]
    assert (await store.prune(before=170.0, limit=100)).events == 1
    assert [e for e in await store.events(after=0, limit=1000) if e.send_id == old[0]] == []


async def test_unsubscribe_suppresses_for_the_account_with_an_event_on_the_send(store) -> None:
    _, ids = await store.enqueue(DIST, sends(2), hostname="h", now=100.0)
    assert await store.unsubscribe(
        "acme", "USER0@dest.test", now=110.0, send_id=ids[0], detail="one-click"
    )
    [suppression] = await store.suppressions("acme")
    assert (suppression.address, suppression.reason) == (
        "user0@dest.test",
        Reason.SUPPRESSED_UNSUBSCRIBE,
    )
    [*_, event] = await store.events(send_id=ids[0])
    assert (event.state, event.reason, event.detail) == (
        State.QUEUED,
        Reason.SUPPRESSED_UNSUBSCRIBE,
        "one-click",
    )
    assert (await store.send(ids[0])).state is State.QUEUED
    # a second unsubscribe changes nothing
    assert not await store.unsubscribe("acme", "user0@dest.test", now=111.0, send_id=ids[0])
    assert len(await store.events(send_id=ids[0])) == 2
    # a send id that is not to this address gets no event
    assert await store.unsubscribe("acme", "user9@dest.test", now=112.0, send_id=ids[1])
    assert len(await store.events(send_id=ids[1])) == 1
    claimed = {
        c.send.recipient: c.suppressed
        for c in await store.claim("w", 10, lease_seconds=60, now=120.0)
    }
    assert claimed["user0@dest.test"] is Reason.SUPPRESSED_UNSUBSCRIBE
    assert claimed["user1@dest.test"] is None


# operator tools: holds, replay, stats -----------------------------------------


async def finish(store, outcomes: dict[str, tuple[State, Reason]], *, now: float) -> None:
    """Lease every due send and record the given outcome for each listed one
    (the others are given back)."""
    claimed = await store.claim("w-ops", 10_000, lease_seconds=60, now=now)
    mine = [c.send.id for c in claimed if c.send.id in outcomes]
    attempt = Attempt(now, now, Reason.CONNECTION, code=550, enhanced="5.7.1", text="no")
    await store.complete(
        "w-ops",
        [Outcome(i, *outcomes[i], due_at=now + 100, attempt=attempt) for i in mine],
        now=now,
    )
    await store.release("w-ops", [c.send.id for c in claimed if c.send.id not in outcomes], now=now)


async def test_hold_moves_waiting_sends_of_the_domain_and_nothing_claims_them(store) -> None:
    _, held = await store.enqueue(DIST, sends(2, "held.test"), hostname="h", now=100.0)
    _, free = await store.enqueue(DIST, sends(1, "free.test"), hostname="h", now=100.0)
    await finish(store, {held[1]: (State.DEFERRED, Reason.CONNECTION)}, now=101.0)
    assert await store.hold("domain", "HELD.test", now=102.0, note="customer asked") == 2
    for send_id in held:
        send = await store.send(send_id)
        assert (send.state, send.reason) == (State.HELD, Reason.HELD)
        [*_, event] = await store.events(send_id=send_id)
        assert (event.state, event.reason, event.at) == (State.HELD, Reason.HELD, 102.0)
        assert "customer asked" in (event.detail or "")
    claimed = await store.claim("w", 10, lease_seconds=60, now=500.0)
    assert [c.send.id for c in claimed] == free
    [hold] = await store.holds()
    assert (hold.kind, hold.value, hold.note) == ("domain", "held.test", "customer asked")
    assert hold.created_at == 102.0


async def test_new_sends_to_a_held_domain_start_held(store) -> None:
    await store.hold("domain", "held.test", now=100.0)
    _, ids = await store.enqueue(
        DIST, [*sends(2, "held.test"), *sends(1, "free.test")], hostname="h", now=101.0
    )
    states = [(await store.send(i)).state for i in ids]
    assert states == [State.HELD, State.HELD, State.QUEUED]
    assert (await store.counts()) == {State.HELD: 2, State.QUEUED: 1}


async def test_hold_on_a_distribution_and_release_when_no_other_hold_covers(store) -> None:
    dist_id, ids = await store.enqueue(
        DIST, [*sends(1, "a.test"), *sends(1, "b.test")], hostname="h", now=100.0
    )
    assert await store.hold("distribution", dist_id, now=101.0) == 2
    await store.hold("domain", "a.test", now=102.0)
    assert await store.release_hold("distribution", dist_id, now=103.0) == 1
    a, b = [await store.send(i) for i in ids]
    assert (a.state, b.state) == (State.HELD, State.QUEUED)
    assert (b.reason, b.due_at) == (Reason.RELEASED, 103.0)
    [*_, event] = await store.events(send_id=b.id)
    assert (event.state, event.reason) == (State.QUEUED, Reason.RELEASED)
    assert await store.release_hold("domain", "a.test", now=104.0) == 1
    assert (await store.send(a.id)).state is State.QUEUED
    assert await store.holds() == []
    assert len(await store.claim("w", 10, lease_seconds=60, now=104.0)) == 2


async def test_unknown_holds_and_distributions_are_refused(store) -> None:
    with pytest.raises(NotFound):
        await store.release_hold("domain", "never.test", now=100.0)
    with pytest.raises(NotFound):
        await store.hold("distribution", "nope", now=100.0)
    with pytest.raises(ValidationError):
        await store.hold("planet", "mars", now=100.0)
    assert await store.holds() == []


async def test_a_send_in_flight_when_held_is_held_instead_of_deferred(store) -> None:
    _, ids = await store.enqueue(DIST, sends(3, "held.test"), hostname="h", now=100.0)
    claimed = await store.claim("w", 10, lease_seconds=60, now=101.0)
    assert await store.hold("domain", "held.test", now=102.0) == 0  # all three in flight
    attempt = Attempt(102.0, 103.0, Reason.CONNECTION, text="timeout")
    await store.complete(
        "w",
        [
            Outcome(ids[0], State.DEFERRED, Reason.CONNECTION, due_at=200.0, attempt=attempt),
            Outcome(ids[1], State.DELIVERED, Reason.DELIVERED, attempt=attempt),
        ],
        now=103.0,
    )
    await store.release("w", [ids[2]], now=104.0)  # a stopping worker gives it back
    assert len(claimed) == 3
    deferred, delivered, given_back = [await store.send(i) for i in ids]
    assert (deferred.state, deferred.reason, deferred.attempts) == (State.HELD, Reason.HELD, 1)
    [*_, event] = await store.events(send_id=deferred.id)
    assert event.state is State.HELD
    assert "deferred (connection) while held" in (event.detail or "")
    assert delivered.state is State.DELIVERED
    assert given_back.state is State.HELD
    assert await store.claim("w", 10, lease_seconds=60, now=500.0) == []


async def test_replay_requeues_matching_bounced_and_failed_sends_once(store) -> None:
    _, ids = await store.enqueue(DIST, sends(5), hostname="h", now=100.0)
    await finish(
        store,
        {
            ids[0]: (State.BOUNCED, Reason.POLICY_BLOCK),
            ids[1]: (State.BOUNCED, Reason.POLICY_BLOCK),
            ids[2]: (State.FAILED, Reason.EXPIRED),
            ids[3]: (State.DELIVERED, Reason.DELIVERED),
            ids[4]: (State.DEFERRED, Reason.CONNECTION),
        },
        now=101.0,
    )
    flt = SendFilter(reasons=(Reason.POLICY_BLOCK, Reason.EXPIRED, Reason.DELIVERED))
    batch = await store.replay(flt, now=102.0, note="ticket 42")
    assert (batch.requeued, batch.skipped, batch.last_id) == (3, 0, None)
    for send_id in ids[:3]:
        send = await store.send(send_id)
        assert (send.state, send.reason) == (State.QUEUED, Reason.REPLAYED)
        assert (send.due_at, send.attempts) == (102.0, 1)
        # the retry window starts again at the replay
        assert (send.replayed_at, send.retry_from, send.created_at) == (102.0, 102.0, 100.0)
        [*_, event] = await store.events(send_id=send_id)
        assert (event.state, event.reason) == (State.QUEUED, Reason.REPLAYED)
        assert event.detail == "ticket 42"
    assert (await store.send(ids[3])).state is State.DELIVERED
    assert (await store.send(ids[4])).state is State.DEFERRED
    assert len(await store.attempts(ids[0])) == 1
    again = await store.replay(flt, now=103.0)
    assert again.requeued == 0
    assert (await store.replay_plan(flt)).matching == 0


async def test_replay_filters_by_domain_reason_distribution_and_time(store) -> None:
    d1, ids1 = await store.enqueue(DIST, sends(2, "a.test"), hostname="h", now=100.0)
    _, ids2 = await store.enqueue(DIST, sends(1, "b.test"), hostname="h", now=100.0)
    await finish(
        store,
        {
            ids1[0]: (State.BOUNCED, Reason.POLICY_BLOCK),
            ids1[1]: (State.BOUNCED, Reason.MAILBOX_UNKNOWN),
            ids2[0]: (State.BOUNCED, Reason.POLICY_BLOCK),
        },
        now=200.0,
    )
    assert (await store.replay_plan(SendFilter(domain="a.test"))).matching == 2
    assert (await store.replay_plan(SendFilter(reasons=(Reason.POLICY_BLOCK,)))).matching == 2
    assert (await store.replay_plan(SendFilter(distribution_id=d1))).matching == 2
    assert (await store.replay_plan(SendFilter(since=150.0, until=250.0))).matching == 3
    assert (await store.replay_plan(SendFilter(until=150.0))).matching == 0
    flt = SendFilter(domain="a.test", reasons=(Reason.POLICY_BLOCK,))
    assert (await store.replay(flt, now=300.0)).requeued == 1
    assert (await store.send(ids1[0])).state is State.QUEUED
    assert (await store.send(ids1[1])).state is State.BOUNCED
    assert (await store.send(ids2[0])).state is State.BOUNCED


async def test_replay_refuses_states_other_than_bounced_and_failed(store) -> None:
    for state in (State.DELIVERED, State.SENDING, State.QUEUED, State.HELD):
        with pytest.raises(ValidationError):
            await store.replay(SendFilter(states=(State.BOUNCED, state)), now=100.0)
        with pytest.raises(ValidationError):
            await store.replay_plan(SendFilter(states=(state,)))


async def test_replay_skips_suppressed_addresses_unless_asked_and_never_global_ones(store) -> None:
    _, ids = await store.enqueue(DIST, sends(3), hostname="h", now=100.0)
    await finish(store, {i: (State.BOUNCED, Reason.MAILBOX_UNKNOWN) for i in ids}, now=101.0)
    await store.suppress("acme", "user0@dest.test", Reason.SUPPRESSED_BOUNCE, now=101.0)
    await store.suppress("", "user1@dest.test", Reason.SUPPRESSED_BOUNCE, now=101.0)
    plan = await store.replay_plan(SendFilter())
    assert (plan.matching, plan.suppressed, plan.globally_suppressed) == (3, 2, 1)
    assert (plan.replayable(False), plan.replayable(True)) == (1, 2)
    first = await store.replay(SendFilter(), now=102.0)
    assert (first.requeued, first.skipped, first.unsuppressed) == (1, 2, 0)
    assert (await store.send(ids[2])).state is State.QUEUED
    second = await store.replay(SendFilter(), now=103.0, include_suppressed=True)
    assert (second.requeued, second.skipped, second.unsuppressed) == (1, 1, 1)
    assert (await store.send(ids[0])).state is State.QUEUED
    assert (await store.send(ids[1])).state is State.BOUNCED
    assert [s.address for s in await store.suppressions()] == ["user1@dest.test"]


async def test_replay_pages_by_id_in_batches(store) -> None:
    _, ids = await store.enqueue(DIST, sends(7), hostname="h", now=100.0)
    await finish(store, {i: (State.FAILED, Reason.EXPIRED) for i in ids}, now=101.0)
    await store.suppress("acme", "user3@dest.test", Reason.SUPPRESSED_BOUNCE, now=101.0)
    batches = []
    after = None
    while True:
        batch = await store.replay(SendFilter(), now=102.0, after=after, limit=3)
        batches.append((batch.requeued, batch.skipped))
        after = batch.last_id
        if after is None:
            break
    assert batches == [(3, 0), (2, 1), (1, 0)]
    assert (await store.counts()) == {State.QUEUED: 6, State.FAILED: 1}


async def test_replayed_sends_of_a_held_domain_start_held(store) -> None:
    _, ids = await store.enqueue(DIST, sends(2), hostname="h", now=100.0)
    await finish(store, {i: (State.BOUNCED, Reason.POLICY_BLOCK) for i in ids}, now=101.0)
    await store.hold("domain", "dest.test", now=102.0)
    batch = await store.replay(SendFilter(), now=103.0)
    assert (batch.requeued, batch.held) == (2, 2)
    assert (await store.counts()) == {State.HELD: 2}


async def test_stats_counts_reasons_destinations_throughput_and_holds(store) -> None:
    _, ids = await store.enqueue(DIST, [*sends(4), *sends(2, "slow.test")], hostname="h", now=0.0)
    await finish(
        store,
        {
            ids[0]: (State.DELIVERED, Reason.DELIVERED),
            ids[1]: (State.BOUNCED, Reason.POLICY_BLOCK),
            ids[2]: (State.BOUNCED, Reason.POLICY_BLOCK),
            ids[3]: (State.FAILED, Reason.EXPIRED),
            ids[4]: (State.DEFERRED, Reason.TLS_UNAVAILABLE),
            ids[5]: (State.DEFERRED, Reason.TLS_UNAVAILABLE),
        },
        now=6000.0,
    )
    await store.hold("domain", "other.test", now=6001.0)
    stats = await store.stats(now=6030.0, minutes=3)
    assert stats.counts == {
        State.DELIVERED: 1,
        State.BOUNCED: 2,
        State.FAILED: 1,
        State.DEFERRED: 2,
    }
    assert [(r.state, r.reason, r.count) for r in stats.failure_reasons] == [
        (State.BOUNCED, Reason.POLICY_BLOCK, 2),
        (State.FAILED, Reason.EXPIRED, 1),
    ]
    assert [(d.domain, d.reason, d.count) for d in stats.deferring] == [
        ("slow.test", Reason.TLS_UNAVAILABLE, 2),
    ]
    assert [t.minute for t in stats.throughput] == [5880.0, 5940.0, 6000.0]
    last = stats.throughput[-1]
    assert (last.delivered, last.bounced, last.failed, last.deferred) == (1, 2, 1, 2)
    assert stats.throughput[0].delivered == 0
    assert [(h.kind, h.value) for h in stats.holds] == [("domain", "other.test")]
    # every destination domain, busiest first, per state in the vocabulary's order
    assert [(d.domain, d.total, d.states) for d in stats.domains] == [
        (
            "dest.test",
            4,
            ((State.DELIVERED, 1), (State.BOUNCED, 2), (State.FAILED, 1)),
        ),
        ("slow.test", 2, ((State.DEFERRED, 2),)),
    ]
    top = await store.stats(now=6030.0, minutes=3, top=1)
    assert [d.domain for d in top.domains] == ["dest.test"]


async def test_suppress_many_writes_every_entry(store) -> None:
    entries = [
        Suppression("acme", "A@dest.test", Reason.SUPPRESSED_BOUNCE, 100.0, "import"),
        Suppression("", "b@dest.test", Reason.SUPPRESSED_UNSUBSCRIBE, 100.0),
    ]
    assert await store.suppress_many(entries) == 2
    got = {(s.account, s.address, s.reason) for s in await store.suppressions()}
    assert got == {
        ("acme", "a@dest.test", Reason.SUPPRESSED_BOUNCE),
        ("", "b@dest.test", Reason.SUPPRESSED_UNSUBSCRIBE),
    }


async def test_renew_extends_only_the_owners_live_leases(store) -> None:
    _, ids = await store.enqueue(DIST, sends(2), hostname="h", now=100.0)
    await store.claim("w1", 1, lease_seconds=10, now=100.0)
    await store.claim("w2", 1, lease_seconds=10, now=100.0)
    assert await store.renew("w1", ids, lease_seconds=10, now=105.0) == 1
    # w1's lease now runs to 115, w2's ran out at 110
    again = await store.claim("w3", 10, lease_seconds=10, now=111.0)
    assert len(again) == 1
    assert await store.renew("w2", ids, lease_seconds=10, now=111.0) == 0


async def test_a_suppression_never_gives_way_to_a_weaker_reason_unless_replaced(store) -> None:
    unsub, bounce = Reason.SUPPRESSED_UNSUBSCRIBE, Reason.SUPPRESSED_BOUNCE
    await store.suppress("acme", "a@dest.test", unsub, now=10.0, detail="asked by phone")
    assert not await store.suppress("acme", "A@dest.test", bounce, now=20.0, detail="550")
    assert not await store.suppress("acme", "a@dest.test", unsub, now=30.0, detail="again")
    written = await store.suppress_many(
        [
            Suppression("acme", "a@dest.test", bounce, 40.0, None),
            Suppression("acme", "b@dest.test", bounce, 40.0, "old list"),
        ]
    )
    assert written == 1
    # a stronger reason takes the place of a weaker one
    assert await store.suppress("acme", "b@dest.test", unsub, now=50.0, detail="link")
    [a, b] = await store.suppressions("acme")
    assert (a.reason, a.created_at, a.detail) == (unsub, 10.0, "asked by phone")
    assert (b.reason, b.created_at, b.detail) == (unsub, 50.0, "link")
    # an unsubscribe link does not undo what is on the list already
    assert not await store.unsubscribe("acme", "a@dest.test", now=60.0)
    # the operator may overwrite
    assert await store.suppress("acme", "a@dest.test", bounce, now=70.0, replace=True)
    assert (
        await store.suppress_many(
            [Suppression("acme", "b@dest.test", bounce, 80.0, "x")], replace=True
        )
        == 1
    )
    assert {(s.address, s.reason, s.detail) for s in await store.suppressions("acme")} == {
        ("a@dest.test", bounce, None),
        ("b@dest.test", bounce, "x"),
    }


async def test_an_automatic_bounce_suppression_keeps_an_unsubscribe(store) -> None:
    await store.enqueue(DIST, sends(1), hostname="h", now=100.0)
    await store.suppress(
        "acme", "user0@dest.test", Reason.SUPPRESSED_UNSUBSCRIBE, now=50.0, detail="link"
    )
    [claimed] = await store.claim("w", 1, lease_seconds=60, now=101.0)
    await store.complete(
        "w",
        [
            Outcome(
                claimed.send.id,
                State.BOUNCED,
                Reason.MAILBOX_UNKNOWN,
                attempt=Attempt(101.0, 102.0, Reason.MAILBOX_UNKNOWN, code=550, text="no"),
                suppress=Reason.SUPPRESSED_BOUNCE,
            )
        ],
        now=102.0,
    )
    [kept] = await store.suppressions("acme")
    assert (kept.reason, kept.created_at, kept.detail) == (
        Reason.SUPPRESSED_UNSUBSCRIBE,
        50.0,
        "link",
    )


async def test_sts_policies_are_stored_replaced_listed_when_due_and_dropped(store) -> None:
    assert await store.sts_policy("dest.test") is None
    first = CachedPolicy("dest.test", "1", "enforce", ("mx1.dest.test", "*.dest.test"), 100, 0, 100)
    await store.put_sts_policy(first)
    assert await store.sts_policy("dest.test") == first
    newer = CachedPolicy("dest.test", "2", "testing", ("mx2.dest.test",), 400, 50, 450)
    other = CachedPolicy("other.test", "a", "enforce", ("mx.other.test",), 1000, 0, 1000)
    await store.put_sts_policy(newer)
    await store.put_sts_policy(other)
    assert await store.sts_policy("dest.test") == newer
    # due at three quarters of max_age: dest.test at 350, other.test at 750
    assert await store.sts_policies_due(now=349) == []
    assert await store.sts_policies_due(now=350) == [newer]
    assert await store.sts_policies_due(now=800) == [newer, other]
    assert await store.drop_sts_policy("dest.test") is True
    assert await store.drop_sts_policy("dest.test") is False
    assert await store.sts_policy("dest.test") is None


# TLS reporting (RFC 8460): daily counts and report jobs ---------------------------


def _tls_success(domain: str = "dest.test", n: int = 1) -> TLSCount:
    policy = ("version: STSv1", "mode: testing", "mx: *.dest.test", "max_age: 86400")
    return TLSCount("2026-12-05", domain, "sts", policy, ("*.dest.test",), count=n)


def _tls_failure(ip: str = "127.0.0.2") -> TLSCount:
    return dataclasses.replace(
        _tls_success(),
        result_type="certificate-host-mismatch",
        sending_ip="192.0.2.1",
        receiving_mx="mx1.dest.test",
        receiving_ip=ip,
        reason_code="certificate",
    )


async def test_tls_counts_go_with_the_outcome_batch_and_add_up(store) -> None:
    _, [send_id] = await store.enqueue(DIST, sends(1), hostname="h", now=100.0)
    await store.claim("w", 10, lease_seconds=30, now=100.0)
    done = Outcome(send_id, State.DELIVERED, Reason.DELIVERED)
    counts = [_tls_success(), _tls_success(), _tls_failure(), _tls_failure("127.0.0.3")]
    assert await store.complete("w", [done], now=101.0, tls_counts=counts) == 1
    # another worker's sessions of the same day add to the same rows
    await store.tlsrpt.add_counts([_tls_success(n=3), _tls_failure()])
    got = await store.tlsrpt.counts("2026-12-05")
    by_type = {(c.result_type, c.receiving_ip): c.count for c in got}
    assert by_type == {
        ("", ""): 5,
        ("certificate-host-mismatch", "127.0.0.2"): 2,
        ("certificate-host-mismatch", "127.0.0.3"): 1,
    }
    assert got[0].policy_string[1] == "mode: testing"
    assert got[0].mx_host == ("*.dest.test",)
    assert await store.tlsrpt.counts("2026-12-04") == []
    assert await store.tlsrpt.counts("2026-12-05", "other.test") == []


async def test_report_jobs_are_made_for_finished_days_and_leased_once(store) -> None:
    await store.tlsrpt.add_counts([_tls_success(), _tls_success("b.test")])
    today = await store.tlsrpt.claim_reports(
        "w1", before_day="2026-12-05", limit=10, lease_seconds=60, now=1000.0
    )
    assert today == []  # the day is not over
    got = await store.tlsrpt.claim_reports(
        "w1", before_day="2026-12-06", limit=10, lease_seconds=60, now=1000.0
    )
    assert [(j.day, j.domain, j.state) for j in got] == [
        ("2026-12-05", "b.test", "due"),
        ("2026-12-05", "dest.test", "due"),
    ]
    other = await store.tlsrpt.claim_reports(
        "w2", before_day="2026-12-06", limit=10, lease_seconds=60, now=1001.0
    )
    assert other == []
    # w1 died: its leases end and the jobs are due again for w2
    again = await store.tlsrpt.claim_reports(
        "w2", before_day="2026-12-06", limit=10, lease_seconds=60, now=1061.0
    )
    assert len(again) == 2
    job = again[0]
    assert not await store.tlsrpt.finish_report("w1", job.id, "sent", now=1062.0)
    assert await store.tlsrpt.finish_report("w2", job.id, "sent", now=1062.0)
    retry = again[1]
    assert await store.tlsrpt.finish_report(
        "w2", retry.id, "due", now=1062.0, next_at=2000.0, detail="503"
    )
    assert (
        await store.tlsrpt.claim_reports(
            "w3", before_day="2026-12-06", limit=10, lease_seconds=60, now=1999.0
        )
        == []
    )
    [later] = await store.tlsrpt.claim_reports(
        "w3", before_day="2026-12-06", limit=10, lease_seconds=60, now=2000.0
    )
    assert later.id == retry.id
    assert later.tries == 1
    assert later.detail == "503"
    jobs = {j.domain: j for j in await store.tlsrpt.reports("2026-12-05")}
    assert jobs["b.test"].state == "sent"
    assert jobs["b.test"].sent_at == 1062.0


async def test_concurrent_report_claims_never_share_a_job(store) -> None:
    await store.tlsrpt.add_counts([_tls_success(f"d{i}.test") for i in range(12)])
    claims = await asyncio.gather(
        *(
            store.tlsrpt.claim_reports(
                f"w{i}", before_day="2026-12-06", limit=5, lease_seconds=60, now=10.0
            )
            for i in range(4)
        )
    )
    ids = [job.id for claim in claims for job in claim]
    assert len(ids) == len(set(ids)) == 12


async def test_old_tls_counts_go_once_their_report_is_done(store) -> None:
    old_done = dataclasses.replace(_tls_success(), day="2026-10-01")
    old_due = dataclasses.replace(_tls_success("b.test"), day="2026-10-01")
    await store.tlsrpt.add_counts([old_done, old_due, _tls_success()])
    jobs = await store.tlsrpt.claim_reports(
        "w", before_day="2026-10-02", limit=10, lease_seconds=60, now=1.0
    )
    done = next(j for j in jobs if j.domain == "dest.test")
    await store.tlsrpt.finish_report("w", done.id, "sent", now=2.0)
    assert await store.tlsrpt.prune_reports(before_day="2026-11-01") == 1
    assert await store.tlsrpt.counts("2026-10-01", "dest.test") == []
    # the report still due keeps its counts, and the recent day is untouched
    assert len(await store.tlsrpt.counts("2026-10-01", "b.test")) == 1
    assert [j.domain for j in await store.tlsrpt.reports("2026-10-01")] == ["b.test"]
    assert len(await store.tlsrpt.counts("2026-12-05")) == 1
