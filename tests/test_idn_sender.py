"""International sender domains: ``hr@bücher.example`` is carried as its
A-label (``xn--bcher-kva.example``) through From, the envelope and DKIM, end
to end. Real DNS server, real aiosmtpd sink over STARTTLS, real SQLite,
and the signature checked by dkimpy against that DNS."""

from __future__ import annotations

import email.policy
import shutil
from email import message_from_bytes
from pathlib import Path

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.message.keys import KeyStore, dns_record_value
from mailer.message.signing import verify_with_resolver
from mailer.reasons import State
from tests.conftest import make_config
from tests.test_identity_delivery import ONE, REGION_ZONE, run_until_settled, survey

ALABEL = "xn--bcher-kva.example"


async def deliver(config, sender: str, make_sink):  # type: ignore[no-untyped-def]
    sink = make_sink("127.0.0.2")
    async with App(config) as app:
        result = await app.enqueue(survey(sender), ONE)
        dist = await app.store.distribution(result.distribution_id)
        await run_until_settled(app)
        send = await app.store.send(result.send_ids[0])
    [received] = sink.messages
    return dist, send, received


async def test_an_idn_sender_with_spf_pass_goes_out_as_its_a_label(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    dns_server.update(REGION_ZONE)
    dns_server.set(ALABEL, "TXT", ["v=spf1 include:_spf.netigate.se -all"])
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir)
    dist, send, received = await deliver(config, "hr@Bücher.example", make_sink)
    assert dist.sender_address == f"hr@{ALABEL}"
    assert send.state is State.DELIVERED
    assert send.identity == "spf=pass → customer sender"
    assert received.mail_from == f"hr@{ALABEL}"
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == f"hr@{ALABEL}"


async def test_an_idn_sender_without_spf_is_the_reply_to_of_the_neutral_sender(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    dns_server.update(REGION_ZONE)
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir)
    _, send, received = await deliver(config, "hr@bücher.example", make_sink)
    assert send.state is State.DELIVERED
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["Reply-To"].addresses[0].addr_spec == f"hr@{ALABEL}"
    assert received.mail_from.endswith("@netigate.se")


async def test_an_idn_sender_domain_is_signed_for_with_its_own_dkim_key(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(keys_dir, keys)
    info = KeyStore(keys).generate("bücher.example".encode("idna").decode(), "sel1")
    dns_server.update(REGION_ZONE)
    dns_server.set(f"sel1._domainkey.{ALABEL}", "TXT", [dns_record_value(info)])
    config = make_config(
        tmp_path, dns_server, smtp_port, keys, dkim={"domain": "mailer.test", "alignment": True}
    )
    _, send, received = await deliver(config, "hr@bücher.example", make_sink)
    assert send.state is State.DELIVERED
    assert send.identity is not None
    assert send.identity.startswith(f"dkim key for {ALABEL}")
    msg = message_from_bytes(received.data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == f"hr@{ALABEL}"
    checks = await verify_with_resolver(received.data, Resolver([dns_server.address]))
    assert (ALABEL, True) in {(c.domain, c.ok) for c in checks}
