"""Sender identity and DKIM through the whole engine: SPF zones on the
loopback DNS server, messages received by a STARTTLS sink, signatures
checked by dkimpy and by OpenDKIM."""

from __future__ import annotations

import asyncio
import email.policy
import json
from email import message_from_bytes
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.enqueue import RecipientInput
from mailer.errors import ConfigError
from mailer.message.keys import KeyStore
from mailer.message.signing import verify_with_resolver
from mailer.reasons import State
from mailer.store.models import NewDistribution
from tests.conftest import OUR_DOMAIN, make_config, run_until_settled
from tests.test_dkim_opendkim import Verdict, opendkim_verify

OUR_IP = "192.0.2.10"
REGION_ZONE = {
    "_spf.netigate.se": {"TXT": [f"v=spf1 ip4:{OUR_IP} -all"]},
    "_spf.ntgt.de": {"TXT": ["v=spf1 ip4:198.51.100.20 -all"]},
}


def survey(sender: str) -> NewDistribution:
    return NewDistribution(
        account="acme",
        sender_address=sender,
        sender_name="Kundenservice Müller",
        subject="Ihre Meinung zählt",
        html="<p>Hallo {{ name }}</p>",
        text=None,
        unsubscribe_url="https://survey.test/u/{{ email }}",
    )


ONE = [RecipientInput("anna@dest.test", "Anna")]


async def deliver(config, sender: str, make_sink):
    sink = make_sink("127.0.0.2")
    async with App(config) as app:
        result = await app.enqueue(survey(sender), ONE)
        await run_until_settled(app)
        send = await app.store.send(result.send_ids[0])
    [received] = sink.messages
    return send, received


@pytest.fixture
def region_dns(dns_server: DNSServer) -> DNSServer:
    dns_server.update(REGION_ZONE)
    return dns_server


async def test_spf_include_of_our_region_keeps_the_customer_sender(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    region_dns.set("acme.test", "TXT", ["v=spf1 mx include:_spf.netigate.se ~all"])
    config = make_config(tmp_path, region_dns, smtp_port, keys_dir)
    send, received = await deliver(config, "hr@acme.test", make_sink)
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert send.state is State.DELIVERED
    assert send.identity == "spf=pass → customer sender"
    assert msg["From"].addresses[0].addr_spec == "hr@acme.test"
    assert msg["Reply-To"] is None
    assert received.mail_from == "hr@acme.test"


async def test_without_authorisation_the_neutral_sender_of_the_region_is_used(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    region_dns.set("acme.test", "TXT", ["v=spf1 ip4:203.0.113.5 ~all"])
    config = make_config(tmp_path, region_dns, smtp_port, keys_dir)
    send, received = await deliver(config, "hr@acme.test", make_sink)
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert send.identity == "spf=softfail → neutral sender"
    [sender] = msg["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Kundenservice Müller", "survey@netigate.se")
    assert msg["Reply-To"].addresses[0].addr_spec == "hr@acme.test"
    assert received.mail_from.endswith("@netigate.se")


@pytest.mark.parametrize(
    ("region", "expected"),
    [("de", "hr@acme.test"), ("azure", "survey@netigate.se")],
)
async def test_german_include_authorises_the_de_region_only(
    tmp_path: Path,
    region_dns: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    make_sink,
    region: str,
    expected: str,
) -> None:
    region_dns.set("acme.test", "TXT", ["v=spf1 include:_spf.ntgt.de -all"])
    ip = "198.51.100.20" if region == "de" else OUR_IP
    config = make_config(tmp_path, region_dns, smtp_port, keys_dir, region=region, outbound_ip=ip)
    _, received = await deliver(config, "hr@acme.test", make_sink)
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == expected
    assert received.mail_from == expected


@pytest.mark.parametrize("signing_threads", [2, 0], ids=["beside-the-loop", "on-the-loop"])
async def test_every_received_message_verifies_with_dkimpy_and_opendkim(
    tmp_path: Path,
    region_dns: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    make_sink,
    signing_threads: int,
) -> None:
    config = make_config(
        tmp_path,
        region_dns,
        smtp_port,
        keys_dir,
        dkim={"domain": OUR_DOMAIN, "required": True, "signing_threads": signing_threads},
    )
    _, received = await deliver(config, "hr@acme.test", make_sink)
    checks = await verify_with_resolver(received.data, Resolver([region_dns.address]))
    assert {(c.domain, c.algorithm, c.ok) for c in checks} == {
        ("acme.test", "rsa-sha256", True),
        ("mailer.test", "rsa-sha256", True),
        ("mailer.test", "ed25519-sha256", True),
    }
    verdicts = opendkim_verify(received.data, KeyStore(keys_dir).load_all(), tmp_path)
    assert sorted(verdicts, key=lambda v: (v.domain, v.algorithm)) == [
        Verdict("acme.test", "cust1", "rsa-sha256", "pass"),
        Verdict("mailer.test", "ed1", "ed25519-sha256", "pass"),
        Verdict("mailer.test", "rsa1", "rsa-sha256", "pass"),
    ]


async def test_identity_decision_is_shown_by_queue_list_and_show(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    config = make_config(tmp_path, region_dns, smtp_port, keys_dir)
    send, _ = await deliver(config, "hr@acme.test", make_sink)
    config_file = tmp_path / "mailer.toml"
    config_file.write_text(f'database = "{config.database}"\n')
    runner = CliRunner()
    # the CLI runs its own event loop: call it from a thread
    listed = await asyncio.to_thread(
        runner.invoke, cli, ["--config", str(config_file), "queue", "list", "--json"]
    )
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["identity"] == "spf=none → neutral sender"
    shown = await asyncio.to_thread(
        runner.invoke, cli, ["--config", str(config_file), "queue", "show", send.id]
    )
    assert shown.exit_code == 0, shown.output
    assert "spf=none → neutral sender" in shown.output
    assert "mx1.dest.test" in shown.output


async def test_engine_refuses_to_start_without_our_dkim_key(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port, dkim={"required": True})
    async with App(config) as app:
        with pytest.raises(ConfigError, match=r"no DKIM key for mailer\.test") as err:
            await app.engine()
    assert err.value.key == "dkim.domain"


async def test_dkim_alignment_option_keeps_the_customer_sender_without_spf(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    # acme.test publishes no SPF for us, but we hold its DKIM key and DNS
    # publishes the matching record (tests/conftest.py dkim_zone)
    config = make_config(
        tmp_path, region_dns, smtp_port, keys_dir, dkim={"domain": "mailer.test", "alignment": True}
    )
    send, received = await deliver(config, "hr@acme.test", make_sink)
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert send.identity is not None
    assert send.identity.startswith("dkim key for acme.test")
    assert msg["From"].addresses[0].addr_spec == "hr@acme.test"
    assert received.mail_from.endswith("@netigate.se")
    checks = await verify_with_resolver(received.data, Resolver([region_dns.address]))
    assert ("acme.test", True) in {(c.domain, c.ok) for c in checks}


async def test_dkim_alignment_needs_the_key_to_be_published(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    region_dns.remove("cust1._domainkey.acme.test")
    config = make_config(
        tmp_path, region_dns, smtp_port, keys_dir, dkim={"domain": "mailer.test", "alignment": True}
    )
    send, received = await deliver(config, "hr@acme.test", make_sink)
    assert send.identity == "spf=none → neutral sender"
    assert received.mail_from.endswith("@netigate.se")


async def test_dkim_alignment_survives_dns_failure_at_start_and_is_decided_later(
    tmp_path: Path, region_dns: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    # DNS fails for the customer's key record while the worker starts: the
    # worker starts all the same; the domain is decided once DNS answers
    region_dns.fail("cust1._domainkey.acme.test")
    config = make_config(
        tmp_path, region_dns, smtp_port, keys_dir, dkim={"domain": "mailer.test", "alignment": True}
    )
    sink = make_sink("127.0.0.2")
    async with App(config) as app:
        engine = await app.engine()
        region_dns.heal("cust1._domainkey.acme.test")
        result = await app.enqueue(survey("hr@acme.test"), ONE)
        task = asyncio.create_task(engine.run(drain=True))
        await asyncio.wait_for(task, 30)
        send = await app.store.send(result.send_ids[0])
    assert send.identity is not None
    assert send.identity.startswith("dkim key for acme.test")
    [received] = sink.messages
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "hr@acme.test"
