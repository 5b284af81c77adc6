"""``mailer check-domain`` against zones served by the loopback DNS server
and MX hosts played by loopback SMTP sinks (with and without STARTTLS,
with an expired certificate)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.checkdomain import DomainChecker, DomainReport, Status
from mailer.checkdomain.tls_probe import probe_mx
from mailer.config import Config
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.errors import DNSTemporaryError, ValidationError
from mailer.identity.spf_record import parse_record
from mailer.message.keys import KeyStore, dns_record_value
from mailer.sink.runner import Sink
from tests.conftest import make_config

# Documentation addresses standing in for our outbound IPs; only ever SPF
# values, never connected to.
OUR_IP = "192.0.2.10"
OTHER_IP = "192.0.2.11"
REGION_INCLUDE = "_spf.netigate.se"


def includes(prefix: str, count: int) -> dict[str, dict[str, Any]]:
    """``count`` include targets, each an SPF record costing no lookup."""
    return {
        f"{prefix}{i}.test": {"TXT": [f"v=spf1 ip4:198.51.100.{i} -all"]}
        for i in range(1, count + 1)
    }


def chain(prefix: str, count: int) -> str:
    return " ".join(f"include:{prefix}{i}.test" for i in range(1, count + 1))


ZONE: dict[str, dict[str, Any]] = {
    REGION_INCLUDE: {"TXT": [f"v=spf1 ip4:{OUR_IP} ip4:{OTHER_IP} -all"]},
    # set up perfectly: include, DKIM (published per test), DMARC, TLS MX
    "good.test": {
        "TXT": [f"v=spf1 mx include:{REGION_INCLUDE} -all", "google-site-verification=x"],
        "MX": [(10, "mx.good.test")],
    },
    "mx.good.test": {"A": ["127.0.0.2"]},
    "_dmarc.good.test": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@good.test"]},
    "sub.good.test": {"TXT": [f"v=spf1 include:{REGION_INCLUDE} -all"]},
    # our include missing, ~all
    "soft.test": {"TXT": ["v=spf1 mx ~all"], "MX": [(10, "mx.soft.test")]},
    "mx.soft.test": {"A": ["127.0.0.2"]},
    # our IPs listed directly
    "direct.test": {"TXT": [f"v=spf1 ip4:{OUR_IP} ip4:{OTHER_IP} -all"]},
    "_dmarc.direct.test": {"TXT": ["v=DMARC1; p=none"]},
    # two SPF records
    "two.test": {"TXT": ["v=spf1 mx -all", "v=spf1 ip4:198.51.100.7 ~all"]},
    # 11, 10 and 9 lookups before ours
    "eleven.test": {"TXT": [f"v=spf1 {chain('e', 11)} ~all"]},
    **includes("e", 11),
    "ten.test": {"TXT": [f"v=spf1 {chain('e', 10)} ~all"]},
    "nine.test": {"TXT": [f"v=spf1 {chain('e', 9)} ~all"]},
    # DKIM record present but another key (published per test)
    "otherkey.test": {"TXT": [f"v=spf1 include:{REGION_INCLUDE} -all"]},
    # receiving MX without STARTTLS / with an expired certificate
    "plain.test": {"MX": [(10, "mx.plain.test")]},
    "mx.plain.test": {"A": ["127.0.0.3"]},
    "expired.test": {"MX": [(10, "mx.expired.test")]},
    "mx.expired.test": {"A": ["127.0.0.4"]},
    "backup.test": {"MX": [(10, "mx.good.test"), (20, "down.backup.test")]},
    "down.backup.test": {"A": ["127.0.0.9"]},
    "nomail.test": {"MX": [(0, ".")]},
    "strict.test": {"TXT": ["v=spf1 -all"]},
    "_dmarc.strict.test": {"TXT": ["v=DMARC1; p=reject"]},
}


@pytest.fixture
def zone() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, zone: DNSServer, smtp_port: int) -> Config:
    return domain_config(tmp_path, zone, smtp_port)


def domain_config(tmp_path: Path, zone: DNSServer, smtp_port: int, **overrides: Any) -> Config:
    region = {
        "platform_host": "netigate.se",
        "spf_include": REGION_INCLUDE,
        "neutral_sender": "survey@netigate.se",
        "outbound_ips": [OUR_IP, OTHER_IP],
    }
    return make_config(
        tmp_path, zone, smtp_port, outbound_ip=OUR_IP, regions={"azure": region}, **overrides
    )


@pytest.fixture(scope="module")
def checker_psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


async def check(config: Config, psl: Any, domain: str, **kw: Any) -> DomainReport:
    return await DomainChecker(config, psl=psl).check(domain, **kw)


def publish_key(zone: DNSServer, config: Config, domain: str, *, other: bool = False) -> str:
    """Generate our key for ``domain`` (selector "mailer"); publish it, or
    with ``other`` a different key; return the record of our key."""
    store = KeyStore(config.keys_dir)
    ours = store.generate(domain, "mailer", algorithm="ed25519")
    published = ours
    if other:
        published = KeyStore(config.keys_dir.parent / "elsewhere").generate(
            domain, "mailer", algorithm="ed25519"
        )
    zone.set(f"mailer._domainkey.{domain}", "TXT", [dns_record_value(published)])
    return dns_record_value(ours)


def statuses(report: DomainReport) -> dict[str, Status]:
    return {c.name: c.status for c in report.checks}


def spf_fix_record(report: DomainReport) -> str:
    [fix] = [f for f in report.check("spf").fixes if f.record is not None]
    assert fix.record is not None
    return fix.record.value


# --- the whole set-up --------------------------------------------------------------


async def test_a_domain_set_up_perfectly_passes_every_check(
    config: Config, zone: DNSServer, make_sink: Callable[..., Sink], checker_psl: Any
) -> None:
    publish_key(zone, config, "good.test")
    make_sink("127.0.0.2", hostname="mx.good.test")
    report = await check(config, checker_psl, "good.test")
    assert statuses(report) == dict.fromkeys(["spf", "sender", "dkim", "dmarc", "tls"], Status.OK)
    assert report.verdict is Status.OK
    assert report.exit_code == 0
    assert report.fixes == ()
    spf = report.check("spf").details
    assert [(ip["ip"], ip["how"]) for ip in spf["ips"]] == [
        (OUR_IP, "include"),
        (OTHER_IP, "include"),
    ]
    assert spf["lookups"] == 2
    assert report.check("sender").summary == (
        "surveys from name@good.test will be sent as name@good.test"
    )
    dmarc = report.check("dmarc").details
    assert (dmarc["policy"], dmarc["spf_aligned"], dmarc["dkim_aligned"]) == ("reject", True, True)
    [host] = report.check("tls").details["hosts"]
    assert host["starttls"] is True
    assert host["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert host["certificate"]["matches_host"] is True
    assert host["certificate"]["days_left"] > 14


# --- SPF ---------------------------------------------------------------------------------


async def test_include_missing_with_softfail_needs_action_and_keeps_the_record(
    config: Config, make_sink: Callable[..., Sink], checker_psl: Any
) -> None:
    make_sink("127.0.0.2", hostname="mx.soft.test")
    report = await check(config, checker_psl, "soft.test")
    spf = report.check("spf")
    assert spf.status is Status.ACTION_NEEDED
    assert f"does not authorise {OUR_IP}, {OTHER_IP} (softfail at ~all)" in spf.summary
    assert spf_fix_record(report) == f"v=spf1 mx include:{REGION_INCLUDE} ~all"
    assert spf.details["suggested_lookups"] == 2
    assert report.check("sender").summary == (
        "surveys from name@soft.test will be sent as the neutral sender survey@netigate.se"
        " with Reply-To name@soft.test, because spf=softfail"
    )
    assert report.exit_code == 1


async def test_our_ips_listed_directly_work_but_the_include_is_suggested(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "direct.test")
    spf = report.check("spf")
    assert spf.status is Status.WARNING
    assert [ip["how"] for ip in spf.details["ips"]] == ["ip", "ip"]
    assert "by listing them (ip4:)" in spf.summary
    assert spf_fix_record(report) == f"v=spf1 include:{REGION_INCLUDE} -all"
    assert report.check("sender").status is Status.OK


async def test_two_spf_records_are_a_permerror_merged_into_one_fix(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "two.test")
    spf = report.check("spf")
    assert spf.status is Status.ACTION_NEEDED
    assert "2 SPF records (permerror)" in spf.summary
    merged = spf_fix_record(report)
    assert merged == f"v=spf1 ip4:198.51.100.7 mx include:{REGION_INCLUDE} ~all"
    parse_record(merged)
    assert report.check("sender").details["spf"] == "permerror"


async def test_eleven_lookups_fix_lists_our_ips_and_says_it_is_still_over(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "eleven.test")
    spf = report.check("spf")
    assert spf.status is Status.ACTION_NEEDED
    assert "11 DNS lookups, over the limit of 10 (permerror)" in spf.summary
    [fix] = spf.fixes
    assert fix.record is not None
    assert f"include:{REGION_INCLUDE}" not in fix.record.value
    assert f"ip4:{OUR_IP} ip4:{OTHER_IP} ~all" in fix.record.value
    assert "adding include:_spf.netigate.se would need 12 DNS lookups" in fix.text
    assert "still needs 11 lookups" in fix.text
    assert fix.status is Status.ACTION_NEEDED
    assert spf.details["suggested_lookups"] == 11


async def test_ten_lookups_get_our_ips_not_an_eleventh_lookup(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "ten.test")
    spf = report.check("spf")
    assert spf.status is Status.ACTION_NEEDED
    assert spf.details["lookups"] == 10
    [fix] = spf.fixes
    assert fix.record is not None
    assert fix.record.value == f"v=spf1 {chain('e', 10)} ip4:{OUR_IP} ip4:{OTHER_IP} ~all"
    assert "would need 11 DNS lookups (limit 10)" in fix.text
    assert spf.details["suggested_lookups"] == 10


async def test_nine_lookups_leave_room_for_the_include(config: Config, checker_psl: Any) -> None:
    report = await check(config, checker_psl, "nine.test")
    fix = report.check("spf").fixes[0]
    assert fix.record is not None
    assert fix.record.value == f"v=spf1 {chain('e', 9)} include:{REGION_INCLUDE} ~all"
    assert "10/10 lookups" in fix.text


async def test_no_spf_record_gets_a_record_to_publish(config: Config, checker_psl: Any) -> None:
    report = await check(config, checker_psl, "plain.test")
    spf = report.check("spf")
    assert spf.status is Status.ACTION_NEEDED
    assert "no SPF record" in spf.summary
    assert spf_fix_record(report) == f"v=spf1 include:{REGION_INCLUDE} ~all"


# --- DMARC ------------------------------------------------------------------------------


async def test_no_dmarc_is_a_warning_with_a_starter_record(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "soft.test")
    dmarc = report.check("dmarc")
    assert dmarc.status is Status.WARNING
    assert dmarc.summary == "no DMARC record at _dmarc.soft.test"
    [fix] = dmarc.fixes
    assert fix.record is not None
    assert (fix.record.name, fix.record.value) == ("_dmarc.soft.test", "v=DMARC1; p=none")


async def test_a_subdomain_falls_back_to_the_organisational_policy(
    config: Config, checker_psl: Any
) -> None:
    report = await check(config, checker_psl, "sub.good.test")
    dmarc = report.check("dmarc")
    assert dmarc.details["found_at"] == "_dmarc.good.test"
    assert dmarc.details["applied_policy"] == "quarantine"  # sp= applies below the org domain
    assert dmarc.status is Status.OK
    assert "aligns via SPF" in dmarc.summary


async def test_dmarc_without_any_alignment_is_a_warning(config: Config, checker_psl: Any) -> None:
    report = await check(config, checker_psl, "strict.test")
    dmarc = report.check("dmarc")
    assert dmarc.status is Status.WARNING
    assert dmarc.summary == (
        "p=reject at _dmarc.strict.test; our mail cannot align (no SPF pass, no matching"
        " DKIM key), so surveys use the neutral sender"
    )
    assert (dmarc.details["spf_aligned"], dmarc.details["dkim_aligned"]) == (False, False)


# --- DKIM ---------------------------------------------------------------------------------


async def test_dkim_record_with_a_different_key_needs_the_right_record(
    config: Config, zone: DNSServer, checker_psl: Any
) -> None:
    ours = publish_key(zone, config, "otherkey.test", other=True)
    report = await check(config, checker_psl, "otherkey.test")
    dkim = report.check("dkim")
    assert dkim.status is Status.ACTION_NEEDED
    assert "different key" in dkim.summary
    [fix] = dkim.fixes
    assert fix.record is not None
    assert (fix.record.name, fix.record.value) == ("mailer._domainkey.otherkey.test", ours)
    assert dkim.details["selectors"][0]["problem"] == "different-key"
    assert report.check("dmarc").details["dkim_aligned"] is False


async def test_no_dkim_key_says_how_to_get_one(config: Config, checker_psl: Any) -> None:
    report = await check(config, checker_psl, "direct.test")
    dkim = report.check("dkim")
    assert dkim.status is Status.WARNING
    assert dkim.fixes[0].text.startswith("run `mailer keys generate direct.test`")


async def test_a_key_not_yet_published_gets_its_record(config: Config, checker_psl: Any) -> None:
    info = KeyStore(config.keys_dir).generate("direct.test", "s2024", algorithm="ed25519")
    report = await check(config, checker_psl, "direct.test")
    dkim = report.check("dkim")
    assert dkim.status is Status.ACTION_NEEDED
    assert dkim.fixes[0].record is not None
    assert dkim.fixes[0].record.name == "s2024._domainkey.direct.test"
    assert dkim.fixes[0].record.value == dns_record_value(info)


async def test_a_named_selector_without_a_key_is_a_warning(
    config: Config, zone: DNSServer, checker_psl: Any
) -> None:
    publish_key(zone, config, "good.test")
    report = await check(config, checker_psl, "good.test", selectors=["other"])
    dkim = report.check("dkim")
    assert dkim.status is Status.WARNING
    assert [row["selector"] for row in dkim.details["selectors"]] == ["other"]
    assert "--selector other" in dkim.fixes[0].text


# --- receiving TLS --------------------------------------------------------------------------


async def test_an_mx_without_starttls_needs_action(
    config: Config, make_sink: Callable[..., Sink], checker_psl: Any
) -> None:
    make_sink("127.0.0.3", starttls=False, hostname="mx.plain.test")
    report = await check(config, checker_psl, "plain.test")
    tls = report.check("tls")
    assert tls.status is Status.ACTION_NEEDED
    assert tls.summary == "mx.plain.test: does not offer STARTTLS (we never send in plaintext)"
    [host] = tls.details["hosts"]
    assert (host["connected"], host["starttls"], host["handshake"]) == (True, False, None)
    assert tls.fixes[0].text.startswith("enable STARTTLS on mx.plain.test")


async def test_an_mx_with_an_expired_certificate_needs_action(
    config: Config, make_sink: Callable[..., Sink], certs: TestCerts, checker_psl: Any
) -> None:
    make_sink("127.0.0.4", hostname="mx.expired.test", tls_cert=certs.expired("mx.expired.test"))
    report = await check(config, checker_psl, "expired.test")
    tls = report.check("tls")
    assert tls.status is Status.ACTION_NEEDED
    assert tls.summary.startswith("mx.expired.test: certificate expired 1 day(s) ago")
    [host] = tls.details["hosts"]
    assert host["handshake"] is True  # read although it would not verify
    assert host["certificate"]["days_left"] < 0
    assert host["certificate"]["matches_host"] is True
    assert tls.fixes[0].text == "renew the TLS certificate of mx.expired.test"


async def test_a_certificate_for_another_name_is_a_warning(
    config: Config, make_sink: Callable[..., Sink], certs: TestCerts, checker_psl: Any
) -> None:
    make_sink("127.0.0.4", hostname="mx.expired.test", tls_cert=certs.other_name())
    report = await check(config, checker_psl, "expired.test")
    tls = report.check("tls")
    assert tls.status is Status.WARNING
    assert "not the MX name" in tls.summary


async def test_a_backup_mx_that_is_down_is_only_a_warning(
    config: Config, make_sink: Callable[..., Sink], checker_psl: Any
) -> None:
    make_sink("127.0.0.2", hostname="mx.good.test")
    report = await check(config, checker_psl, "backup.test")
    tls = report.check("tls")
    assert tls.status is Status.WARNING
    assert tls.summary.startswith("down.backup.test: connect failed")
    assert [h["connected"] for h in tls.details["hosts"]] == [True, False]


async def test_a_null_mx_cannot_receive_mail(config: Config, checker_psl: Any) -> None:
    report = await check(config, checker_psl, "nomail.test")
    tls = report.check("tls")
    assert tls.status is Status.ACTION_NEEDED
    assert "null MX" in tls.summary


# --- could not run ---------------------------------------------------------------------------


async def test_unreachable_dns_raises_instead_of_judging(
    config: Config, zone: DNSServer, checker_psl: Any
) -> None:
    zone.fail("soft.test")
    with pytest.raises(DNSTemporaryError):
        await check(config, checker_psl, "soft.test")


async def test_a_bad_domain_or_region_is_refused(config: Config, checker_psl: Any) -> None:
    with pytest.raises(ValidationError, match="domain"):
        await check(config, checker_psl, "not a domain")
    with pytest.raises(ValidationError, match="region"):
        await check(config, checker_psl, "good.test", region="mars")


# --- the probe against odd servers ------------------------------------------------------


async def one_line_server(greeting: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_the_probe_reports_a_refused_greeting() -> None:
    server, port = await one_line_server(b"554 5.7.1 no service for you\r\n")
    async with server:
        probe = await probe_mx("mx.acme.test", "127.0.0.1", port, helo="mailer.test", timeout=5)
    assert probe.connected
    assert probe.error == "greeting refused: 554 5.7.1 no service for you"
    assert probe.starttls_offered is None


async def test_the_probe_reports_a_server_that_does_not_speak_smtp() -> None:
    server, port = await one_line_server(b"SSH-2.0-OpenSSH_9.6\r\n")
    async with server:
        probe = await probe_mx("mx.acme.test", "127.0.0.1", port, helo="mailer.test", timeout=5)
    assert probe.error == "no SMTP greeting: Malformed SMTP response line: SSH-2.0-OpenSSH_9.6"


async def test_the_probe_reports_a_refused_connection(smtp_port: int) -> None:
    probe = await probe_mx("mx.acme.test", "127.0.0.9", smtp_port, helo="mailer.test", timeout=5)
    assert not probe.connected
    assert probe.error is not None
    assert probe.error.startswith("connect failed: ")
