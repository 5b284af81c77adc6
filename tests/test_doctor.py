"""``mailer doctor`` against zones on the loopback DNS server: reverse DNS
forward-confirmed and matching the EHLO name, and each public address in
the region's SPF include."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.checkdomain.doctor import fcrdns_verdict, spf_verdict
from mailer.cli import cli
from mailer.dev.dnsserver import DNSServer
from mailer.identity.check_host import SPFResult

ZONE = {
    "_spf.netigate.se": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]},
    "10.2.0.192.in-addr.arpa": {"PTR": ["mta1.mailer.test."]},
    "mta1.mailer.test": {"A": ["192.0.2.10"]},
    "11.2.0.192.in-addr.arpa": {"PTR": ["mta2.mailer.test."]},
    "mta2.mailer.test": {"A": ["192.0.2.99"]},
}


@pytest.fixture
def zone() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        yield server


def run_doctor(tmp_path: Path, zone: DNSServer, sources: str) -> tuple[int, dict]:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'hostname = "mailer.test"\nnameservers = ["{zone.address}"]\n'
        f'database = "{tmp_path / "q.sqlite3"}"\n{sources}'
    )
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor", "--json"])
    return result.exit_code, json.loads(result.output)


def test_doctor_passes_a_source_with_fcrdns_and_spf_include(
    tmp_path: Path, zone: DNSServer
) -> None:
    code, report = run_doctor(
        tmp_path, zone, '[[sources]]\npublic_ip = "192.0.2.10"\nehlo = "mta1.mailer.test"\n'
    )
    assert code == 0
    [source] = report["sources"]
    assert source["ok"] is True
    assert {f["check"] for f in source["findings"]} == {"fcrdns", "spf-include"}


def test_doctor_names_what_is_wrong_for_each_entry(tmp_path: Path, zone: DNSServer) -> None:
    code, report = run_doctor(
        tmp_path,
        zone,
        '[[sources]]\npublic_ip = "192.0.2.10"\nehlo = "mta9.mailer.test"\n'
        '[[sources]]\npublic_ip = "192.0.2.11"\nehlo = "mta2.mailer.test"\n'
        '[[sources]]\npublic_ip = "192.0.2.12"\n',
    )
    assert code == 1
    first, second, third = ({f["check"]: f for f in s["findings"]} for s in report["sources"])
    assert not first["fcrdns"]["ok"]
    assert "the EHLO name is mta9.mailer.test" in first["fcrdns"]["detail"]
    assert first["spf-include"]["ok"]
    assert "does not resolve back to 192.0.2.11" in second["fcrdns"]["detail"]
    assert "192.0.2.11 is not in _spf.netigate.se (spf=fail" in second["spf-include"]["detail"]
    assert "192.0.2.12 has no PTR record" in third["fcrdns"]["detail"]


def test_doctor_text_output_marks_each_check(tmp_path: Path, zone: DNSServer) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'hostname = "mta1.mailer.test"\noutbound_ip = "192.0.2.10"\n'
        f'nameservers = ["{zone.address}"]\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(path), "doctor"])
    assert result.exit_code == 0, result.output
    assert "192.0.2.10 (EHLO mta1.mailer.test)" in result.output
    assert "ok   fcrdns: 192.0.2.10 ↔ mta1.mailer.test" in result.output


def test_fcrdns_verdict_accepts_an_ipv6_address_written_differently() -> None:
    finding = fcrdns_verdict(
        "2001:db8::25", "mx.test", ["mx.test"], {"mx.test": ["2001:0db8:0:0::25"]}
    )
    assert finding.ok


def test_spf_verdict_explains_a_softfail() -> None:
    finding = spf_verdict("192.0.2.1", "_spf.x.test", SPFResult.SOFTFAIL)
    assert not finding.ok
    assert "spf=softfail" in finding.detail
