"""`mailer spf` and `mailer keys` against the loopback DNS server."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import cli
from mailer.dev.dnsserver import DNSServer


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def env_for(dns: DNSServer, keys: Path) -> dict[str, str]:
    return {"MAILER_NAMESERVERS": dns.address, "MAILER_KEYS_DIR": str(keys)}


def test_spf_json_reports_result_mechanism_and_lookups(tmp_path: Path) -> None:
    zone = {
        "acme.test": {"TXT": ["v=spf1 include:_spf.netigate.se ~all"]},
        "_spf.netigate.se": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    }
    with DNSServer(zone) as dns:
        code, out = invoke(env_for(dns, tmp_path), "spf", "192.0.2.10", "hr@acme.test", "--json")
        assert code == 0, out
        data = json.loads(out)
        assert data["result"] == "pass"
        assert data["mechanism"] == "include:_spf.netigate.se"
        assert data["lookups"] == 1
        assert "explanation" in data

        code, out = invoke(env_for(dns, tmp_path), "spf", "203.0.113.9", "hr@acme.test")
        assert code == 0, out
        assert "spf=softfail" in out
        assert "~all" in out


def test_spf_with_empty_sender_checks_the_helo_identity(tmp_path: Path) -> None:
    zone = {"mta.acme.test": {"TXT": ["v=spf1 ip4:192.0.2.10 -all"]}}
    with DNSServer(zone) as dns:
        code, out = invoke(
            env_for(dns, tmp_path), "spf", "192.0.2.10", "", "--helo", "mta.acme.test", "--json"
        )
        assert code == 0, out
        assert json.loads(out)["result"] == "pass"
        code, out = invoke(env_for(dns, tmp_path), "spf", "192.0.2.10", "")
        assert code != 0
        assert "helo" in out


def test_keys_generate_then_check_against_the_published_record(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with DNSServer({}) as dns:
        env = env_for(dns, keys)
        code, out = invoke(env, "keys", "generate", "acme.test", "--selector", "s1")
        assert code == 0, out
        assert (keys / "acme.test" / "s1.key").stat().st_mode & 0o777 == 0o600
        strings = re.findall(r'"([^"]*)"', out)
        assert all(len(s) <= 255 for s in strings)
        record = "".join(strings)
        assert record.startswith("v=DKIM1; k=rsa; p=")

        code, out = invoke(env, "keys", "check", "acme.test")
        assert code == 1
        assert "missing" in out

        dns.set("s1._domainkey.acme.test", "TXT", [record])
        code, out = invoke(env, "keys", "check", "acme.test", "--selector", "s1")
        assert code == 0, out
        assert out.startswith("ok")

        tampered = record[:-12] + ("A" if record[-12] != "A" else "B") + record[-11:]
        dns.set("s1._domainkey.acme.test", "TXT", [tampered])
        code, out = invoke(env, "keys", "check", "acme.test")
        assert code == 1
        assert "PROBLEM" in out

        dns.set("s1._domainkey.acme.test", "TXT", ["v=DKIM1; k=rsa; p="])
        code, out = invoke(env, "keys", "check", "acme.test")
        assert code == 1
        assert "revoked" in out

        code, out = invoke(env, "keys", "show", "acme.test")
        assert code == 0
        assert "s1._domainkey.acme.test" in out


def test_keys_generate_refuses_to_overwrite_and_bad_domains(tmp_path: Path) -> None:
    with DNSServer({}) as dns:
        env = env_for(dns, tmp_path / "keys")
        assert invoke(env, "keys", "generate", "acme.test", "--type", "ed25519")[0] == 0
        code, out = invoke(env, "keys", "generate", "acme.test", "--type", "ed25519")
        assert code != 0
        assert "selector" in out
        code, out = invoke(env, "keys", "generate", "not a domain")
        assert code != 0
        assert "domain" in out


def test_spf_says_nxdomain_for_a_domain_that_does_not_exist(tmp_path: Path) -> None:
    zone = {"acme.test": {"MX": [(10, "mx.acme.test")]}}
    with DNSServer(zone) as dns:
        code, out = invoke(env_for(dns, tmp_path), "spf", "192.0.2.10", "hr@gone.test")
        assert code == 0, out
        assert "spf=none" in out
        assert "explanation: gone.test does not exist (NXDOMAIN)" in out
        assert "mechanism" not in out
        # a domain that exists but publishes no record says so instead
        code, out = invoke(env_for(dns, tmp_path), "spf", "192.0.2.10", "hr@acme.test")
        assert code == 0, out
        assert "explanation: no SPF record published for acme.test" in out


def test_spf_temperror_prints_no_mechanism(tmp_path: Path) -> None:
    with DNSServer({"acme.test": {"TXT": ["v=spf1 -all"]}}) as dns:
        dns.fail("acme.test")
        code, out = invoke(
            env_for(dns, tmp_path) | {"MAILER_WORKER__DNS_TIMEOUT": "2"},
            "spf", "192.0.2.10", "hr@acme.test",
        )  # fmt: skip
        assert code == 0, out
        assert "spf=temperror" in out
        assert "mechanism" not in out
        assert "explanation: DNS error" in out


def test_spf_neutral_default_says_nothing_matched(tmp_path: Path) -> None:
    with DNSServer({"acme.test": {"TXT": ["v=spf1 ip4:198.51.100.1"]}}) as dns:
        code, out = invoke(env_for(dns, tmp_path), "spf", "192.0.2.10", "hr@acme.test")
        assert code == 0, out
        assert "spf=neutral" in out
        assert "mechanism: (none matched: the default result)" in out
