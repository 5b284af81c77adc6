"""After the 250, end to end on loopback: the engine delivers into the sink,
the sink sends a DSN or an ARF report back to the inbound listener over
STARTTLS, and the listener's processor acts on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.app import App
from mailer.delivery.smtp import open_session
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.feedback.listener import InboundListener
from mailer.feedback.processor import Processor
from mailer.feedback.rehearsal import build_dsn
from mailer.feedback.samples import SAMPLES
from mailer.feedback.service import matcher_for
from mailer.message.verp import make_return_path
from mailer.reasons import Reason, State
from mailer.sink import DevSink, Faults, SinkOptions
from mailer.sink.runner import pick_port
from mailer.store.models import NewDistribution

SECRET = "e2e-secret-0123456789"
BOUNCES = "bounces.platform.test"
FIXTURES = SAMPLES

DIST = NewDistribution(
    account="acct-1",
    # no SPF record: the neutral sender and our envelope, so a return path
    sender_address="umfrage@nospf.test",
    sender_name="Kunde",
    subject="Ihre Meinung",
    html="<p>Hallo {{ name }}</p>",
    text=None,
)


@pytest.fixture
def inbound_port() -> int:
    return pick_port(["127.0.0.1"])


@pytest.fixture
def mailer_sink(
    tmp_path: Path,
    mailer_dns: DNSServer,
    mailer_keys_dir: Path,
    mailer_certs: TestCerts,
    inbound_port: int,
) -> Iterator[DevSink]:
    """The plugin's sink, with every accepted message coming back as a DSN
    to the inbound listener (tests switch to complaints by changing the
    rehearsal's rates)."""
    options = SinkOptions(
        host="127.0.0.1",
        hostname="mx.inbox.test",
        maildir=tmp_path / "sink" / "Maildir",
        bounce_after=1.0,
        feedback_to=("127.0.0.1", inbound_port),
        faults=Faults(seed=1),
    )
    with DevSink(
        options,
        nameservers=[mailer_dns.address],
        keys_dir=mailer_keys_dir,
        dns_timeout=2.0,
        certs=mailer_certs,
    ) as sink:
        yield sink


@pytest.fixture
def mailer_config_overrides() -> dict[str, Any]:
    return {"feedback": {"secret": SECRET, "bounce_domain": BOUNCES}}


@pytest.fixture
async def inbound(
    mailer_app: App, mailer_certs: TestCerts, inbound_port: int
) -> AsyncIterator[tuple[InboundListener, Processor]]:
    processor = Processor(mailer_app.store, matcher_for(mailer_app.config))
    listener = InboundListener(
        mailer_app.store,
        host="127.0.0.1",
        port=inbound_port,
        accept_domains=frozenset({BOUNCES}),
        tls=TestCerts.server_context(mailer_certs.issue(["127.0.0.1"])),
        on_stored=processor.wake,
    )
    await listener.start()
    task = asyncio.create_task(processor.run())
    try:
        yield listener, processor
    finally:
        await listener.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def processed(app: App, count: int, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = [m for m in await app.store.inbound_list() if m.processed_at is not None]
        if len(done) >= count:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{len(done)} of {count} returned messages processed")
        await asyncio.sleep(0.05)


async def send_to_listener(port: int, rcpt: str, data: bytes) -> None:
    session = await open_session("127.0.0.1", "127.0.0.1", port, helo="mx.remote.test")
    async with session:
        assert session.tls.version is not None  # over STARTTLS
        await session.send("", rcpt, data)


async def test_a_late_dsn_bounces_the_delivered_send_and_suppresses_the_address(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    enqueued = await mailer_app.enqueue(DIST, [RecipientInput("gone@inbox.test", "Gone")])
    [send_id] = enqueued.send_ids
    await mailer_deliver()
    [message] = mailer_sink.messages
    # the envelope is ours: a return path naming the send, with its MAC
    assert message.mail_from == make_return_path(send_id, secret=SECRET, domain=BOUNCES)
    assert message.message["Feedback-ID"] == f"{enqueued.distribution_id}:acct-1:survey:mailer"
    assert "feedback-id" in message.message["DKIM-Signature"].lower()
    assert message.dkim_pass
    await processed(mailer_app, 1)
    [returned] = await mailer_app.store.inbound_list()
    assert (returned.kind, returned.matched_by, returned.send_id) == ("bounce", "verp", send_id)
    assert returned.tls
    send = await mailer_app.store.send(send_id)
    assert (send.state, send.reason, send.last_enhanced) == (
        State.BOUNCED,
        Reason.MAILBOX_UNKNOWN,
        "5.1.1",
    )
    states = [(e.state, e.reason) for e in await mailer_app.store.events(send_id=send_id)]
    assert states[-2:] == [
        (State.DELIVERED, Reason.DELIVERED),
        (State.BOUNCED, Reason.MAILBOX_UNKNOWN),
    ]
    last = (await mailer_app.store.events(send_id=send_id))[-1]
    assert last.detail is not None
    assert last.detail.startswith("later, by DSN from mx.inbox.test")
    [entry] = await mailer_app.store.suppression_for("acct-1", "gone@inbox.test")
    assert entry.reason is Reason.SUPPRESSED_BOUNCE
    # the next send to the address ends suppressed
    mailer_sink.rehearsal.bounce_rate = 0.0
    again = await mailer_app.enqueue(DIST, [RecipientInput("gone@inbox.test", "Gone")])
    await mailer_deliver()
    later = await mailer_app.store.send(again.send_ids[0])
    assert (later.state, later.reason) == (State.SUPPRESSED, Reason.SUPPRESSED_BOUNCE)


async def test_a_complaint_suppresses_for_the_account_and_leaves_the_send_delivered(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    rehearsal = mailer_sink.rehearsal
    rehearsal.bounce_rate, rehearsal.complain_rate = 0.0, 1.0
    enqueued = await mailer_app.enqueue(DIST, [RecipientInput("angry@inbox.test", "Angry")])
    [send_id] = enqueued.send_ids
    await mailer_deliver()
    await processed(mailer_app, 1)
    [returned] = await mailer_app.store.inbound_list()
    # a feedback loop writes to its own address, not to the return path
    assert returned.recipients == (f"fbl@{BOUNCES}",)
    assert (returned.kind, returned.matched_by) == ("complaint", "message-id")
    send = await mailer_app.store.send(send_id)
    assert send.state is State.DELIVERED
    last = (await mailer_app.store.events(send_id=send_id))[-1]
    assert (last.state, last.reason) == (State.DELIVERED, Reason.COMPLAINED)
    [entry] = await mailer_app.store.suppression_for("acct-1", "angry@inbox.test")
    assert entry.reason is Reason.SUPPRESSED_COMPLAINT
    assert await mailer_app.store.suppression_for("other-account", "angry@inbox.test") == []


async def test_an_auto_reply_is_an_event_and_changes_no_state(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    mailer_sink.rehearsal.bounce_rate = 0.0
    enqueued = await mailer_app.enqueue(DIST, [RecipientInput("away@inbox.test", "Away")])
    [send_id] = enqueued.send_ids
    await mailer_deliver()
    listener, _ = inbound
    return_path = make_return_path(send_id, secret=SECRET, domain=BOUNCES)
    await send_to_listener(listener.port, return_path, (FIXTURES / "autoreply-de.eml").read_bytes())
    await processed(mailer_app, 1)
    send = await mailer_app.store.send(send_id)
    assert send.state is State.DELIVERED
    last = (await mailer_app.store.events(send_id=send_id))[-1]
    assert (last.state, last.reason) == (State.DELIVERED, Reason.AUTO_REPLY)
    assert await mailer_app.store.suppressions("acct-1") == []


async def test_a_forged_token_changes_nothing_and_is_listed_unmatched(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    mailer_sink.rehearsal.bounce_rate = 0.0
    enqueued = await mailer_app.enqueue(DIST, [RecipientInput("victim@inbox.test", "V")])
    [send_id] = enqueued.send_ids
    await mailer_deliver()
    [message] = mailer_sink.messages
    listener, _ = inbound
    forged = make_return_path(send_id, secret="not-our-secret-at-all", domain=BOUNCES)
    dsn = build_dsn(
        message.data, return_path=forged, recipient="victim@inbox.test", reporting_mta="evil.test"
    )
    await send_to_listener(listener.port, forged, dsn)
    await processed(mailer_app, 1)
    [unmatched] = await mailer_app.store.inbound_list(unmatched=True)
    assert unmatched.send_id is None
    assert "not ours" in (unmatched.problem or "")
    send = await mailer_app.store.send(send_id)
    assert send.state is State.DELIVERED
    assert await mailer_app.store.suppressions("acct-1") == []


def headers_only_arf(original: bytes, *, recipient: str, feedback_id: str | None = None) -> bytes:
    """A complaint as some feedback loops send it: the original's headers
    alone (``text/rfc822-headers``) and its Message-ID rewritten by the
    provider, so only the Feedback-ID and the recipient name the send.
    ``feedback_id`` replaces the original's (a forgery)."""
    head = original.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    kept: list[str] = []
    for line in head.split("\n"):
        name = line.split(":", 1)[0].lower()
        if line[:1] in (" ", "\t"):
            if kept:
                kept[-1] += "\n" + line
            continue
        if name == "message-id":
            line = "Message-ID: <rewritten.4711@provider.test>"
        elif name == "feedback-id" and feedback_id is not None:
            line = f"Feedback-ID: {feedback_id}"
        kept.append(line)
    return (
        "From: <fbl@provider.test>\n"
        "To: <fbl@bounces.platform.test>\n"
        "Subject: complaint\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b1"\n'
        "\n--b1\nContent-Type: text/plain\n\nA complaint.\n"
        "\n--b1\nContent-Type: message/feedback-report\n\n"
        f"Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: <{recipient}>\n"
        "\n--b1\nContent-Type: text/rfc822-headers\n\n" + "\n".join(kept) + "\n\n--b1--\n"
    ).encode()


async def test_a_complaint_with_only_the_headers_matches_by_its_feedback_id(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    mailer_sink.rehearsal.bounce_rate = 0.0
    enqueued = await mailer_app.enqueue(
        DIST, [RecipientInput("angry@inbox.test", "A"), RecipientInput("calm@inbox.test", "C")]
    )
    await mailer_deliver()
    message = next(m for m in mailer_sink.messages if "angry@" in m.message["To"])
    sends = [await mailer_app.store.send(s) for s in enqueued.send_ids]
    [send_id] = [s.id for s in sends if s.recipient == "angry@inbox.test"]
    listener, _ = inbound
    arf = headers_only_arf(message.data, recipient="Angry@inbox.test")
    await send_to_listener(listener.port, f"fbl@{BOUNCES}", arf)
    await processed(mailer_app, 1)
    [returned] = await mailer_app.store.inbound_list()
    assert (returned.kind, returned.matched_by, returned.send_id) == (
        "complaint",
        "feedback-id",
        send_id,
    )
    last = (await mailer_app.store.events(send_id=send_id))[-1]
    assert (last.state, last.reason) == (State.DELIVERED, Reason.COMPLAINED)
    [entry] = await mailer_app.store.suppression_for("acct-1", "angry@inbox.test")
    assert entry.reason is Reason.SUPPRESSED_COMPLAINT
    assert await mailer_app.store.suppression_for("acct-1", "calm@inbox.test") == []


async def test_a_forged_feedback_id_naming_no_send_stays_unmatched(
    mailer_app: App, mailer_deliver: Any, mailer_sink: DevSink, inbound: Any
) -> None:
    mailer_sink.rehearsal.bounce_rate = 0.0
    enqueued = await mailer_app.enqueue(DIST, [RecipientInput("victim@inbox.test", "V")])
    await mailer_deliver()
    [message] = mailer_sink.messages
    listener, _ = inbound
    dist = enqueued.distribution_id
    forgeries = [
        "0123456789abcdef0123456789ab:acct-1:survey:mailer",  # no such distribution
        f"{dist}:acct-2:survey:mailer",  # another account
        f"{dist}:acct-1:survey:someone-else",  # not our sender id
    ]
    for forged in forgeries:
        arf = headers_only_arf(message.data, recipient="victim@inbox.test", feedback_id=forged)
        await send_to_listener(listener.port, f"fbl@{BOUNCES}", arf)
    # and the real Feedback-ID about an address the distribution never sent to
    arf = headers_only_arf(message.data, recipient="stranger@inbox.test")
    await send_to_listener(listener.port, f"fbl@{BOUNCES}", arf)
    await processed(mailer_app, 4)
    unmatched = await mailer_app.store.inbound_list(unmatched=True)
    assert len(unmatched) == 4
    assert {(m.kind, m.send_id, m.matched_by) for m in unmatched} == {("complaint", None, None)}
    assert await mailer_app.store.suppressions("acct-1") == []
    assert await mailer_app.store.suppressions("acct-2") == []
    send = await mailer_app.store.send(enqueued.send_ids[0])
    assert send.state is State.DELIVERED
    assert [e.reason for e in await mailer_app.store.events(send_id=send.id)][-1] is (
        Reason.DELIVERED
    )
