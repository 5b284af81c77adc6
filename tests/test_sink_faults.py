"""Fault rehearsal: the real engine (App, relay routing to the sink) against
a developer sink started with each fault option of `mailer sink`."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.app import App
from mailer.config import Config
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import Reason, State
from mailer.sink import FAULTS, DevSink, Faults, SinkOptions, parse_reply_rule
from mailer.sink.options import BadCert
from mailer.store.models import SendFilter
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import people

StartSink = Callable[..., DevSink]
FAULT_NAMES = {fault.attr for fault in FAULTS}


@pytest.fixture
def start_sink(dns_server: DNSServer, certs: TestCerts) -> Iterator[StartSink]:
    started: list[DevSink] = []

    def start(**options: Any) -> DevSink:
        # the faults by their names, the rest as SinkOptions
        faults = Faults(**{k: options.pop(k) for k in FAULT_NAMES & options.keys()})
        sink = DevSink(
            SinkOptions(faults=faults, **options), nameservers=[dns_server.address], certs=certs
        )
        started.append(sink.start())
        return sink

    yield start
    for sink in started:
        sink.stop()


@pytest.fixture
def config_for(tmp_path: Path, dns_server: DNSServer, keys_dir: Path) -> Callable[..., Config]:
    def make(sink: DevSink, **overrides: Any) -> Config:
        return make_config(
            tmp_path, dns_server, sink.port, keys_dir, relay=sink.address, **overrides
        )

    return make


async def outcome(app: App) -> dict[str, tuple[State, Reason]]:
    sends = await app.store.list_sends(SendFilter(), limit=1000)
    return {s.recipient.split("@")[0]: (s.state, s.reason) for s in sends}


async def attempt_log(app: App) -> list[tuple[Reason, int | None, str | None]]:
    sends = await app.store.list_sends(SendFilter(), limit=1000)
    log = []
    for send in sends:
        log += [(a.reason, a.code, a.enhanced) for a in await app.store.attempts(send.id)]
    return log


async def test_greylisting_defers_each_first_attempt_then_delivers(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(greylist=True)
    async with App(config_for(sink)) as app:
        result = await app.enqueue(SURVEY, people("anna", "bert"))
        await run_until_settled(app)
        assert await outcome(app) == {
            "anna": (State.DELIVERED, Reason.DELIVERED),
            "bert": (State.DELIVERED, Reason.DELIVERED),
        }
        attempts = await app.store.attempts(result.send_ids[0])
        events = await app.store.events(send_id=result.send_ids[0])
    assert [(a.code, a.enhanced) for a in attempts] == [(451, "4.7.1"), (250, "2.0.0")]
    assert [e.state for e in events] == [
        State.QUEUED,
        State.SENDING,
        State.DEFERRED,
        State.SENDING,
        State.DELIVERED,
    ]
    assert sorted(r.recipients[0] for r in sink.refusals) == ["anna@dest.test", "bert@dest.test"]
    assert {r.cause for r in sink.refusals} == {"greylist"}
    assert len(await sink.await_messages(2)) == 2


async def test_no_starttls_means_nothing_is_sent_and_the_send_expires(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(no_starttls=True)
    async with App(config_for(sink, retry={"max_age": 1.0})) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.FAILED, Reason.EXPIRED)}
        reasons = {reason for reason, _, _ in await attempt_log(app)}
    assert reasons == {Reason.TLS_UNAVAILABLE}
    assert sink.connections >= 2  # tried, and tried again
    assert sink.transactions == []  # never a MAIL FROM in plaintext
    assert sink.messages == []


@pytest.mark.parametrize("bad", list(BadCert))
async def test_verify_policy_refuses_a_bad_certificate(
    start_sink: StartSink, config_for: Callable[..., Config], bad: BadCert
) -> None:
    sink = start_sink(bad_cert=bad)
    tls = {"policy": "verify", "cafile": str(sink.ca_path)}
    async with App(config_for(sink, tls=tls, retry={"max_age": 1.0})) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.FAILED, Reason.EXPIRED)}
        reasons = {reason for reason, _, _ in await attempt_log(app)}
    assert reasons == {Reason.CERTIFICATE}
    assert sink.transactions == []


@pytest.mark.parametrize("bad", [*BadCert, None])
async def test_encrypt_policy_accepts_any_certificate_and_verify_the_good_one(
    start_sink: StartSink, config_for: Callable[..., Config], bad: BadCert | None
) -> None:
    sink = start_sink(bad_cert=bad)
    # The CA of the sink's good certificate is trusted; a bad one is still
    # accepted by `encrypt`, which encrypts without checking.
    tls = {"policy": "encrypt" if bad else "verify", "cafile": str(sink.ca_path)}
    async with App(config_for(sink, tls=tls)) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.DELIVERED, Reason.DELIVERED)}
    [message] = await sink.await_messages(1)
    assert message.tls_version in ("TLSv1.2", "TLSv1.3")


async def test_connection_dropped_after_data_is_retried_and_delivered_once(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(drop_after_data=1)
    async with App(config_for(sink)) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.DELIVERED, Reason.DELIVERED)}
        assert [reason for reason, _, _ in await attempt_log(app)] == [
            Reason.CONNECTION,
            Reason.DELIVERED,
        ]
    assert len(sink.dropped) == 1
    assert len(await sink.await_messages(1)) == 1


async def test_scripted_550_511_bounces_and_suppresses_only_that_recipient(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(replies=(parse_reply_rule("unknown*@*=550 5.1.1 no such user"),))
    async with App(config_for(sink)) as app:
        result = await app.enqueue(SURVEY, people("unknown.anna", "bert"))
        await run_until_settled(app)
        assert await outcome(app) == {
            "unknown.anna": (State.BOUNCED, Reason.MAILBOX_UNKNOWN),
            "bert": (State.DELIVERED, Reason.DELIVERED),
        }
        bounced = await app.store.send(result.send_ids[0])
        [suppressed] = await app.store.suppressions("acme")
    assert (bounced.last_code, bounced.last_enhanced) == (550, "5.1.1")
    assert suppressed.address == "unknown.anna@dest.test"
    assert [m.rcpt_tos for m in await sink.await_messages(1)] == [("bert@dest.test",)]


async def test_data_stage_reply_bounces_after_the_message_was_sent(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(replies=(parse_reply_rule("data:*@dest.test=554 5.7.1 looks like spam"),))
    async with App(config_for(sink)) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        [(state, _)] = (await outcome(app)).values()
        log = await attempt_log(app)
    assert state is State.BOUNCED
    assert [(code, enhanced) for _, code, enhanced in log] == [(554, "5.7.1")]
    assert [r.stage for r in sink.refusals] == ["data"]
    assert sink.messages == []


async def test_temporary_failure_rate_defers_some_attempts_and_all_arrive(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(tempfail_rate=0.5, seed=4)
    names = [f"p{i}" for i in range(8)]
    async with App(config_for(sink)) as app:
        await app.enqueue(SURVEY, people(*names))
        await run_until_settled(app)
        assert {state for state, _ in (await outcome(app)).values()} == {State.DELIVERED}
        deferred = [(c, e) for _, c, e in await attempt_log(app) if c == 451]
    tempfails = [r for r in sink.refusals if r.cause == "tempfail"]
    assert tempfails  # with seed 4, some of the first draws are below 0.5
    assert deferred == [(451, "4.3.0")] * len(tempfails)
    assert len(await sink.await_messages(8)) == 8


def rcpt_codes(sink: DevSink, count: int) -> list[int]:
    with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test") as client:
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo()
        client.mail("a@sender.test")
        return [client.rcpt(f"r{i}@dest.test")[0] for i in range(count)]


def test_same_seed_gives_the_same_temporary_failures(start_sink: StartSink) -> None:
    first = rcpt_codes(start_sink(tempfail_rate=0.3, seed=11), 40)
    second = rcpt_codes(start_sink(tempfail_rate=0.3, seed=11), 40)
    assert first == second
    assert set(first) == {250, 451}


@pytest.mark.parametrize(
    "delay", [{"slow_banner": 1.5}, {"slow_replies": 1.5}], ids=["banner", "replies"]
)
async def test_slow_server_beyond_the_smtp_timeout_defers_then_delivers_when_quick(
    start_sink: StartSink, config_for: Callable[..., Config], delay: dict[str, float]
) -> None:
    sink = start_sink(**delay)
    config = config_for(sink, worker={"smtp_timeout": 0.3})
    async with App(config) as app:
        result = await app.enqueue(SURVEY, people("anna"))
        await (await app.engine()).run(drain=True)
        send = await app.store.send(result.send_ids[0])
        assert (send.state, send.reason) == (State.DEFERRED, Reason.CONNECTION)
        sink.set_faults(slow_banner=0, slow_replies=0)  # the server is quick again
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.DELIVERED, Reason.DELIVERED)}
    assert len(await sink.await_messages(1)) == 1


async def test_slow_server_within_the_smtp_timeout_only_delays(
    start_sink: StartSink, config_for: Callable[..., Config]
) -> None:
    sink = start_sink(slow_banner=0.2, slow_replies=0.05)
    async with App(config_for(sink)) as app:
        await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
        assert await outcome(app) == {"anna": (State.DELIVERED, Reason.DELIVERED)}
        assert [reason for reason, _, _ in await attempt_log(app)] == [Reason.DELIVERED]


def test_cleared_faults_let_every_recipient_through(start_sink: StartSink) -> None:
    sink = start_sink(
        greylist=True,
        tempfail_rate=1.0,
        replies=(parse_reply_rule("*=550 5.1.1 no such user"),),
        slow_replies=0.05,
    )
    assert set(rcpt_codes(sink, 3)) == {550}
    sink.clear_faults()
    assert rcpt_codes(sink, 3) == [250, 250, 250]
    assert [r.cause for r in sink.refusals] == ["script"] * 3
