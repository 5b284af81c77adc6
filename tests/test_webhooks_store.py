"""The webhook side of the store, against every backend: endpoints per
account, the cursor, fixed batches, leases and the delivery log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from mailer.errors import NotFound
from mailer.reasons import AccountEventKind, State
from mailer.store.models import Event, NewDistribution, NewSend
from mailer.store.webhooks import EndpointPatch, NewEndpoint, Result
from tests.backends import BACKENDS, StoreFactory

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Any]:
    factory: StoreFactory = request.param
    async with factory(request) as s:
        yield s


def dist(account: str) -> NewDistribution:
    return NewDistribution(account, "a@acme.test", "Acme", "Hi", "<p>x</p>", None)


async def enqueue(store: Any, account: str, n: int) -> None:
    people = [NewSend(f"u{i}@dest.test", f"U {i}", {}) for i in range(n)]
    await store.enqueue(dist(account), people, hostname="h", now=1000.0)


built: list[int] = []


def build(events: Sequence[Event]) -> tuple[str, bytes]:
    built.append(len(events))
    return f"msg_{events[0].seq}", json.dumps([e.seq for e in events]).encode()


async def test_a_new_endpoint_starts_at_the_end_of_the_feed(store: Any) -> None:
    await enqueue(store, "acme", 3)
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    assert ep.cursor == 3
    assert ep.enabled
    assert ep.event_types == ()
    [_claimed] = await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    assert await store.webhooks.form_batch("w1", ep.id, limit=100, build=build, now=2.0) is None


async def test_batches_hold_the_accounts_wanted_events_in_order_and_stay_fixed(store: Any) -> None:
    ep = await store.webhooks.create(
        NewEndpoint("acme", "https://h.test/", SECRET, event_types=("queued",)), now=1.0
    )
    await enqueue(store, "other", 2)
    await enqueue(store, "acme", 5)
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    first = await store.webhooks.form_batch("w1", ep.id, limit=3, build=build, now=2.0)
    assert first is not None
    assert json.loads(first.body) == [3, 4, 5]
    assert first.id == "msg_3"
    again = await store.webhooks.form_batch("w1", ep.id, limit=3, build=build, now=3.0)
    assert again == first  # fixed until a 2xx
    result = Result(first, "advance", 204, 0.01, "")
    assert await store.webhooks.record("w1", result, lease_seconds=30, now=3.0)
    second = await store.webhooks.form_batch("w1", ep.id, limit=3, build=build, now=3.0)
    assert second is not None
    assert json.loads(second.body) == [6, 7]
    assert (await store.webhooks.get(ep.id)).cursor == 5


async def test_unwanted_events_move_the_cursor_without_a_batch(store: Any) -> None:
    ep = await store.webhooks.create(
        NewEndpoint("acme", "https://h.test/", SECRET, event_types=("delivered",)), now=1.0
    )
    await enqueue(store, "acme", 4)
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    assert await store.webhooks.form_batch("w1", ep.id, limit=10, build=build, now=2.0) is None
    assert (await store.webhooks.get(ep.id)).cursor == 4


async def test_one_worker_holds_an_endpoint_until_its_lease_ends(store: Any) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    await enqueue(store, "acme", 2)
    assert [e.id for e in await store.webhooks.claim("w1", 10, lease_seconds=5, now=2.0)] == [ep.id]
    assert await store.webhooks.claim("w2", 10, lease_seconds=5, now=3.0) == []
    assert await store.webhooks.form_batch("w2", ep.id, limit=10, build=build, now=3.0) is None
    batch = await store.webhooks.form_batch("w1", ep.id, limit=10, build=build, now=3.0)
    assert batch is not None
    # w1 dies; after its lease w2 gets the same batch, same id
    assert [e.id for e in await store.webhooks.claim("w2", 10, lease_seconds=5, now=8.0)] == [ep.id]
    assert await store.webhooks.form_batch("w2", ep.id, limit=10, build=build, now=8.0) == batch
    late = Result(batch, "advance", 200, 0.1, "")
    assert not await store.webhooks.record("w1", late, lease_seconds=5, now=8.5)
    assert (await store.webhooks.get(ep.id)).cursor == 0


async def test_retries_count_failures_and_410_disables(store: Any) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    await enqueue(store, "acme", 1)
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    batch = await store.webhooks.form_batch("w1", ep.id, limit=10, build=build, now=2.0)
    retry = Result(batch, "retry", 500, 0.1, "boom", error="HTTP 500", next_attempt_at=60.0)
    assert await store.webhooks.record("w1", retry, lease_seconds=30, now=2.0)
    await store.webhooks.release("w1", ep.id, due=60.0)
    after = await store.webhooks.get(ep.id)
    assert (after.failures, after.failing_since, after.next_attempt_at) == (1, 2.0, 60.0)
    assert await store.webhooks.claim("w1", 10, lease_seconds=30, now=59.0) == []
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=60.0)
    gone = Result(batch, "disable", 410, 0.1, "", disabled_reason="gone: 410")
    assert await store.webhooks.record("w1", gone, lease_seconds=30, now=61.0)
    disabled = await store.webhooks.get(ep.id)
    assert not disabled.enabled
    assert disabled.disabled_reason == "gone: 410"
    assert await store.webhooks.claim("w1", 10, lease_seconds=30, now=999.0) == []
    log = await store.webhooks.deliveries(ep.id)
    assert [(d.outcome, d.status, d.webhook_id) for d in log] == [
        ("disabled", 410, batch.id),
        ("failed", 500, batch.id),
    ]
    revived = await store.webhooks.update(
        ep.id, EndpointPatch(enabled=True), account="acme", now=100.0
    )
    assert revived.enabled
    assert revived.failures == 0
    assert revived.disabled_reason is None


async def test_another_accounts_endpoint_is_not_found(store: Any) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    for call in (
        store.webhooks.get(ep.id, account="other"),
        store.webhooks.delete(ep.id, account="other"),
        store.webhooks.rewind(ep.id, 0, account="other", now=2.0),
        store.webhooks.deliveries(ep.id, account="other"),
    ):
        with pytest.raises(NotFound):
            await call
    assert await store.webhooks.endpoints(account="other") == []
    assert [e.id for e in await store.webhooks.endpoints(account="acme")] == [ep.id]
    await store.webhooks.delete(ep.id, account="acme")
    assert await store.webhooks.endpoints() == []


async def test_rotation_keeps_the_old_secret_signing_until_the_overlap_ends(store: Any) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    new = "whsec_" + "A" * 32
    rotated = await store.webhooks.rotate(ep.id, new, account=None, previous_until=100.0, now=2.0)
    assert rotated.signing_secrets(50.0) == (new, SECRET)
    assert rotated.signing_secrets(100.0) == (new,)


async def test_rewind_drops_the_fixed_batch_and_resends_from_the_cursor(store: Any) -> None:
    await enqueue(store, "acme", 3)
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    await store.webhooks.rewind(ep.id, 1, account="acme", now=2.0)
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    batch = await store.webhooks.form_batch("w1", ep.id, limit=10, build=build, now=2.0)
    assert batch is not None
    assert json.loads(batch.body) == [2, 3]


async def disable(store: Any, ep_id: str, reason: str, *, now: float) -> None:
    """Lease the endpoint, fix its batch and record the end of it."""
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=now)
    batch = await store.webhooks.form_batch("w1", ep_id, limit=10, build=build, now=now)
    assert batch is not None
    ended = Result(batch, "disable", 410, 0.1, "", disabled_reason=reason)
    assert await store.webhooks.record("w1", ended, lease_seconds=30, now=now)
    await store.webhooks.release("w1", ep_id, due=now)


async def test_a_disabled_endpoint_is_an_event_of_its_account(store: Any) -> None:
    dead = await store.webhooks.create(NewEndpoint("acme", "https://a.test/", SECRET), now=1.0)
    alive = await store.webhooks.create(NewEndpoint("acme", "https://b.test/", SECRET), now=1.0)
    only_sends = await store.webhooks.create(
        NewEndpoint("acme", "https://c.test/", SECRET, event_types=("queued",)), now=1.0
    )
    only_it = await store.webhooks.create(
        NewEndpoint("acme", "https://d.test/", SECRET, event_types=("webhook.disabled",)),
        now=1.0,
    )
    theirs = await store.webhooks.create(NewEndpoint("other", "https://e.test/", SECRET), now=1.0)
    await enqueue(store, "acme", 2)
    await enqueue(store, "other", 1)
    await disable(store, dead.id, "gone: the receiver answered 410", now=5.0)

    feed = await store.events(account="acme")
    assert [e.state for e in feed] == [State.QUEUED, State.QUEUED, None]
    event = feed[-1]
    assert event.kind is AccountEventKind.WEBHOOK_DISABLED
    assert (event.send_id, event.distribution_id, event.reason) == (None, None, None)
    assert (event.account, event.at) == ("acme", 5.0)
    assert event.detail == "gone: the receiver answered 410"
    assert event.data == {"endpoint_id": dead.id, "reason": "gone"}
    assert event.reference is None
    assert event.tags == ()
    # the operator's feed has it in its place; another account's has not
    assert [e.seq for e in await store.events()] == [1, 2, 3, event.seq]
    assert event.seq == 4
    assert all(e.kind is None for e in await store.events(account="other"))

    # pushed to the account's endpoints that want it, after the sends' events
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=6.0)
    batch = await store.webhooks.form_batch("w1", alive.id, limit=10, build=build, now=6.0)
    assert batch is not None
    assert json.loads(batch.body) == [1, 2, 4]
    wanted = await store.webhooks.form_batch("w1", only_it.id, limit=10, build=build, now=6.0)
    assert wanted is not None
    assert json.loads(wanted.body) == [4]
    sends = await store.webhooks.form_batch("w1", only_sends.id, limit=10, build=build, now=6.0)
    assert sends is not None
    assert json.loads(sends.body) == [1, 2]
    other = await store.webhooks.form_batch("w1", theirs.id, limit=10, build=build, now=6.0)
    assert other is not None
    assert json.loads(other.body) == [3]


async def test_an_expired_endpoint_says_so_and_retries_or_acks_write_no_event(
    store: Any,
) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    await enqueue(store, "acme", 1)
    await store.webhooks.claim("w1", 10, lease_seconds=30, now=2.0)
    batch = await store.webhooks.form_batch("w1", ep.id, limit=10, build=build, now=2.0)
    retry = Result(batch, "retry", 500, 0.1, "", error="HTTP 500", next_attempt_at=3.0)
    assert await store.webhooks.record("w1", retry, lease_seconds=30, now=2.0)
    assert [e.kind for e in await store.events()] == [None]
    reason = "expired: failing for 259200 s (last: HTTP 500)"
    gone = Result(batch, "disable", 500, 0.1, "", error="HTTP 500", disabled_reason=reason)
    assert await store.webhooks.record("w1", gone, lease_seconds=30, now=4.0)
    [_, event] = await store.events()
    assert event.data == {"endpoint_id": ep.id, "reason": "expired"}
    assert event.detail == reason
    # a disable that is no longer this worker's to record writes nothing
    assert not await store.webhooks.record("w1", gone, lease_seconds=30, now=5.0)
    assert len(await store.events()) == 2


async def test_an_accounts_event_goes_with_retention_like_any_old_event(store: Any) -> None:
    ep = await store.webhooks.create(NewEndpoint("acme", "https://h.test/", SECRET), now=1.0)
    await enqueue(store, "acme", 1)
    await disable(store, ep.id, "gone: 410", now=50.0)
    assert (await store.prune(before=40.0, limit=100)).events == 0
    assert [e.kind for e in await store.events()] == [None, AccountEventKind.WEBHOOK_DISABLED]
    assert (await store.prune(before=60.0, limit=100)).events == 1
    # the queued send is unfinished: it and its event stay
    assert [e.kind for e in await store.events()] == [None]
