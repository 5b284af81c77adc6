"""The store contract for returned messages (mailer.feedback): every
backend runs these tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailer.errors import NotFound
from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    FeedbackEffect,
    FeedbackResult,
    NewDistribution,
    NewInbound,
    NewSend,
    Outcome,
)
from mailer.store.sqlite import sql as sqlite_sql
from mailer.store.sqlite.store import SQLiteStore
from tests.backends import BACKENDS, StoreFactory

DIST = NewDistribution(
    account="acme",
    sender_address="hr@acme.test",
    sender_name="ACME HR",
    subject="Umfrage",
    html="<p>Hallo</p>",
    text=None,
)
RAW = b"From: MAILER-DAEMON@example.com\r\nSubject: failure\r\n\r\n\xff body\r\n"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    factory: StoreFactory = request.param
    async with factory(request) as s:
        yield s


async def delivered(store, n: int = 2) -> list[str]:
    _, ids = await store.enqueue(
        DIST, [NewSend(f"u{i}@dest.test") for i in range(n)], hostname="mx.local", now=1.0
    )
    await store.claim("w", n, lease_seconds=60, now=2.0)
    attempt = Attempt(2.0, 2.5, Reason.DELIVERED, code=250)
    await store.complete(
        "w", [Outcome(i, State.DELIVERED, Reason.DELIVERED, attempt=attempt) for i in ids], now=3.0
    )
    return ids


async def test_a_stored_message_is_pending_with_its_raw_bytes_until_done(store) -> None:
    new = NewInbound("", ("b+x@bounces.test",), RAW, peer="127.0.0.1", tls=True)
    [inbound_id] = await store.inbound_put([new], now=10.0)
    [pending] = await store.inbound_pending()
    assert pending.id == inbound_id
    assert pending.raw == RAW
    assert pending.recipients == ("b+x@bounces.test",)
    assert pending.tls is True
    assert pending.size == len(RAW)
    result = FeedbackResult("unknown", "none", "{}", problem="no known layout")
    assert await store.inbound_done(inbound_id, result, now=11.0) is True
    assert await store.inbound_pending() == []
    got = await store.inbound_get(inbound_id)
    assert (got.kind, got.processed_at, got.problem) == ("unknown", 11.0, "no known layout")


async def test_a_late_bounce_turns_delivered_bounced_suppresses_and_records_an_event(store) -> None:
    ids = await delivered(store)
    [inbound_id] = await store.inbound_put([NewInbound("", ("b@x",), RAW)], now=10.0)
    effect = FeedbackEffect(
        ids[0],
        Reason.MAILBOX_UNKNOWN,
        bounce=True,
        suppress=Reason.SUPPRESSED_BOUNCE,
        code=550,
        enhanced="5.1.1",
        text="user unknown",
        detail="later, by DSN",
    )
    result = FeedbackResult("bounce", "rfc3464", "{}", ids[0], "verp", effects=(effect,))
    assert await store.inbound_done(inbound_id, result, now=12.0)
    send = await store.send(ids[0])
    assert (send.state, send.reason, send.last_enhanced) == (
        State.BOUNCED,
        Reason.MAILBOX_UNKNOWN,
        "5.1.1",
    )
    assert (await store.send(ids[1])).state is State.DELIVERED
    [entry] = await store.suppression_for("acme", "U0@dest.test")
    assert entry.reason is Reason.SUPPRESSED_BOUNCE
    last = (await store.events(send_id=ids[0]))[-1]
    assert (last.state, last.reason, last.detail) == (
        State.BOUNCED,
        Reason.MAILBOX_UNKNOWN,
        "later, by DSN",
    )


async def test_processing_twice_applies_once(store) -> None:
    ids = await delivered(store, 1)
    [inbound_id] = await store.inbound_put([NewInbound("", ("b@x",), RAW)], now=10.0)
    effect = FeedbackEffect(ids[0], Reason.COMPLAINED, suppress=Reason.SUPPRESSED_COMPLAINT)
    result = FeedbackResult("complaint", "arf", "{}", ids[0], "message-id", effects=(effect,))
    assert await store.inbound_done(inbound_id, result, now=12.0) is True
    before = await store.events(send_id=ids[0])
    assert await store.inbound_done(inbound_id, result, now=13.0) is False
    assert await store.events(send_id=ids[0]) == before
    assert before[-1].reason is Reason.COMPLAINED
    assert before[-1].state is State.DELIVERED  # a complaint changes no state


async def test_an_event_only_effect_leaves_the_send_as_it_was(store) -> None:
    ids = await delivered(store, 1)
    [inbound_id] = await store.inbound_put([NewInbound("", ("b@x",), RAW)], now=10.0)
    effect = FeedbackEffect(ids[0], Reason.AUTO_REPLY, detail="out of office")
    await store.inbound_done(
        inbound_id,
        FeedbackResult("autoreply", "rfc3834", "{}", ids[0], "verp", effects=(effect,)),
        now=12.0,
    )
    assert (await store.send(ids[0])).state is State.DELIVERED
    assert await store.suppressions("acme") == []


async def test_a_bounce_of_a_send_that_is_not_delivered_is_an_event_only(store) -> None:
    _, [send_id] = await store.enqueue(DIST, [NewSend("q@dest.test")], hostname="h", now=1.0)
    [inbound_id] = await store.inbound_put([NewInbound("", ("b@x",), RAW)], now=10.0)
    effect = FeedbackEffect(send_id, Reason.MAILBOX_UNKNOWN, bounce=True)
    await store.inbound_done(
        inbound_id,
        FeedbackResult("bounce", "rfc3464", "{}", send_id, "verp", effects=(effect,)),
        now=12.0,
    )
    assert (await store.send(send_id)).state is State.QUEUED


async def test_unmatched_messages_are_listed_apart(store) -> None:
    # one batch: ids in order (separate calls in one millisecond need not be)
    matched, unmatched, pending = await store.inbound_put(
        [NewInbound("", ("b@x",), RAW)] * 3, now=10.0
    )
    ids = await delivered(store, 1)
    await store.inbound_done(matched, FeedbackResult("bounce", "x", "{}", ids[0], "verp"), now=11)
    await store.inbound_done(unmatched, FeedbackResult("bounce", "x", "{}"), now=11)
    assert [m.id for m in await store.inbound_list(unmatched=True)] == [unmatched]
    listed = await store.inbound_list()
    assert [m.id for m in listed] == [matched, unmatched, pending]
    assert all(m.raw is None for m in listed)


async def test_messages_stored_together_get_ids_in_order(store) -> None:
    first, second = NewInbound("", ("a@x",), b"1"), NewInbound("", ("b@x",), b"2")
    ids = await store.inbound_put([first, second], now=10.0)
    assert [(await store.inbound_get(i)).raw for i in ids] == [b"1", b"2"]


async def test_unknown_inbound_ids_raise_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.inbound_get("nope")
    with pytest.raises(NotFound):
        await store.inbound_done("nope", FeedbackResult("unknown", "none", "{}"), now=1.0)


# the circuit breaker's side of the store ---------------------------------------


async def test_the_breaker_window_counts_our_envelopes_bounces_and_complaints(store) -> None:
    _, ids = await store.enqueue(
        DIST, [NewSend(f"w{i}@dest.test") for i in range(4)], hostname="h", now=1.0
    )
    await store.claim("w", 4, lease_seconds=60, now=2.0)
    ours = "spf=softfail → neutral sender"
    attempt = Attempt(2.0, 2.5, Reason.DELIVERED, code=250)
    await store.complete(
        "w",
        [
            Outcome(ids[0], State.DELIVERED, Reason.DELIVERED, attempt=attempt, identity=ours),
            Outcome(ids[1], State.BOUNCED, Reason.MAILBOX_UNKNOWN, attempt=attempt, identity=ours),
            Outcome(
                ids[2],
                State.DELIVERED,
                Reason.DELIVERED,
                attempt=attempt,
                identity="spf=pass → customer sender",
            ),
            Outcome(ids[3], State.DELIVERED, Reason.DELIVERED, attempt=attempt, identity=ours),
        ],
        now=3.0,
    )
    [inbound_id] = await store.inbound_put([NewInbound("", ("f@x",), RAW)], now=4.0)
    effect = FeedbackEffect(ids[3], Reason.COMPLAINED, suppress=Reason.SUPPRESSED_COMPLAINT)
    await store.inbound_done(
        inbound_id,
        FeedbackResult("complaint", "arf", "{}", ids[3], "message-id", effects=(effect,)),
        now=5,
    )
    window = await store.account_window("acme", since=0.0, limit=100)
    assert sorted((o.hard_bounce, o.complaint) for o in window) == [
        (False, False),
        (False, True),
        (True, False),
    ]
    assert await store.account_window("acme", since=2.0, limit=100) == []
    assert len(await store.account_window("acme", since=0.0, limit=2)) == 2
    assert await store.active_accounts(since=0.0) == ["acme"]


async def test_a_paused_account_holds_waiting_and_new_sends_until_released(store) -> None:
    _, waiting = await store.enqueue(DIST, [NewSend("a@dest.test")], hostname="h", now=1.0)
    other = NewDistribution("other", "x@o.test", "O", "s", "<p>x</p>", None)
    _, theirs = await store.enqueue(other, [NewSend("b@dest.test")], hostname="h", now=1.0)
    assert await store.pause_account("acme", now=2.0, detail="complaint rate 3/1000") == 1
    send = await store.send(waiting[0])
    assert (send.state, send.reason) == (State.HELD, Reason.ACCOUNT_PAUSED)
    last = (await store.events(send_id=waiting[0]))[-1]
    assert (last.reason, last.detail) == (Reason.ACCOUNT_PAUSED, "complaint rate 3/1000")
    assert (await store.send(theirs[0])).state is State.QUEUED
    _, new = await store.enqueue(DIST, [NewSend("c@dest.test")], hostname="h", now=3.0)
    assert (await store.send(new[0])).reason is Reason.ACCOUNT_PAUSED
    assert [c.send.id for c in await store.claim("w", 10, lease_seconds=60, now=4.0)] == theirs
    [pause] = await store.account_pauses()
    assert (pause.account, pause.paused_at, pause.released_at) == ("acme", 2.0, None)
    assert await store.release_account("acme", now=5.0) == 2
    assert {(await store.send(i)).state for i in (*waiting, *new)} == {State.QUEUED}
    [pause] = await store.account_pauses()
    assert (pause.paused_at, pause.released_at) == (None, 5.0)
    with pytest.raises(NotFound):
        await store.release_account("acme", now=6.0)


async def test_a_send_is_found_by_its_distribution_account_and_recipient(store) -> None:
    first, [a, b] = await store.enqueue(
        DIST, [NewSend("Ann@Dest.test"), NewSend("bob@dest.test")], hostname="h", now=1.0
    )
    # the same address in another distribution of the account
    other, [c] = await store.enqueue(DIST, [NewSend("ann@dest.test")], hostname="h", now=2.0)
    assert (await store.send_to(first, "acme", "ANN@dest.test")).id == a
    assert (await store.send_to(first, "acme", "bob@dest.test")).id == b
    assert (await store.send_to(other, "acme", "ann@dest.test")).id == c
    with pytest.raises(NotFound):
        await store.send_to(first, "another-account", "bob@dest.test")
    with pytest.raises(NotFound):
        await store.send_to(first, "acme", "nobody@dest.test")
    with pytest.raises(NotFound):
        await store.send_to("no-such-distribution", "acme", "bob@dest.test")


async def test_sqlite_finds_a_send_by_distribution_and_recipient_through_its_index(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3") as store:
        plan = " ".join(
            str(tuple(row))
            for row in store.conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_sql.SELECT_SEND_OF_DISTRIBUTION_TO,
                ("d", "a@example.org", "acme"),
            )
        )
    assert "sends_recipient" in plan
