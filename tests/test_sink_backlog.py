"""The dev sink never loses what it answered 250 to, and bounds what waits
to be checked: past ``backlog`` it answers 451. Checking is made slow for
real: each message carries a signature whose key lookup the loopback DNS
server never answers, so each check waits out the DNS timeout."""

from __future__ import annotations

import mailbox
import smtplib
import ssl
from pathlib import Path

from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.sink import DevSink, SinkOptions
from tests.test_sink_checks import GOOD

ACCEPTED = 6


def slow_to_check(index: int) -> bytes:
    # a signature (not a valid one) whose key record is looked up, and the
    # DNS server drops the query
    signature = (
        f"DKIM-Signature: v=1; a=rsa-sha256; d=slow.test; s=sel{index}; c=relaxed/relaxed;"
        " h=from; bh=AAAA; b=AAAA\r\n"
    )
    return signature.encode() + GOOD


def test_a_full_backlog_answers_451_and_stop_stores_every_accepted_message(
    tmp_path: Path, dns_server: DNSServer, certs: TestCerts
) -> None:
    for index in range(ACCEPTED + 3):
        dns_server.drop(f"sel{index}._domainkey.slow.test")
    options = SinkOptions(maildir=tmp_path / "Maildir", backlog=ACCEPTED)
    refused: list[str] = []
    sink = DevSink(
        options,
        nameservers=[dns_server.address],
        dns_timeout=2.0,
        certs=certs,
        on_refusal=lambda refusal: refused.append(refusal.reply[:3]),
    )
    replies: list[int] = []
    with sink, smtplib.SMTP(sink.host, sink.port, timeout=30) as client:
        client.ehlo()
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo()
        for index in range(ACCEPTED + 3):
            client.mail("bounce@mailer.test")
            client.rcpt("anna@dest.test")
            code, _ = client.data(slow_to_check(index))
            replies.append(code)
        # stopping at once: 12 s of checks are still waiting (6 x 2 s)
    assert replies == [250] * ACCEPTED + [451] * 3
    assert len(mailbox.Maildir(tmp_path / "Maildir", create=False)) == ACCEPTED
    assert refused == ["451"] * 3
