"""The engine end to end: real DNS server, real aiosmtpd sinks over
STARTTLS, real SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mailer.app import App
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.errors import ValidationError
from mailer.reasons import Reason, State
from mailer.store.models import NewDistribution, SendFilter
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import numbered


async def states(app: App) -> dict[str, tuple[State, Reason]]:
    sends = await app.store.list_sends(SendFilter(), limit=10_000)
    return {s.recipient: (s.state, s.reason) for s in sends}


async def test_delivers_to_the_preferred_mx_over_starttls(app, make_sink) -> None:
    mx1, mx2 = make_sink("127.0.0.2"), make_sink("127.0.0.3")
    result = await app.enqueue(SURVEY, numbered(3))
    await run_until_settled(app)
    assert {s for s, _ in (await states(app)).values()} == {State.DELIVERED}
    assert len(mx1.messages) == 3
    assert mx2.messages == []
    assert all(m.tls_version in ("TLSv1.2", "TLSv1.3") for m in mx1.messages)
    attempts = await app.store.attempts(result.send_ids[0])
    assert attempts[-1].mx_host == "mx1.dest.test"
    assert attempts[-1].code == 250
    assert attempts[-1].tls_version in ("TLSv1.2", "TLSv1.3")


async def test_received_message_is_a_complete_survey_invitation(app, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    # its own URL stands in List-Unsubscribe because it takes one-click POSTs
    await app.enqueue(dataclasses.replace(SURVEY, unsubscribe_one_click=True), numbered(1))
    await run_until_settled(app)
    [received] = mx1.messages
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["Subject"] == "Umfrage: Wie zufrieden sind Sie, Jürgen Weiß 0? Grüße aus Köln"
    assert msg["From"].addresses[0].display_name == "Müller & Söhne GmbH"
    assert msg["Message-ID"].endswith("@mailer.test>")
    assert msg["Date"] is not None
    assert msg["List-Unsubscribe"] == "<https://survey.test/unsubscribe/t0>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None
    assert "Jürgen Weiß 0" in text.get_content()
    assert html is not None
    assert "https://survey.test/s/t0" in html.get_content()


async def test_refused_connection_moves_on_to_the_next_mx(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    dns_server.set("mx1.dest.test", "A", ["127.0.0.9"])  # nothing listens there
    mx2 = make_sink("127.0.0.3")
    async with App(make_config(tmp_path, dns_server, smtp_port)) as app:
        await app.enqueue(SURVEY, numbered(2))
        await run_until_settled(app)
        assert {s for s, _ in (await states(app)).values()} == {State.DELIVERED}
    assert len(mx2.messages) == 2


async def test_no_starttls_means_next_mx_and_no_plaintext(app, make_sink) -> None:
    plain = make_sink("127.0.0.2", starttls=False)
    mx2 = make_sink("127.0.0.3")
    await app.enqueue(SURVEY, numbered(2))
    await run_until_settled(app)
    assert {s for s, _ in (await states(app)).values()} == {State.DELIVERED}
    assert len(mx2.messages) == 2
    assert plain.transactions == []
    assert plain.messages == []


async def test_no_mx_with_starttls_defers_with_tls_unavailable(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2", starttls=False)
    mx2 = make_sink("127.0.0.3", starttls=False)
    config = make_config(tmp_path, dns_server, smtp_port, retry={"max_age": 1.0})
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(1))
        await run_until_settled(app)
        send = await app.store.send(result.send_ids[0])
        attempts = await app.store.attempts(send.id)
        events = await app.store.events(send_id=send.id)
    assert send.state is State.FAILED
    assert send.reason is Reason.EXPIRED
    assert {a.reason for a in attempts} == {Reason.TLS_UNAVAILABLE}
    assert Reason.TLS_UNAVAILABLE in {e.reason for e in events if e.state is State.DEFERRED}
    assert mx1.transactions == []
    assert mx2.transactions == []


@pytest.mark.parametrize(
    ("records", "why"),
    [
        ({"MX": [(0, ".")]}, "null MX"),
        (None, "does not exist"),
    ],
    ids=["null-mx", "nxdomain"],
)
async def test_undeliverable_domains_bounce(app, dns_server, records, why) -> None:
    domain = "dest.test"
    if records is None:
        domain = "gone.test"  # not in the zone at all
    else:
        dns_server.set("dest.test", "MX", records["MX"])
    result = await app.enqueue(SURVEY, numbered(1, domain))
    await run_until_settled(app)
    send = await app.store.send(result.send_ids[0])
    assert (send.state, send.reason) == (State.BOUNCED, Reason.DOMAIN_UNKNOWN)
    assert why in (send.last_text or "")


async def test_servfail_defers_then_delivers_once_dns_answers(app, dns_server, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    dns_server.fail("dest.test")
    result = await app.enqueue(SURVEY, numbered(1))
    engine = await app.engine()
    await engine.run(drain=True)
    send = await app.store.send(result.send_ids[0])
    assert (send.state, send.reason) == (State.DEFERRED, Reason.DNS)
    dns_server.heal("dest.test")
    await run_until_settled(app)
    assert (await app.store.send(send.id)).state is State.DELIVERED
    assert len(mx1.messages) == 1


async def test_temporary_reply_is_retried(app, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    mx1.script("person0@*", "451 4.3.0 try again later", times=1)
    result = await app.enqueue(SURVEY, numbered(1))
    await run_until_settled(app)
    send = await app.store.send(result.send_ids[0])
    assert send.state is State.DELIVERED
    attempts = await app.store.attempts(send.id)
    assert [(a.code, a.enhanced) for a in attempts] == [(451, "4.3.0"), (250, None)] or [
        a.code for a in attempts
    ] == [451, 250]
    assert [e.state for e in await app.store.events(send_id=send.id)] == [
        State.QUEUED,
        State.SENDING,
        State.DEFERRED,
        State.SENDING,
        State.DELIVERED,
    ]


async def test_unknown_user_bounces_and_is_suppressed_for_later_sends(app, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    mx1.script("person0@*", "550 5.1.1 no such user")
    first = await app.enqueue(SURVEY, numbered(2))
    await run_until_settled(app)
    bounced = await app.store.send(first.send_ids[0])
    assert (bounced.state, bounced.reason) == (State.BOUNCED, Reason.MAILBOX_UNKNOWN)
    assert (bounced.last_code, bounced.last_enhanced) == (550, "5.1.1")
    assert (await app.store.send(first.send_ids[1])).state is State.DELIVERED
    [entry] = await app.store.suppressions("acme")
    assert entry.address == "person0@dest.test"

    mx1.clear()
    second = await app.enqueue(SURVEY, numbered(1))
    await run_until_settled(app)
    later = await app.store.send(second.send_ids[0])
    assert (later.state, later.reason) == (State.SUPPRESSED, Reason.SUPPRESSED_BOUNCE)
    assert mx1.transactions == []


async def test_connection_dropped_mid_data_is_retried(app, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    mx1.set_faults(drop_after_data=1)
    result = await app.enqueue(SURVEY, numbered(1))
    await run_until_settled(app)
    send = await app.store.send(result.send_ids[0])
    assert send.state is State.DELIVERED
    attempts = await app.store.attempts(send.id)
    assert [a.reason for a in attempts] == [Reason.CONNECTION, Reason.DELIVERED]
    assert len(mx1.messages) == 1


async def test_sends_older_than_max_age_fail_as_expired(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    mx1.script("*", "451 4.7.1 greylisted")
    config = make_config(tmp_path, dns_server, smtp_port, retry={"max_age": 3600})
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(1))
        [send_id] = result.send_ids
        # the first attempt on the real clock: deferred, well within max age
        engine = await app.engine()
        task = asyncio.create_task(engine.run())
        while (await app.store.send(send_id)).state is not State.DEFERRED:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        engine.stop()
        await task
        deferred = await app.store.send(send_id)
        # two hours later the retry is due, but the send is older than
        # max_age: it fails without another attempt
        await run_until_settled(app, clock=lambda: time.time() + 7200)
        send = await app.store.send(send_id)
    assert (deferred.state, deferred.attempts) == (State.DEFERRED, 1)
    assert (send.state, send.reason) == (State.FAILED, Reason.EXPIRED)
    assert send.attempts == 1
    assert len(mx1.refusals) == 1


async def test_many_messages_reuse_connections(app, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    await app.enqueue(SURVEY, numbered(60))
    await run_until_settled(app)
    assert len(mx1.messages) == 60
    # the default limits: at most 10 connections, up to 100 messages each
    assert mx1.connections <= 10


async def test_drain_ends_without_waiting_out_idle_connections(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    """Open connections wait ``idle_timeout`` for more sends; once the queue
    is drained they close at once instead of keeping the worker alive."""
    mx1 = make_sink("127.0.0.2")
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir, worker={"idle_timeout": 3600})
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(3))
        engine = await app.engine()
        # a guard against a hang, far below the idle timeout
        await asyncio.wait_for(engine.run(drain=True), 60)
        assert {s for s, _ in (await states(app)).values()} == {State.DELIVERED}
    assert len(mx1.messages) == 3


class _Latin1Refusal:
    """A receiver answering RCPT in Latin-1, as old servers do."""

    async def handle_RCPT(self, server, session, envelope, address, options) -> bytes:
        return "550 5.1.1 Empfänger unbekannt".encode("latin-1")


async def test_a_reply_that_is_not_utf8_is_recorded_readably(
    app: App, smtp_port: int, certs: TestCerts
) -> None:
    tls = TestCerts.server_context(certs.issue(["mx1.dest.test", "127.0.0.2"]))
    server = Controller(_Latin1Refusal(), hostname="127.0.0.2", port=smtp_port, tls_context=tls)
    server.start()
    try:
        result = await app.enqueue(SURVEY, numbered(1))
        await run_until_settled(app)
    finally:
        server.stop()
    send = await app.store.send(result.send_ids[0])
    assert (send.state, send.reason) == (State.BOUNCED, Reason.MAILBOX_UNKNOWN)
    assert send.last_text == "Empf\ufffdnger unbekannt"
    [attempt] = await app.store.attempts(send.id)
    assert attempt.text == "Empf\ufffdnger unbekannt"


async def test_header_injection_is_refused_naming_the_field(app) -> None:
    bad = NewDistribution(**{**SURVEY.__dict__, "sender_name": "Evil\r\nBcc: x@y.test"})
    with pytest.raises(ValidationError) as err:
        await app.enqueue(bad, numbered(1))
    assert err.value.field == "sender.name"
    assert await app.store.counts() == {}


async def test_undefined_template_variable_is_refused_at_enqueue(app) -> None:
    bad = NewDistribution(**{**SURVEY.__dict__, "html": "<p>{{ first_name }}</p>"})
    with pytest.raises(ValidationError) as err:
        await app.enqueue(bad, numbered(1))
    assert err.value.field == "html"
    assert "first_name" in err.value.reason
    assert await app.store.counts() == {}


async def test_invalid_recipient_is_rejected_by_index_the_rest_stored(app) -> None:
    recipients = [*numbered(2), RecipientInput("not an address", "x", {"token": "t"})]
    result = await app.enqueue(SURVEY, recipients)
    assert len(result.send_ids) == 2
    [rejected] = result.rejected
    assert rejected.index == 2
    assert rejected.field == "recipients[2].email"


async def test_crlf_in_a_variable_used_in_the_subject_rejects_that_recipient(app) -> None:
    recipients = [*numbered(1), RecipientInput("x@dest.test", "X", {"token": "a\r\nBcc: y@z.test"})]
    bad = NewDistribution(**{**SURVEY.__dict__, "subject": "Code {{ token }}"})
    result = await app.enqueue(bad, recipients)
    [rejected] = result.rejected
    assert (rejected.index, rejected.field) == (1, "recipients[1].variables.token")
    assert len(result.send_ids) == 1


async def test_conditionally_used_variable_missing_for_one_recipient_is_refused(app) -> None:
    html = "<p>{% if vip %}{{ vip_code }}{% endif %}{{ token }}</p>"
    dist = NewDistribution(**{**SURVEY.__dict__, "html": html})
    recipients = [
        RecipientInput("a@dest.test", "A", {"token": "1", "vip": ""}),
        RecipientInput("b@dest.test", "B", {"token": "2", "vip": "yes"}),
    ]
    with pytest.raises(ValidationError) as err:
        await app.enqueue(dist, recipients)
    assert "vip_code" in err.value.reason
    assert "recipients[1]" in err.value.reason
    assert await app.store.counts() == {}


async def test_leases_of_waiting_sends_are_renewed(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    # 8 messages at 4/s take 2 s; the lease is 0.6 s
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        limits={"default": {"rate": 4}},
        worker={"lease_seconds": 0.6},
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(8))
        first, second = await app.engine(owner="w1"), await app.engine(owner="w2")
        runs = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        await run_until_settled(app)
        first.stop()
        second.stop()
        await asyncio.gather(*runs)
        claims = [e for e in await app.store.events(limit=1000) if e.state is State.SENDING]
    ids = [m.message["Message-ID"] for m in mx1.messages]
    assert len(ids) == len(set(ids)) == 8
    assert len(claims) == 8
