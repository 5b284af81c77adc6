"""The store contract: every backend runs these tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    NewDistribution,
    NewSend,
    Outcome,
    SendFilter,
)
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
