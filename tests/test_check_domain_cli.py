"""``mailer check-domain`` on the command line: output, ``--json`` shape
and exit codes 0 / 1 / 2, with a config file pointing at loopback DNS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.cli.main import cli, register_commands
from mailer.dev.dnsserver import DNSServer
from mailer.message.keys import KeyStore, dns_record_value
from mailer.sink.runner import Sink
from tests.test_check_domain import OTHER_IP, OUR_IP, REGION_INCLUDE, ZONE

register_commands()


@pytest.fixture
def zone() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


def write_config(tmp_path: Path, nameserver: str, smtp_port: int) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f"""
hostname = "mailer.test"
outbound_ip = "{OUR_IP}"
keys_dir = "{tmp_path / "keys"}"
nameservers = ["{nameserver}"]
smtp_port = {smtp_port}

[worker]
dns_timeout = 1
smtp_timeout = 5

[regions.azure]
platform_host = "netigate.se"
spf_include = "{REGION_INCLUDE}"
neutral_sender = "survey@netigate.se"
outbound_ips = ["{OUR_IP}", "{OTHER_IP}"]
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path, zone: DNSServer, smtp_port: int) -> Path:
    return write_config(tmp_path, zone.address, smtp_port)


def invoke(config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_file), "check-domain", *args])


@pytest.fixture
def good_domain(tmp_path: Path, zone: DNSServer, make_sink: Callable[..., Sink]) -> str:
    key = KeyStore(tmp_path / "keys").generate("good.test", "mailer", algorithm="ed25519")
    zone.set("mailer._domainkey.good.test", "TXT", [dns_record_value(key)])
    make_sink("127.0.0.2", hostname="mx.good.test")
    return "good.test"


def test_exit_0_and_a_short_report_when_nothing_needs_action(
    config_file: Path, good_domain: str
) -> None:
    result = invoke(config_file, good_domain)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "good.test (region azure): OK — all 5 checks passed"
    assert [line.split()[0] for line in lines[1:]] == ["[ok]"] * 5
    assert len(lines) == 6


def test_exit_1_with_numbered_fixes_when_something_needs_action(
    config_file: Path, make_sink: Callable[..., Sink]
) -> None:
    make_sink("127.0.0.2", hostname="mx.soft.test")
    result = invoke(config_file, "soft.test")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("soft.test (region azure): ACTION NEEDED")
    assert lines[1].startswith("  [action needed] spf ")
    fixes = lines[lines.index("Fixes:") + 1 :]
    assert fixes[0].startswith("  1. [spf] publish this record instead at soft.test")
    assert fixes[1] == f'     soft.test. IN TXT "v=spf1 mx include:{REGION_INCLUDE} ~all"'
    assert any(line.startswith("  2. ") for line in fixes)


def test_exit_2_and_a_plain_message_when_dns_is_unreachable(tmp_path: Path, smtp_port: int) -> None:
    silent = DNSServer()
    silent.start()
    address = silent.address
    silent.stop()  # nothing answers there any more
    result = invoke(write_config(tmp_path, address, smtp_port), "good.test")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "could not check good.test: DNS did not answer" in result.stderr
    assert "nothing was judged" in result.stderr


def test_exit_2_for_a_name_that_is_no_domain(config_file: Path) -> None:
    result = invoke(config_file, "not a domain")
    assert result.exit_code == 2
    assert "could not check not a domain: domain:" in result.stderr


def test_json_has_the_documented_shape(config_file: Path, good_domain: str) -> None:
    result = invoke(config_file, "--json", "--region", "azure", good_domain)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"domain", "region", "verdict", "summary", "checks", "fixes"}
    assert (data["domain"], data["region"], data["verdict"]) == ("good.test", "azure", "ok")
    assert [c["name"] for c in data["checks"]] == ["spf", "sender", "dkim", "dmarc", "tls"]
    for c in data["checks"]:
        assert set(c) == {"name", "status", "summary", "details"}
        assert c["status"] in ("ok", "warning", "action-needed")
    assert data["fixes"] == []
    spf = data["checks"][0]["details"]
    assert {"records", "lookups", "void_lookups", "all", "ips", "suggested_record"} <= set(spf)
    tls = data["checks"][4]["details"]["hosts"][0]
    assert {"host", "starttls", "handshake", "tls_version", "certificate"} <= set(tls)


def test_json_fixes_carry_the_record_to_publish(config_file: Path) -> None:
    result = invoke(config_file, "--json", "direct.test")
    data = json.loads(result.stdout)
    assert result.exit_code == 1  # no MX: mail to direct.test cannot be routed
    spf_fix = next(f for f in data["fixes"] if f["check"] == "spf")
    assert set(spf_fix) == {"check", "status", "text", "record"}
    assert spf_fix["record"] == {
        "name": "direct.test",
        "type": "TXT",
        "value": f"v=spf1 include:{REGION_INCLUDE} -all",
    }


def test_json_says_could_not_run_on_exit_2(tmp_path: Path, smtp_port: int) -> None:
    silent = DNSServer()
    silent.start()
    address = silent.address
    silent.stop()
    result = invoke(write_config(tmp_path, address, smtp_port), "--json", "good.test")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["verdict"] == "could-not-run"
    assert data["error"].startswith("could not check good.test: DNS did not answer")


def test_a_domain_that_does_not_exist_gets_one_verdict_and_no_records(
    config_file: Path,
) -> None:
    result = invoke(config_file, "no-such-domain.test")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("no-such-domain.test (region azure): ACTION NEEDED")
    assert lines[1].startswith("  [action needed] domain  no-such-domain.test does not exist")
    assert "(NXDOMAIN)" in lines[1]
    assert len(lines) == 2
    assert "Fixes:" not in result.stdout
    data = json.loads(invoke(config_file, "no-such-domain.test", "--json").stdout)
    assert [c["name"] for c in data["checks"]] == ["domain"]
    assert data["fixes"] == []


def test_could_not_run_errors_start_with_error(tmp_path: Path, smtp_port: int) -> None:
    silent = DNSServer()
    silent.start()
    address = silent.address
    silent.stop()
    result = invoke(write_config(tmp_path, address, smtp_port), "good.test")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: could not check good.test")


def test_spf_fix_names_an_include_that_does_not_resolve(config_file: Path, zone: DNSServer) -> None:
    zone.remove(REGION_INCLUDE)
    result = invoke(config_file, "soft.test")
    fixes = result.stdout.split("Fixes:", 1)[1]
    assert f"include:{REGION_INCLUDE} cannot be used" in fixes
    assert "would need" not in fixes
