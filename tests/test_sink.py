"""The test kit's SMTP sink and PKI (mailer.sink.runner, mailer.dev.certs),
driven by the standard library's smtplib so they are checked independently
of mailer.delivery.smtp."""

from __future__ import annotations

import datetime
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from mailer.dev.certs import TestCerts
from mailer.sink.runner import Sink, pick_port

MESSAGE = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: Hej\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def certs() -> Iterator[TestCerts]:
    with TestCerts() as c:
        yield c


def client_context(certs: TestCerts) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca_path))


def send(
    sink: Sink,
    certs: TestCerts,
    rcpt: str = "b@dest.test",
    *,
    starttls: bool = True,
    server_hostname: str = "mx.sink.test",
) -> None:
    with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test", timeout=10) as client:
        if starttls:
            client.ehlo()
            client._host = server_hostname  # type: ignore[attr-defined]  # SNI/name check
            client.starttls(context=client_context(certs))
        client.sendmail("a@sender.test", [rcpt], MESSAGE)


def test_sink_records_a_starttls_message_with_its_envelope(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        send(sink, certs)
        [received] = sink.wait_for(1)
        assert sink.connections == 1
        assert sink.transactions[0].mail_from == "a@sender.test"
        assert sink.transactions[0].tls
    assert received.mail_from == "a@sender.test"
    assert received.rcpt_tos == ("b@dest.test",)
    assert received.tls_version in {"TLSv1.2", "TLSv1.3"}
    assert received.peer.startswith("127.0.0.1:")
    assert received.data == MESSAGE
    assert received.message["Subject"] == "Hej"
    assert received.message.get_content() == "body\n"


def test_sink_without_starttls_does_not_offer_it_and_records_plaintext(
    certs: TestCerts,
) -> None:
    with Sink(starttls=False) as sink:
        with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test") as client:
            client.ehlo()
            assert not client.has_extn("starttls")
        send(sink, certs, starttls=False)
        [received] = sink.wait_for(1)
        assert sink.transactions[0].tls is False
    assert received.tls_version is None


def test_default_certificate_is_trusted_for_hostname_and_localhost(certs: TestCerts) -> None:
    with Sink(certs=certs, hostname="mx1.dest.test") as sink:
        send(sink, certs, server_hostname="mx1.dest.test")
        send(sink, certs, server_hostname="localhost")
        assert len(sink.wait_for(2)) == 2


def test_sink_makes_its_own_certificates_when_given_none() -> None:
    with Sink() as sink:
        assert sink.certs is not None
        own = sink.certs
        send(sink, own)
        assert len(sink.wait_for(1)) == 1
    assert not own.directory.exists()


def test_sinks_share_one_port_on_different_loopback_addresses(certs: TestCerts) -> None:
    port = pick_port()
    with Sink("127.0.0.2", port, certs=certs) as a, Sink("127.0.0.3", port, certs=certs) as b:
        assert a.port == b.port == port
        send(a, certs, "to-a@dest.test")
        send(b, certs, "to-b@dest.test")
        assert [m.rcpt_tos for m in a.wait_for(1)] == [("to-a@dest.test",)]
        assert [m.rcpt_tos for m in b.wait_for(1)] == [("to-b@dest.test",)]


def test_binding_a_taken_address_fails_at_start(certs: TestCerts) -> None:
    with Sink(certs=certs) as first:
        second = Sink(first.host, first.port, certs=certs)
        with pytest.raises(OSError, match="address already in use"):
            second.start()


def test_scripted_rcpt_reply_applies_to_matching_recipients_only(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        sink.script("gone@*", "550 5.1.1 no such user")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
            send(sink, certs, "gone@dest.test")
        send(sink, certs, "here@dest.test")
        assert [m.rcpt_tos for m in sink.wait_for(1)] == [("here@dest.test",)]
    assert caught.value.recipients["gone@dest.test"] == (550, b"5.1.1 no such user")


def test_scripted_reply_with_times_runs_out(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        sink.script("*", "451 4.7.1 greylisted", times=1)
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(sink, certs)
        send(sink, certs)
        assert len(sink.wait_for(1)) == 1


def test_scripted_data_reply_comes_after_the_message(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        sink.script("B@DEST.TEST", "554 5.7.1 rejected", stage="data")
        with pytest.raises(smtplib.SMTPDataError) as caught:
            send(sink, certs)
        sink.clear_scripts()
        send(sink, certs)
        assert len(sink.wait_for(1)) == 1
    assert caught.value.smtp_code == 554


def test_scripted_421_closes_the_connection(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        sink.script("*", "421 4.7.0 slow down")
        with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test") as client:
            client.starttls(context=ssl._create_unverified_context())
            client.ehlo()
            client.mail("a@sender.test")
            assert client.rcpt("b@dest.test")[0] == 421
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()


def test_drop_after_data_reads_the_message_and_never_answers(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        sink.set_faults(drop_after_data=1)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            send(sink, certs)
        send(sink, certs)
        assert len(sink.wait_for(1)) == 1
        assert [m.data for m in sink.dropped] == [MESSAGE]


@pytest.mark.parametrize(
    ("reply", "stage"), [("no code", "rcpt"), ("250", "mail"), ("999 x", "rcpt")]
)
def test_script_rejects_malformed_reply_or_stage(reply: str, stage: str) -> None:
    sink = Sink(starttls=False)
    with pytest.raises(ValueError, match=r"reply|stage"):
        sink.script("*", reply, stage=stage)


def test_wait_for_raises_timeout_error_when_messages_do_not_come() -> None:
    with Sink(starttls=False) as sink, pytest.raises(TimeoutError):
        sink.wait_for(1, timeout=0.2)


def test_clear_forgets_messages_transactions_and_connections(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink:
        send(sink, certs)
        sink.wait_for(1)
        sink.clear()
        assert (sink.messages, sink.transactions, sink.connections) == ([], [], 0)


async def test_sink_works_as_async_context_manager(certs: TestCerts) -> None:
    async with Sink(certs=certs) as sink:
        send(sink, certs)
        [received] = await sink.await_messages(1)
    assert received.rcpt_tos == ("b@dest.test",)


def test_pick_port_is_free_on_every_loopback_address() -> None:
    port = pick_port()
    sinks = [Sink(f"127.0.0.{i}", port, starttls=False) for i in range(1, 10)]
    try:
        for sink in sinks:
            sink.start()
    finally:
        for sink in sinks:
            sink.stop()


def test_foreground_sink_prints_a_line_per_message_and_stops_on_sigterm(
    certs: TestCerts,
) -> None:
    port = pick_port(["127.0.0.1"])
    command = [
        sys.executable,
        "-m",
        "mailer",
        "sink",
        "--no-checks",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline()
            assert banner.startswith(f"listening on 127.0.0.1:{port} starttls=yes")
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test") as client:
                client.starttls(context=ssl._create_unverified_context())
                client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
            line = proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
    assert "from=<a@sender.test> to=<b@dest.test>" in line
    assert "TLSv1." in line


def test_issued_certificate_chains_to_the_ca_and_names_its_hosts(certs: TestCerts) -> None:
    cert_path, key_path = certs.issue(["mx.dest.test", "127.0.0.2"])
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mx.dest.test"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.2"]
    ca = x509.load_pem_x509_certificate(certs.ca_path.read_bytes())
    assert cert.issuer == ca.subject
    assert key_path.stat().st_mode & 0o077 == 0


def test_expired_certificate_is_from_the_ca_but_past_its_end(certs: TestCerts) -> None:
    cert_path, _ = certs.expired("mx.dest.test")
    cert = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    ca = x509.load_pem_x509_certificate(certs.ca_path.read_bytes())
    assert cert.issuer == ca.subject
    assert cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC)


def test_self_signed_certificate_is_its_own_issuer(certs: TestCerts) -> None:
    cert_path, key_path = certs.self_signed(["mx.dest.test"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.issuer == cert.subject
    TestCerts.server_context((cert_path, key_path))  # the pair loads


def test_closing_test_certs_removes_their_files() -> None:
    with TestCerts() as c:
        cert_path, _ = c.issue("mx.dest.test")
        directory: Path = c.directory
        assert cert_path.exists()
    assert not directory.exists()


_PATHS = [
    "<a@b.test>",
    "<respondent1@d0.bench.test> SIZE=1234 BODY=8BITMIME",
    "  <x.y+tag@sub-domain.example.test>",
    "<first.last@x.test>   ",
    "<a..b@x.test>",
    "<.a@x.test>",
    "<a.@x.test>",
    '<"quoted local"@x.test>',
    "<a@[192.0.2.1]>",
    "<a@-x.test>",
    "<a@x..test>",
    "<a@x.test> (comment) SIZE=1",
    "\t<a@x.test>\t",
    "<>",
    "<a@x.test",
    "a@x.test",
    "<@relay.test:a@x.test>",
    "<ü@x.test>",
    "<a@x..test>",
    "<a@x.test> (comment) SIZE=1",
    "\t<a@x.test>\t",
    f"<{'l' * 70}@x.test>",
]


@pytest.mark.parametrize("path", _PATHS)
def test_sink_splits_mail_and_rcpt_paths_as_aiosmtpd_does(path: str) -> None:
    from aiosmtpd.smtp import SMTP

    from mailer.sink.smtpd import _SinkSMTP

    class _Probe(_SinkSMTP):
        def __init__(self) -> None:  # only the parser is exercised
            self.local_part_limit = 64

    assert _Probe()._getaddr(path) == SMTP._getaddr(_Probe(), path)


@given(
    local=st.from_regex(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,12}", fullmatch=True),
    domain=st.from_regex(r"[A-Za-z0-9.-]{1,12}", fullmatch=True),
    rest=st.sampled_from(["", " SIZE=10", "  BODY=8BITMIME SMTPUTF8", " ", " (c) SIZE=1", "\t"]),
)
def test_sink_path_fast_split_agrees_with_aiosmtpd(local: str, domain: str, rest: str) -> None:
    from aiosmtpd.smtp import SMTP

    from mailer.sink.smtpd import _SinkSMTP

    class _Probe(_SinkSMTP):
        def __init__(self) -> None:
            self.local_part_limit = 0

    path = f"<{local}@{domain}>{rest}"
    assert _Probe()._getaddr(path) == SMTP._getaddr(_Probe(), path)


def test_plaintext_sent_after_starttls_is_not_read_as_a_command(certs: TestCerts) -> None:
    with Sink(certs=certs) as sink, socket.create_connection((sink.host, sink.port), 5) as raw:
        reader = raw.makefile("rb")
        assert reader.readline().startswith(b"220")
        raw.sendall(b"EHLO client.test\r\n")
        while not reader.readline().startswith(b"250 "):
            pass
        # RFC 3207 §4.2: a command smuggled behind STARTTLS must be discarded
        raw.sendall(b"STARTTLS\r\nRSET\r\n")
        assert reader.readline().startswith(b"220")
        context = ssl.create_default_context(cafile=str(certs.ca_path))
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"EHLO client.test\r\n")
            reply = tls.makefile("rb").readline()
    assert reply.startswith(b"250-"), reply
