"""What lets the developer sink keep up with the engine: the Maildir
written a batch at a time, key records and DMARC policies kept for the
run, header values parsed once per sink, the checker on a server thread;
and the sink that only records (`mailer sink --no-checks`)."""

from __future__ import annotations

import asyncio
import email.policy
import mailbox
import smtplib
import ssl
import threading
from email import message_from_bytes
from pathlib import Path

import pytest

from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import DNSTemporaryError, ValidationError
from mailer.loop import ServerThread
from mailer.sink import DevSink, Faults, SinkOptions, parse_reply_rule
from mailer.sink.checks import HeaderCache, parse_message, run_checks
from mailer.sink.maildir import MaildirStore
from mailer.sink.options import ReplyRule
from mailer.sink.report import format_received
from mailer.sink.verify import TxtRecords
from tests.test_sink_checks import ALTERNATIVE, GOOD

# -- the Maildir, a batch at a time ----------------------------------------------


def test_a_batch_lands_in_new_in_order_under_its_trace_and_tmp_is_left_empty(
    tmp_path: Path,
) -> None:
    store = MaildirStore(tmp_path / "Maildir")
    try:
        batch = [(f"X-Seq: {i}\n".encode(), GOOD) for i in range(20)]
        keys = store.add_many(batch)
        [single] = store.add_many([(b"X-Seq: last\n", ALTERNATIVE)])
    finally:
        store.close()
    assert len(set(keys)) == 20
    assert list((tmp_path / "Maildir" / "tmp").iterdir()) == []
    box = mailbox.Maildir(tmp_path / "Maildir", create=False)
    assert sorted(box.keys()) == sorted([*keys, single])
    for i, key in enumerate(keys):
        stored = box.get_bytes(key)
        assert stored.startswith(f"X-Seq: {i}\n".encode())
        assert b"\r\n" not in stored  # Maildir tools expect \n line ends
        assert stored.endswith(GOOD.replace(b"\r\n", b"\n"))
    assert box.get_bytes(single).startswith(b"X-Seq: last\n")


def test_a_batch_that_cannot_be_written_leaves_nothing_in_new(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path / "Maildir")
    try:
        # tmp/ is gone: not one file can be written
        (tmp_path / "Maildir" / "tmp").rmdir()
        with pytest.raises(FileNotFoundError):
            store.add_many([(b"", GOOD), (b"", GOOD)])
    finally:
        store.close()
    assert list((tmp_path / "Maildir" / "new").iterdir()) == []


def test_a_sink_with_a_maildir_lists_and_stores_messages_in_arrival_order(
    tmp_path: Path,
) -> None:
    options = SinkOptions(maildir=tmp_path / "Maildir")
    with DevSink(options, nameservers=None) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.starttls(context=ssl._create_unverified_context())
            for i in range(30):
                client.sendmail("bounce@mailer.test", [f"r{i}@dest.test"], GOOD)
        messages = sink.wait_for(30)
        sink.wait_idle()
    assert [m.rcpt_tos for m in messages] == [(f"r{i}@dest.test",) for i in range(30)]
    box = mailbox.Maildir(tmp_path / "Maildir", create=False)
    for message in messages:
        assert f"Delivered-To: {message.rcpt_tos[0]}".encode() in box.get_bytes(message.id)


# -- DNS answers kept for the run ----------------------------------------------


async def test_txt_records_are_kept_within_their_ttl_and_asked_again_after(
    dns_server: DNSServer,
) -> None:
    name = "_dmarc.kept.test"
    dns_server.set(name, "TXT", ["v=DMARC1; p=none"], ttl=60)
    now = [0.0]
    resolver = Resolver([dns_server.address], timeout=1)
    records = TxtRecords(resolver, clock=lambda: now[0])

    def asked() -> int:
        return sum(1 for qname, _ in dns_server.queries if qname == name)

    first = await records.txt(name)
    dns_server.set(name, "TXT", ["v=DMARC1; p=reject"], ttl=60)
    resolver.clear_cache()
    again = await records.txt(name.upper() + ".")
    assert asked() == 1
    assert first.records == again.records == ("v=DMARC1; p=none",)
    now[0] = 61.0
    later = await records.txt(name)
    assert asked() == 2
    assert later.records == ("v=DMARC1; p=reject",)


async def test_a_failed_txt_lookup_is_not_kept(dns_server: DNSServer) -> None:
    name = "_dmarc.flaky.test"
    dns_server.fail(name)
    records = TxtRecords(Resolver([dns_server.address], timeout=1))
    with pytest.raises(DNSTemporaryError):
        await records.txt(name)
    dns_server.heal(name)
    dns_server.set(name, "TXT", ["v=DMARC1; p=none"])
    assert (await records.txt(name)).records == ("v=DMARC1; p=none",)


# -- header values parsed once per sink -------------------------------------------


def test_a_shared_header_cache_gives_the_same_checks_as_a_fresh_parse() -> None:
    cache = HeaderCache()
    for data in (GOOD, ALTERNATIVE, GOOD, ALTERNATIVE):
        assert run_checks(parse_message(data, cache)) == run_checks(parse_message(data))
        plain = message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)
        cached = parse_message(data, cache)
        assert [(k, str(v)) for k, v in cached.items()] == [(k, str(v)) for k, v in plain.items()]


def test_a_header_value_is_parsed_once_and_the_cache_stays_bounded() -> None:
    cache = HeaderCache(size=3)
    calls: list[str] = []

    def parse(name: str, value: str) -> str:
        calls.append(value)
        return value.upper()

    assert cache.get("Subject", "a", parse) == "A"
    assert cache.get("Subject", "a", parse) == "A"
    assert calls == ["a"]
    for value in ("b", "c", "d"):  # the fourth value empties it
        cache.get("Subject", value, parse)
    cache.get("Subject", "a", parse)
    assert calls == ["a", "b", "c", "d", "a"]


# -- the checker's thread ----------------------------------------------------------


def test_a_server_thread_runs_what_it_is_handed_on_its_own_loop() -> None:
    async def nothing() -> None:
        pass

    thread = ServerThread("handed", nothing, nothing)
    with pytest.raises(RuntimeError, match="not running"):
        thread.submit(asyncio.sleep(0))
    thread.start()
    try:

        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert thread.submit(where()).result(timeout=5) == "handed"
    finally:
        thread.stop()


def test_the_devsink_checks_on_its_server_thread() -> None:
    threads: list[threading.Thread] = []
    with DevSink(
        nameservers=None, on_message=lambda m: threads.append(threading.current_thread())
    ) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail("bounce@mailer.test", ["anna@dest.test"], GOOD)
        sink.wait_for(1)
    assert [thread.name for thread in threads] == ["sink-checks"]
    # this sink's own thread: another test's sink may still be stopping
    assert not threads[0].is_alive()


# -- a sink that only records --------------------------------------------------------


def test_a_sink_without_checks_records_each_message_unchecked() -> None:
    lines: list[str] = []
    options = SinkOptions(check=False, faults=Faults(no_pipelining=True))
    with DevSink(
        options, nameservers=None, on_message=lambda m: lines.append(format_received(m))
    ) as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.ehlo()
            assert not client.has_extn("pipelining")
            client.starttls(context=ssl._create_unverified_context())
            client.sendmail("a@sender.test", ["b@dest.test", "c@dest.test"], GOOD)
        [message] = sink.wait_for(1)
        sink.wait_idle()
    assert message.id
    assert message.dkim == ()
    assert message.checks == ()
    assert message.subject == "Ihre Meinung zählt"
    [line] = lines
    assert "from=<a@sender.test> to=<b@dest.test,c@dest.test>" in line
    assert f"bytes={len(GOOD)}" in line


@pytest.mark.parametrize(
    "kw",
    [
        {"maildir": Path("Maildir")},
        {"bounce_after": 0.5, "feedback_to": ("127.0.0.1", 2526)},
    ],
)
def test_a_sink_without_checks_refuses_what_needs_them(kw: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as caught:
        SinkOptions(check=False, **kw)  # type: ignore[arg-type]
    assert caught.value.field == "no-checks"


def test_reply_rules_name_every_stage_a_script_answers_at() -> None:
    assert parse_reply_rule("data-command:*@dest.test=451 4.3.0 later") == ReplyRule(
        "*@dest.test", "451 4.3.0 later", "data-command"
    )
