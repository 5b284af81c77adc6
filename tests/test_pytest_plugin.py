"""The `mailer` pytest plugin as a platform developer uses it: its fixtures,
loaded through the installed pytest11 entry point."""

from __future__ import annotations

import mailbox
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import pytest

from mailer.app import App
from mailer.config import Config
from mailer.dev.dnsserver import DNSServer
from mailer.pytest_plugin import CUSTOMER_DOMAIN, INBOX_DOMAIN, PLATFORM_DOMAIN, SELECTOR
from mailer.reasons import Reason, State
from mailer.sink import DevSink, KeySource
from mailer.store.models import NewDistribution, SendFilter
from mailer.testing.world import CUSTOMER_SELECTOR, ED25519_SELECTOR, MX_HOST, people


def survey(sender: str = f"hr@{CUSTOMER_DOMAIN}") -> NewDistribution:
    return NewDistribution(
        account="acme",
        sender_address=sender,
        sender_name="ACME HR",
        subject="Wie war Ihre Woche, {{ name }}?",
        html="<p>Hallo {{ name }}</p><p><a href='https://survey.test/s/{{ token }}'>Los</a></p>",
        text=None,
        unsubscribe_url="https://survey.test/u/{{ token }}",
    )


def test_plugin_is_loaded_from_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("mailer")
    assert plugin is not None
    assert plugin.__name__ == "mailer.pytest_plugin"


def test_config_is_bound_to_the_loopback_dns_and_sink(
    mailer_config: Config, mailer_dns: DNSServer, mailer_sink: DevSink
) -> None:
    assert mailer_config.nameservers == (mailer_dns.address,)
    assert mailer_config.relay == mailer_sink.address
    assert mailer_config.dkim_domain == PLATFORM_DOMAIN
    assert mailer_sink.host == "127.0.0.1"


async def test_engine_mail_arrives_with_dkim_pass_for_every_signature(
    mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
) -> None:
    await mailer_app.enqueue(survey(), people("anna"))
    assert await mailer_deliver() == {State.DELIVERED: 1}
    [received] = mailer_sink.messages
    assert received.message["From"].addresses[0].addr_spec == f"hr@{CUSTOMER_DOMAIN}"
    assert [(r.domain, r.selector, r.result, r.key_source) for r in received.dkim] == [
        (CUSTOMER_DOMAIN, CUSTOMER_SELECTOR, "pass", KeySource.DNS),
        (PLATFORM_DOMAIN, SELECTOR, "pass", KeySource.DNS),
        (PLATFORM_DOMAIN, ED25519_SELECTOR, "pass", KeySource.DNS),
    ]
    assert received.checks_ok, received.checks
    assert received.subject == "Wie war Ihre Woche, anna?"


async def test_sender_without_spf_goes_out_as_neutral_sender_with_reply_to(
    mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
) -> None:
    await mailer_app.enqueue(survey("hr@no-spf.test"), people("anna"))
    await mailer_deliver()
    [received] = mailer_sink.messages
    assert received.check("from").detail == (
        f"From: survey@{PLATFORM_DOMAIN}, Reply-To: hr@no-spf.test"
    )
    assert [(r.domain, r.result) for r in received.dkim] == [(PLATFORM_DOMAIN, "pass")] * 2


async def test_unpublished_key_verifies_from_the_key_store(
    mailer_app: App, mailer_sink: DevSink, mailer_dns: DNSServer, mailer_deliver: Any
) -> None:
    mailer_dns.remove(f"{CUSTOMER_SELECTOR}._domainkey.{CUSTOMER_DOMAIN}")
    await mailer_app.enqueue(survey(), people("anna"))
    await mailer_deliver()
    [received] = mailer_sink.messages
    assert [(r.domain, r.key_source) for r in received.dkim] == [
        (CUSTOMER_DOMAIN, KeySource.KEYS_DIR),
        (PLATFORM_DOMAIN, KeySource.DNS),
        (PLATFORM_DOMAIN, KeySource.DNS),
    ]
    assert received.dkim_pass


async def test_greylisting_sink_defers_then_delivers(
    mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
) -> None:
    mailer_sink.set_faults(greylist=True)
    result = await mailer_app.enqueue(survey(), people("anna"))
    assert await mailer_deliver() == {State.DELIVERED: 1}
    attempts = await mailer_app.store.attempts(result.send_ids[0])
    assert [a.enhanced for a in attempts] == ["4.7.1", "2.0.0"]


async def test_received_mail_is_in_the_maildir_with_authentication_results(
    mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
) -> None:
    await mailer_app.enqueue(survey(), people("anna"))
    await mailer_deliver()
    [received] = mailer_sink.messages
    assert mailer_sink.maildir is not None
    box = mailbox.Maildir(mailer_sink.maildir, create=False)
    [(key, stored)] = list(box.items())
    assert key == received.id
    assert stored["Subject"] == "Wie war Ihre Woche, anna?"
    assert stored["Return-Path"] == f"<{received.mail_from}>"
    assert stored["Delivered-To"] == f"anna@{INBOX_DOMAIN}"
    assert stored["Authentication-Results"] == (
        f"{MX_HOST}; dkim=pass header.d={CUSTOMER_DOMAIN} header.s={CUSTOMER_SELECTOR}; "
        f"dkim=pass header.d={PLATFORM_DOMAIN} header.s={SELECTOR}; "
        f"dkim=pass header.d={PLATFORM_DOMAIN} header.s={ED25519_SELECTOR}"
    )
    # Beneath the trace fields, the message as received (LF line ends).
    parsed = message_from_bytes(box.get_bytes(key), policy=default_policy)
    assert (
        parsed.get_body(("html",)).get_content()
        == received.message.get_body(("html",)).get_content()
    )
    mailer_sink.clear()
    assert list(box.keys()) == []
    assert mailer_sink.messages == []


class TestRoutingByMx:
    @pytest.fixture
    def mailer_config_overrides(self) -> dict[str, Any]:
        return {"relay": None, "tls": {"policy": "verify"}}

    async def test_mx_of_the_zone_leads_to_the_sink_with_a_verified_certificate(
        self, mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
    ) -> None:
        assert mailer_app.config.relay is None
        result = await mailer_app.enqueue(survey(), people("anna"))
        assert await mailer_deliver() == {State.DELIVERED: 1}
        [attempt] = await mailer_app.store.attempts(result.send_ids[0])
        assert attempt.mx_host == MX_HOST
        assert len(mailer_sink.messages) == 1

    async def test_domain_without_mx_in_the_zone_bounces(
        self, mailer_app: App, mailer_sink: DevSink, mailer_deliver: Any
    ) -> None:
        await mailer_app.enqueue(survey(), people("anna", domain="nowhere.test"))
        assert await mailer_deliver() == {State.BOUNCED: 1}
        [send] = await mailer_app.store.list_sends(SendFilter(), limit=10)
        assert send.reason is Reason.DOMAIN_UNKNOWN
        assert mailer_sink.messages == []
