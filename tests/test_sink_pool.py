"""The dev sink checking in worker processes (`mailer sink
--check-processes N`): the same findings as checking in the sink's own
process, messages stored and listed in arrival order however their checks
interleave, and nothing lost when a checking process dies."""

from __future__ import annotations

import asyncio
import concurrent.futures
import mailbox
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.errors import ValidationError
from mailer.message.keys import KeyStore
from mailer.message.signing import Signer
from mailer.sink import DevSink, SinkOptions
from mailer.sink.examine import CheckSetup, ExaminerPool, Findings
from mailer.sink.record import SinkMessage
from tests.conftest import CUSTOMER_DOMAIN, OUR_DOMAIN
from tests.test_sink_backlog import slow_to_check
from tests.test_sink_checks import GOOD

pytestmark = pytest.mark.integration


@contextmanager
def client(sink: DevSink) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP(sink.host, sink.port, timeout=30) as smtp:
        smtp.ehlo()
        smtp.starttls(context=ssl._create_unverified_context())
        smtp.ehlo()
        yield smtp


def numbered(index: int, data: bytes) -> bytes:
    return f"X-Seq: {index}\r\n".encode() + data


def seq(data: bytes) -> int:
    head = data.split(b"\r\n", 1)[0]
    assert head.startswith(b"X-Seq: "), head
    return int(head[7:])


def samples(keys_dir: Path) -> list[bytes]:
    signer = Signer(KeyStore(keys_dir).load_all(), our_domain=OUR_DOMAIN)
    signed = signer.sign(GOOD, customer_domain=CUSTOMER_DOMAIN)
    return [
        signed,  # two signatures that pass
        signed.replace(b"Hallo Anna", b"Hallo Eve!"),  # altered after signing
        GOOD,  # unsigned
        b"no header at all\r\n",  # not a message
    ]


def test_worker_processes_find_what_the_sinks_own_process_finds(
    dns_server: DNSServer, keys_dir: Path, certs: TestCerts
) -> None:
    found: dict[int, list[SinkMessage]] = {}
    sent = samples(keys_dir)
    for processes in (0, 2):
        options = SinkOptions(check_processes=processes)
        with DevSink(options, nameservers=[dns_server.address], certs=certs) as sink:
            assert len(sink.check_pids) == processes
            with client(sink) as smtp:
                for data in sent:
                    smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], data)
            found[processes] = sink.wait_for(4)

    def findings(messages: list[SinkMessage]) -> list[tuple[object, ...]]:
        return [(m.data, m.dkim, m.checks, m.spf, m.dmarc) for m in messages]

    assert findings(found[2]) == findings(found[0])
    signed, altered, _, broken = found[2]
    assert len(signed.dkim) >= 2
    assert {d.result for d in signed.dkim} == {"pass"}
    assert "fail" in [d.result for d in altered.dkim]
    assert not broken.checks[0].ok


@pytest.mark.parametrize("processes", [0, 2])
def test_messages_checked_side_by_side_are_stored_and_listed_in_arrival_order(
    processes: int, tmp_path: Path, dns_server: DNSServer, certs: TestCerts
) -> None:
    # the first message's key lookup is never answered: its check waits
    # out the DNS timeout while the four after it are checked at once
    dns_server.drop("sel0._domainkey.slow.test")
    options = SinkOptions(maildir=tmp_path / "Maildir", check_processes=processes)
    arrived: list[int] = []
    sink = DevSink(
        options,
        nameservers=[dns_server.address],
        dns_timeout=1.5,
        certs=certs,
        on_message=lambda message: arrived.append(seq(message.data)),
    )
    with sink, client(sink) as smtp:
        smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], numbered(0, slow_to_check(0)))
        for index in range(1, 5):
            smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], numbered(index, GOOD))
        messages = sink.wait_for(5, timeout=20)
        stored = mailbox.Maildir(tmp_path / "Maildir", create=False)
        by_key = {key: stored.get_bytes(key) for key in stored.iterkeys()}
    assert [seq(m.data) for m in messages] == [0, 1, 2, 3, 4]
    assert arrived == [0, 1, 2, 3, 4]
    assert [m.dkim[0].result for m in messages[:1]] == ["temperror"]
    # each message is in the Maildir under the key it is listed with
    assert [int(by_key[m.id].split(b"X-Seq: ", 1)[1].split(b"\n", 1)[0]) for m in messages] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_a_checking_process_that_dies_loses_no_message(
    tmp_path: Path, dns_server: DNSServer, certs: TestCerts
) -> None:
    # the first message is in the worker's hands (waiting for DNS) when it
    # is killed; it and every later one are checked in the sink's process
    dns_server.drop("sel0._domainkey.slow.test")
    options = SinkOptions(maildir=tmp_path / "Maildir", check_processes=1)
    sink = DevSink(options, nameservers=[dns_server.address], dns_timeout=3.0, certs=certs)
    with sink, client(sink) as smtp:
        [pid] = sink.check_pids
        smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], numbered(0, slow_to_check(0)))
        os.kill(pid, signal.SIGKILL)
        for index in range(1, 4):
            smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], numbered(index, GOOD))
        messages = sink.wait_for(4, timeout=30)
        assert sink.check_pids == ()
    assert [seq(m.data) for m in messages] == [0, 1, 2, 3]
    assert all(m.checks for m in messages)
    assert messages[0].dkim[0].result == "temperror"
    assert len(mailbox.Maildir(tmp_path / "Maildir", create=False)) == 4


async def test_a_call_left_unanswered_when_its_process_dies_fails_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the executor can leave a call handed over in the instant a process dies
    # unanswered for good (its own check and the hand-over race); the pool
    # sees the process gone and fails the call, and every later one
    pool = ExaminerPool(CheckSetup(), 1)
    pool.start()
    try:
        unanswered: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with monkeypatch.context() as patched:
            patched.setattr(
                concurrent.futures.ProcessPoolExecutor, "submit", lambda *_a, **_k: unanswered
            )
            [pid] = pool.pids
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(BrokenProcessPool, match="died"):
                await asyncio.wait_for(pool.examine(GOOD, "bounce@mailer.test"), 10)
        assert not unanswered.done()
        with pytest.raises(BrokenProcessPool, match="died"):
            await pool.examine(GOOD, "bounce@mailer.test")
    finally:
        pool.close()


def test_a_failure_handing_a_message_over_checks_it_in_the_sink_itself(
    dns_server: DNSServer, certs: TestCerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: ExaminerPool, data: bytes, mail_from: str) -> Findings:
        raise RuntimeError("lost in the hand-over")

    options = SinkOptions(check_processes=1)
    with DevSink(options, nameservers=[dns_server.address], certs=certs) as sink:
        monkeypatch.setattr(ExaminerPool, "examine", broken)
        with client(sink) as smtp:
            smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], GOOD)
        [message] = sink.wait_for(1)
    # checked all the same: the header checks ran
    assert {check.name for check in message.checks} >= {"date", "message-id"}


def test_stopping_checks_and_stores_what_the_pool_still_holds(
    tmp_path: Path, dns_server: DNSServer, certs: TestCerts
) -> None:
    for index in range(4):
        dns_server.drop(f"sel{index}._domainkey.slow.test")
    options = SinkOptions(maildir=tmp_path / "Maildir", check_processes=2)
    sink = DevSink(options, nameservers=[dns_server.address], dns_timeout=1.0, certs=certs)
    with sink, client(sink) as smtp:
        for index in range(4):
            smtp.sendmail("bounce@mailer.test", ["anna@dest.test"], slow_to_check(index))
        # stopping at once: every message is still being checked
    assert len(sink.messages) == 4
    assert len(mailbox.Maildir(tmp_path / "Maildir", create=False)) == 4


@pytest.mark.parametrize("processes", [-1, 65])
def test_the_number_of_checking_processes_is_bounded(processes: int) -> None:
    with pytest.raises(ValidationError) as caught:
        SinkOptions(check_processes=processes)
    assert caught.value.field == "check-processes"


def test_a_pool_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ExaminerPool(CheckSetup(), 0)


POOL_OWNER = """
import sys, time
from mailer.sink.examine import CheckSetup, ExaminerPool, Findings

if __name__ == "__main__":
    pool = ExaminerPool(CheckSetup(), 1)
    pool.start()
    print(*pool.pids, flush=True)
    time.sleep(60)
"""


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_checking_processes_leave_when_the_sink_is_killed_outright(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(POOL_OWNER)
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        [pid] = map(int, owner.stdout.readline().split())
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and running(pid):
            time.sleep(0.1)
        assert not running(pid), "the checking process outlived its sink"
    finally:
        if owner.poll() is None:
            owner.kill()
        if owner.stdout is not None:
            owner.stdout.close()
