"""TLS reporting (RFC 8460) end to end, all on loopback: a day of mail to
a domain with an MTA-STS testing policy whose first MX later publishes DANE
TLSA records, sent by several workers (one app each on one store), some
sessions meeting the policy that applied and some failing it; the next
day's report built from the store, validated against the RFC 8460 §4
schema, POSTed to an https receiver and mailed to a sink whose certificate
nobody trusts (``TLS-Required: No``).

To add a policy source, add a ``Phase`` to ``PHASES`` with its sink
certificate, its DNS records and the sessions each of its messages makes."""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import email
import email.policy
import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailer.app import App
from mailer.delivery.tls.dane import association
from mailer.dev.certs import CertFiles, TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dev.policyhost import PolicyHost, Reply, policy_text
from mailer.enqueue import RecipientInput
from mailer.message.signing import verify_with_resolver
from mailer.reasons import State
from mailer.sink.runner import Sink
from mailer.store.tlsrpt import TLSCount
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.webhook_receiver import Receiver

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "tlsrpt-rfc8460.json").read_text())
DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class Phase:
    """One worker's share of the day: its sink's certificate name, how many
    messages it sends, and the sessions each message makes: (policy type,
    result type; None for a session that met the policy). ``dane``: the
    DNS answers are DNSSEC-secure and mx1 publishes a DANE-EE record of
    ``"published"`` key while its sink shows the ``"published"`` or
    ``"another"`` key; mx2 publishes no TLSA records."""

    worker: str
    cert_name: str
    messages: int
    sessions: tuple[tuple[str, str | None], ...]
    dane: str | None = None


PHASES = (
    # the MX shows a certificate for its own name: each session meets the policy
    Phase("w1", "mx1.dest.test", 3, (("sts", None),)),
    # the MX shows another name's certificate: testing counts the failure,
    # the mail still goes
    Phase("w2", "somebody-else.test", 2, (("sts", "certificate-host-mismatch"),)),
    # mx1's key matches its TLSA record: DANE goes before the testing policy
    Phase("w3", "mx1.dest.test", 3, (("tlsa", None),), dane="published"),
    # mx1 shows a key its record does not name: refused (tlsa-invalid), and
    # the mail goes to mx2, which has no TLSA records and meets the policy
    Phase("w4", "mx1.dest.test", 2, (("tlsa", "tlsa-invalid"), ("sts", None)), dane="another"),
)


@pytest.fixture
def policy_host(certs: TestCerts, dns_server: DNSServer) -> Iterator[PolicyHost]:
    dns_server.update({"mta-sts.dest.test": {"A": ["127.0.0.1"]}})
    with PolicyHost(certs, ["mta-sts.dest.test"]) as host:
        host.serve("dest.test", Reply(policy_text("testing", ["*.dest.test"])))
        dns_server.set("_mta-sts.dest.test", "TXT", ["v=STSv1; id=1;"])
        yield host


@pytest.fixture
def report_receiver(certs: TestCerts, dns_server: DNSServer) -> Iterator[Receiver]:
    dns_server.update({"reports.test": {"A": ["127.0.0.1"]}})
    receiver = Receiver(tls=certs.issue(["reports.test"])).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def untrusted_sink(smtp_port: int, dns_server: DNSServer) -> Iterator[Sink]:
    """The report mailbox's MX, with a certificate from a CA nobody trusts."""
    dns_server.update(
        {
            "reports.test": {"A": ["127.0.0.1"], "MX": [(10, "mx.reports.test")]},
            "mx.reports.test": {"A": ["127.0.0.4"]},
        }
    )
    with TestCerts() as stranger:
        sink = Sink("127.0.0.4", smtp_port, certs=stranger, hostname="mx.reports.test")
        sink.start()
        yield sink
        sink.stop()


async def send_day(app: App, phase: Phase) -> None:
    people = [
        RecipientInput(f"{phase.worker}-{i}@dest.test", "P", {"token": "1"})
        for i in range(phase.messages)
    ]
    result = await app.enqueue(SURVEY, people)
    await run_until_settled(app)
    for send_id in result.send_ids:
        assert (await app.store.send(send_id)).state is State.DELIVERED


def expected_policies(phases: tuple[Phase, ...]) -> dict[str, dict[str, Any]]:
    """policy type → successes, failures and failures by result type."""
    out: dict[str, dict[str, Any]] = {}
    for phase in phases:
        for policy_type, result_type in phase.sessions:
            entry = out.setdefault(policy_type, {"ok": 0, "failed": 0, "by_result": {}})
            if result_type is None:
                entry["ok"] += phase.messages
            else:
                entry["failed"] += phase.messages
                by = entry["by_result"]
                by[result_type] = by.get(result_type, 0) + phase.messages
    return out


def der(files: CertFiles) -> bytes:
    [leaf, *_] = x509.load_pem_x509_certificates(files[0].read_bytes())
    return leaf.public_bytes(Encoding.DER)


async def test_a_day_of_testing_policy_sessions_from_two_workers_is_reported_by_https_and_mail(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    report_receiver: Receiver,
    untrusted_sink: Sink,
    make_sink: Callable[..., Sink],
) -> None:
    dns_server.set(
        "_smtp._tls.dest.test",
        "TXT",
        [
            f"v=TLSRPTv1; rua=https://reports.test:{report_receiver.port}/tlsrpt,"
            "mailto:tlsrpt@reports.test"
        ],
    )
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        # the delivery side would verify reports.test's certificate; the
        # report mail does not, so that a broken TLS set-up gets its report
        tls={"cafile": str(certs.ca_path), "domains": {"reports.test": "verify"}},
        mta_sts={"test_port": policy_host.port, "test_cafile": str(certs.ca_path), "recheck": 0},
        # one message per session: the sessions, and so the counts, are known
        limits={"default": {"connections": 1, "messages_per_connection": 1}},
        tlsrpt={"allow": ["127.0.0.0/8"], "cafile": str(certs.ca_path)},
        # DANE where the answers are secure (the DANE phases)
        dnssec="trust-ad",
    )
    keys = {"published": certs.issue(["mx1.dest.test"]), "another": certs.issue(["mx1.dest.test"])}
    tlsa_name = f"_{smtp_port}._tcp.mx1.dest.test"
    tlsa_record = f"3 1 1 {association(der(keys['published']), 1, 1).hex()}"
    # the workers, one after the other, each with its own app on the store
    for phase in PHASES:
        if phase.dane is not None:
            dns_server.secure()
            dns_server.set(tlsa_name, "TLSA", [tlsa_record])
            sink = make_sink("127.0.0.2", tls_cert=keys[phase.dane])
        else:
            sink = make_sink("127.0.0.2", hostname=phase.cert_name)
        spare = make_sink("127.0.0.3", hostname="mx2.dest.test")
        async with App(config) as app:
            await send_day(app, phase)
        sink.stop()
        spare.stop()
        # a message that made a second session went on to mx2
        to_mx2 = phase.messages if len(phase.sessions) > 1 else 0
        assert len(sink.messages) == phase.messages - to_mx2
        assert len(spare.messages) == to_mx2

    tomorrow = time.time() + DAY
    async with App(config) as app:
        today = await app.store.tlsrpt.claim_reports(
            "early", before_day=time.strftime("%Y-%m-%d", time.gmtime()), limit=10,
            lease_seconds=60, now=time.time(),
        )  # fmt: skip
        assert today == []  # the day is not over yet
        # two workers look at once: one of them sends the report
        reporter = app.tls_reporter(owner="r1", clock=lambda: tomorrow)
        other = app.tls_reporter(owner="r2", clock=lambda: tomorrow)
        assert sorted(await asyncio.gather(reporter.run_once(), other.run_once())) == [0, 1]
        # once per day: the next round finds nothing
        later = app.tls_reporter(owner="r3", clock=lambda: tomorrow + 3600)
        assert await later.run_once() == 0
        [job] = await app.store.tlsrpt.reports(time.strftime("%Y-%m-%d", time.gmtime()))
        resolver = app.resolver
        assert job.state == "sent", job.detail
        assert job.detail is None

        # by https
        [post] = report_receiver.requests
        assert post.path == "/tlsrpt"
        assert post.headers["content-type"] == "application/tlsrpt+gzip"
        report = json.loads(gzip.decompress(post.body))
        validator = jsonschema.Draft202012Validator(
            SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        validator.validate(report)
        expected = expected_policies(PHASES)
        got = {p["policy"]["policy-type"]: p for p in report["policies"]}
        assert set(got) == set(expected)
        for kind, want in expected.items():
            entry = got[kind]
            assert entry["summary"] == {
                "total-successful-session-count": want["ok"],
                "total-failure-session-count": want["failed"],
            }
            by_result: dict[str, int] = {}
            for detail in entry.get("failure-details", []):
                by_result[detail["result-type"]] = (
                    by_result.get(detail["result-type"], 0) + detail["failed-session-count"]
                )
                assert detail["sending-mta-ip"] == "192.0.2.10"
                assert detail["receiving-mx-hostname"] == "mx1.dest.test"
                assert detail["receiving-ip"] == "127.0.0.2"
            assert by_result == want["by_result"]
        sts = got["sts"]["policy"]
        assert sts["policy-domain"] == "dest.test"
        assert sts["mx-host"] == ["*.dest.test"]
        assert "mode: testing" in sts["policy-string"]
        # the TLSA policy: mx1's RRset in presentation format, no mx-host
        tlsa = got["tlsa"]["policy"]
        assert tlsa["policy-domain"] == "dest.test"
        assert tlsa["policy-string"] == [f"{tlsa_name}. IN TLSA {tlsa_record}"]
        assert "mx-host" not in tlsa
        assert report["report-id"] == reporter.report_id(job)

        # by mail, to the MX whose certificate nobody trusts
        [mail] = untrusted_sink.messages
        assert mail.tls_version is not None  # STARTTLS all the same
        assert mail.rcpt_tos == ("tlsrpt@reports.test",)
        message = email.message_from_bytes(mail.data, policy=email.policy.default)
        assert message["TLS-Required"] == "No"
        assert message["TLS-Report-Domain"] == "dest.test"
        assert message["TLS-Report-Submitter"] == "mailer.test"
        assert message.get_content_type() == "multipart/report"
        assert message.get_param("report-type") == "tlsrpt"
        assert f"Report-ID: <{report['report-id']}>" in str(message["Subject"])
        [attachment] = list(message.iter_attachments())
        assert attachment.get_content_type() == "application/tlsrpt+gzip"
        day_start = calendar.timegm(time.strptime(job.day, "%Y-%m-%d"))
        assert attachment.get_filename() == (
            f"mailer.test!dest.test!{day_start}!{day_start + 86399}.json.gz"
        )
        assert json.loads(gzip.decompress(attachment.get_content())) == report
        checks = await verify_with_resolver(mail.data, resolver)
        assert checks
        assert all(check.ok for check in checks), checks
        signed = [c for c in checks if c.domain == "mailer.test"]
        assert signed
        assert b"tls-report-domain" in mail.data.split(b"\r\n\r\n")[0].lower()

        # /metrics: one report sent, by both URIs
        metrics = app.metrics.render().decode()
        assert 'mailer_tls_reports_total{state="sent"} 1.0' in metrics
        assert 'mailer_tls_report_deliveries_total{result="ok",scheme="https"} 1.0' in metrics
        assert 'mailer_tls_report_deliveries_total{result="ok",scheme="mailto"} 1.0' in metrics
        assert 'result="failed"' not in metrics


async def test_a_report_no_uri_takes_is_due_again_later_and_a_domain_without_a_record_gets_none(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink: Callable[..., Sink],
) -> None:
    refusing = Receiver(tls=certs.issue(["reports.test"]), answer=lambda _: (503, {})).start()
    try:
        dns_server.update({"reports.test": {"A": ["127.0.0.1"]}})
        dns_server.set(
            "_smtp._tls.dest.test",
            "TXT",
            [f"v=TLSRPTv1; rua=https://reports.test:{refusing.port}/r"],
        )
        config = make_config(
            tmp_path,
            dns_server,
            smtp_port,
            keys_dir,
            tlsrpt={"allow": ["127.0.0.0/8"], "cafile": str(certs.ca_path), "retry_delay": 100},
        )
        make_sink("127.0.0.2", hostname="mx1.dest.test")
        async with App(config) as app:
            await send_day(app, Phase("w1", "mx1.dest.test", 1, "no-policy-found", None))
            # a domain with counts but no _smtp._tls record
            day = time.strftime("%Y-%m-%d", time.gmtime())
            await app.store.tlsrpt.add_counts([TLSCount(day, "quiet.test", "no-policy-found")])
            now = time.time() + DAY
            reporter = app.tls_reporter(owner="r1", clock=lambda: now)
            assert await reporter.run_once() == 2
            jobs = {j.domain: j for j in await app.store.tlsrpt.reports(day)}
            assert jobs["quiet.test"].state == "no-record"
            assert jobs["dest.test"].state == "due"
            assert "HTTP 503" in (jobs["dest.test"].detail or "")
            assert jobs["dest.test"].next_at == pytest.approx(now + 100)
            assert len(refusing.requests) == 1
            # not before its time; then once more
            assert await reporter.run_once() == 0
            later = app.tls_reporter(owner="r2", clock=lambda: now + 100)
            assert await later.run_once() == 1
            assert len(refusing.requests) == 2
            metrics = app.metrics.render().decode()
            assert 'mailer_tls_reports_total{state="no-record"} 1.0' in metrics
            assert 'mailer_tls_reports_total{state="retry"} 2.0' in metrics
            assert 'mailer_tls_report_deliveries_total{result="failed",scheme="https"} 2.0' in (
                metrics
            )
            assert 'state="sent"' not in metrics
    finally:
        refusing.stop()
