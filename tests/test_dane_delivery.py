"""DANE through the engine, all on loopback: the test DNS server stands in
for a validating resolver (AD bit), TLSA records at ``_25._tcp.<mx>``,
aiosmtpd sinks over STARTTLS with certificates the records match or not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.cli import cli
from mailer.config import Config, TLSPolicy
from mailer.delivery.connector import Connector
from mailer.delivery.tls.dane import PEER_CHAIN, association
from mailer.dev.certs import CertFiles, TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dev.policyhost import PolicyHost, Reply, policy_text
from mailer.dns import Resolver
from mailer.enqueue import RecipientInput
from mailer.errors import ConfigError
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Send
from tests.conftest import SURVEY, make_config, run_until_settled


# TLSA records live under the port connected to: 25 in production, the
# sinks' port here
def tlsa1(port: int) -> str:
    return f"_{port}._tcp.mx1.dest.test"


def tlsa2(port: int) -> str:
    return f"_{port}._tcp.mx2.dest.test"


def der(files: CertFiles, index: int = 0) -> bytes:
    chain = x509.load_pem_x509_certificates(files[0].read_bytes())
    return chain[index].public_bytes(Encoding.DER)


def record(usage: int, selector: int, mtype: int, certificate: bytes) -> str:
    return f"{usage} {selector} {mtype} {association(certificate, selector, mtype).hex()}"


def dane_config(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, **overrides: Any
) -> Config:
    return make_config(tmp_path, dns_server, smtp_port, keys_dir, dnssec="trust-ad", **overrides)


async def deliver_one(app: App, name: str = "p0") -> tuple[Send, list[Attempt]]:
    result = await app.enqueue(SURVEY, [RecipientInput(f"{name}@dest.test", "P", {"token": "1"})])
    await run_until_settled(app)
    send = await app.store.send(result.send_ids[0])
    return send, await app.store.attempts(send.id)


async def test_tlsa_3_1_1_match_delivers_under_dane(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    # a self-signed certificate for another name: DANE-EE needs neither
    files = certs.self_signed(["somebody-else.test"])
    mx1 = make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(3, 1, 1, der(files))])
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir, tls={"policy": "verify"})
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
        metrics = app.metrics.render().decode()
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "dane"
    assert len(mx1.messages) == 1
    assert 'mailer_tls_policy_attempts_total{policy="dane",reason="delivered"} 1.0' in metrics
    # the TLSA question was asked with the host's name
    assert (tlsa1(smtp_port), "TLSA") in dns_server.queries


async def test_tlsa_mismatch_defers_dane_before_mail_from(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    presented = certs.issue(["mx1.dest.test"])
    published = certs.issue(["mx1.dest.test"])  # same name and CA, another key
    mx1 = make_sink("127.0.0.2", tls_cert=presented)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(3, 1, 1, der(published))])
    dns_server.remove("dest.test", "MX")
    dns_server.set("dest.test", "MX", [(10, "mx1.dest.test")])
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir, retry={"max_age": 0.5})
    async with App(config) as app:
        send, attempts = await deliver_one(app)
        metrics = app.metrics.render().decode()
    assert send.state is State.FAILED  # expired after its deferrals
    assert attempts
    assert {a.reason for a in attempts} == {Reason.DANE}
    assert {a.tls_policy for a in attempts} == {"dane"}
    assert f"matches none of the TLSA records at {tlsa1(smtp_port)} (3 1 1)" in (
        attempts[0].text or ""
    )
    # the certificate was valid for the MX name: only DANE refused it
    assert mx1.transactions == []
    assert 'mailer_tls_failures_total{destination="other",reason="dane"}' in metrics


async def test_a_failing_host_is_skipped_for_the_next_mx(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    wrong = certs.issue(["mx1.dest.test"])
    right = certs.issue(["mx2.dest.test"])
    mx1 = make_sink("127.0.0.2", tls_cert=wrong)
    mx2 = make_sink("127.0.0.3", tls_cert=right)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(3, 0, 1, der(right))])
    dns_server.set(tlsa2(smtp_port), "TLSA", [record(3, 0, 2, der(right))])
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert (attempt.mx_host, attempt.tls_policy) == ("mx2.dest.test", "dane")
    assert mx1.transactions == []
    assert len(mx2.messages) == 1


async def test_only_unusable_records_deliver_unauthenticated_and_say_so(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    files = certs.self_signed(["mx1.dest.test"])
    mx1 = make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    dns_server.set(
        tlsa1(smtp_port),
        "TLSA",
        [
            record(1, 1, 1, der(files)),  # PKIX-EE: not for SMTP
            "0 0 1 " + "00" * 32,  # PKIX-TA: not for SMTP either
            "3 4 1 " + "00" * 32,  # an unknown selector
        ],
    )
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "encrypt (dane: tlsa unusable)"
    assert attempt.tls_version.startswith("TLSv1.")
    assert len(mx1.messages) == 1


async def test_dane_ta_needs_the_peer_chain(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    """DANE-TA on the test CA: authenticated where the runtime gives out the
    server's chain (Python 3.13+), an unusable set before that."""
    files = certs.issue(["mx1.dest.test"])
    # the sink sends its leaf and the CA, so that the anchor is in the chain
    chain = files[0].with_suffix(".chain.pem")
    chain.write_bytes(files[0].read_bytes() + certs.ca_path.read_bytes())
    mx1 = make_sink("127.0.0.2", tls_cert=(chain, files[1]))
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(2, 0, 1, der((certs.ca_path, files[1])))])
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert len(mx1.messages) == 1
    expected = "dane" if PEER_CHAIN else "encrypt (dane: tlsa unusable)"
    assert attempt.tls_policy == expected


async def test_without_the_ad_bit_dane_is_not_applied_and_the_attempt_says_so(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    files = certs.issue(["mx1.dest.test"])
    mx1 = make_sink("127.0.0.2", tls_cert=files)
    # records that would refuse this certificate, on a secure TLSA answer,
    # but the MX host's own addresses come without the AD bit
    dns_server.secure()
    dns_server.secure("mx1.dest.test", on=False)
    dns_server.set(tlsa1(smtp_port), "TLSA", ["3 1 1 " + "00" * 32])
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "encrypt (dane: no AD bit)"
    assert len(mx1.messages) == 1
    # DANE is looked for only on secure addresses
    assert (tlsa1(smtp_port), "TLSA") not in dns_server.queries


async def test_without_trust_ad_nothing_changes(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    files = certs.issue(["mx1.dest.test"])
    make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", ["3 1 1 " + "00" * 32])
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "encrypt"
    assert (tlsa1(smtp_port), "TLSA") not in dns_server.queries


@pytest.mark.parametrize("rcode", ["SERVFAIL", "REFUSED"])
async def test_a_failed_or_bogus_tlsa_lookup_defers(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
    rcode: str,
) -> None:
    mx1 = make_sink("127.0.0.2", tls_cert=certs.issue(["mx1.dest.test"]))
    mx2 = make_sink("127.0.0.3", tls_cert=certs.issue(["mx2.dest.test"]))
    dns_server.secure()
    # SERVFAIL is what a validating resolver answers for bogus data
    dns_server.fail(tlsa1(smtp_port), rcode, rdtype="TLSA")
    dns_server.fail(tlsa2(smtp_port), rcode, rdtype="TLSA")
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir, retry={"max_age": 0.5})
    async with App(config) as app:
        send, attempts = await deliver_one(app)
    assert send.state is State.FAILED
    assert attempts
    assert {a.reason for a in attempts} == {Reason.DNS}
    assert "TLSA lookup failed" in (attempts[0].text or "")
    assert mx1.connections == 0
    assert mx2.connections == 0


async def test_dane_shows_in_queue_show_and_the_api(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    files = certs.self_signed(["mx1.dest.test"])
    make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(3, 1, 2, der(files))])
    key = "test-api-key-0123456789"
    config = dane_config(tmp_path, dns_server, smtp_port, keys_dir, api={"keys": [key]})
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    async with App(config) as app:
        send, _ = await deliver_one(app)
        async with (
            ApiServer(create_api(app)) as server,
            httpx.AsyncClient(
                base_url=server.url, headers={"Authorization": f"Bearer {key}"}
            ) as http,
        ):
            shown = (await http.get(f"/v1/sends/{send.id}")).json()
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["--config", str(path), "queue", "show", send.id]
    )
    assert result.exit_code == 0, result.output
    assert "tls policy dane" in result.output
    assert shown["attempts"][0]["tls_policy"] == "dane"


def test_trust_ad_needs_nameservers(tmp_path: Path) -> None:
    from mailer.config import load_config

    with pytest.raises(ConfigError, match="dnssec"):
        load_config(environ={}, overrides={"dnssec": "trust-ad", "database": str(tmp_path / "d")})
    with pytest.raises(ConfigError, match="dnssec"):
        load_config(environ={}, overrides={"dnssec": "yes", "nameservers": ["127.0.0.1"]})


@pytest.fixture
def policy_host(certs: TestCerts, dns_server: DNSServer) -> Iterator[PolicyHost]:
    dns_server.update({"mta-sts.dest.test": {"A": ["127.0.0.1"]}})
    with PolicyHost(certs, ["mta-sts.dest.test"]) as host:
        yield host


def with_enforce(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    host: PolicyHost,
    **overrides: Any,
) -> Config:
    dns_server.set("_mta-sts.dest.test", "TXT", ["v=STSv1; id=1;"])
    host.serve("dest.test", Reply(policy_text("enforce", ["*.dest.test"])))
    return dane_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        tls={"cafile": str(certs.ca_path)},
        mta_sts={"test_port": host.port, "test_cafile": str(certs.ca_path)},
        **overrides,
    )


async def test_dane_goes_before_an_mta_sts_enforce_policy(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    # no CA vouches for it, so MTA-STS alone would refuse it
    files = certs.self_signed(["mx1.dest.test"])
    mx1 = make_sink("127.0.0.2", tls_cert=files)
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", [record(3, 1, 1, der(files))])
    config = with_enforce(tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host)
    async with App(config) as app:
        send, [attempt] = await deliver_one(app)
    assert send.state is State.DELIVERED
    assert attempt.tls_policy == "dane"
    assert len(mx1.messages) == 1


async def test_a_failing_dane_match_is_not_overridden_by_mta_sts(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    policy_host: PolicyHost,
    make_sink,
) -> None:
    # valid for MTA-STS (the test CA, the MX name), matching no TLSA record
    mx1 = make_sink("127.0.0.2", tls_cert=certs.issue(["mx1.dest.test"]))
    dns_server.secure()
    dns_server.set(tlsa1(smtp_port), "TLSA", ["3 1 1 " + "00" * 32])
    dns_server.set("dest.test", "MX", [(10, "mx1.dest.test")])
    config = with_enforce(
        tmp_path, dns_server, smtp_port, keys_dir, certs, policy_host, retry={"max_age": 0.5}
    )
    async with App(config) as app:
        send, attempts = await deliver_one(app)
    assert send.state is State.FAILED
    assert {(a.reason, a.tls_policy) for a in attempts} == {(Reason.DANE, "dane")}
    assert mx1.transactions == []


async def test_sni_names_the_mx_host_under_dane(dns_server: DNSServer, certs: TestCerts) -> None:
    """A bare STARTTLS server that records the name the client asked for."""
    files = certs.self_signed(["somebody-else.test"])
    context = TestCerts.server_context(files)
    asked: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: asked.append(name)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 bare ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-bare\r\n250 STARTTLS\r\n")
            elif verb == b"STAR":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(context)
                continue
            else:
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.2", 0)
    port = server.sockets[0].getsockname()[1]
    dns_server.secure()
    dns_server.set(tlsa1(port), "TLSA", [record(3, 1, 1, der(files))])
    connector = Connector(
        Resolver([dns_server.address], timeout=2.0, trust_ad=True), helo="mailer.test", port=port
    )
    try:
        session = await connector.connect("dest.test", TLSPolicy.ENCRYPT)
        await session.close()
    finally:
        server.close()
        await server.wait_closed()
    assert session.policy == "dane"
    assert asked == ["mx1.dest.test"]
