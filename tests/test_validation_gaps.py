"""Validation gaps an adversarial tester found: each input is refused at
the door with the field named, or handled, and nothing is changed by a
refusal."""

from __future__ import annotations

import email.policy
import json
import shutil
from email import message_from_bytes
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.cli.spf import spf_identity
from mailer.config import load_config
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput, check_distribution, check_recipients
from mailer.errors import ConfigError, ValidationError, shown
from mailer.message.addresses import parse_address
from mailer.store.models import NewDistribution
from mailer.store.rules import hold_value
from tests.conftest import SURVEY, make_config, run_until_settled


def mailer(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), *args])
    return result.exit_code, result.output


def config_at(tmp_path: Path, database: Path) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{database}"\n')
    return path


# hold ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["not a domain!", "-x.example", "a..example", "x_y!.test"])
def test_hold_value_refuses_what_is_no_domain_name(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        hold_value("domain", value)
    assert err.value.field == "domain"


def test_hold_refuses_a_bad_domain_and_echoes_the_normalised_name(tmp_path: Path) -> None:
    database = tmp_path / "db.sqlite3"
    config = config_at(tmp_path, database)
    code, out = mailer(config, "hold", "not a domain!")
    assert code == 1
    assert "domain" in out
    assert "not a domain name" in out
    code, out = mailer(config, "hold", "Bücher.Example.")
    assert code == 0, out
    assert "held domain xn--bcher-kva.example" in out
    code, out = mailer(config, "hold", "--json")
    assert '"value": "xn--bcher-kva.example"' in out


@pytest.mark.parametrize(
    ("kind", "value", "where"),
    [
        ("domain", "exa mple.com", "U+0020 at 3"),
        # IDNA's mapping drops these: the name would become example.com
        ("domain", "exa\u200bmple.com", "U+200B at 3"),
        ("domain", "example.com\ufeff", "U+FEFF at 11"),
        ("domain", "exa\u2060mple.com", "U+2060 at 3"),
        ("domain", "bü\tcher.de", "U+0009 at 2"),
        ("distribution", "0190 abc", "U+0020 at 4"),
        ("distribution", "0190\u200babc", "U+200B at 4"),
    ],
)
def test_hold_value_refuses_spaces_and_invisible_characters(
    kind: str, value: str, where: str
) -> None:
    with pytest.raises(ValidationError) as err:
        hold_value(kind, value)
    assert err.value.field == kind
    assert where in err.value.reason
    assert "space or an invisible character" in err.value.reason


@pytest.mark.parametrize("name", ["exa mple.com", "exa\u200bmple.com"])
def test_hold_flush_and_release_refuse_a_name_with_spaces(tmp_path: Path, name: str) -> None:
    database = tmp_path / "db.sqlite3"
    config = config_at(tmp_path, database)
    for args in (["hold", name], ["flush", "--domain", name], ["release", name]):
        code, out = mailer(config, *args)
        assert code == 1, (args, out)
        assert "domain: " in out, (args, out)
        assert "is not a domain name" in out, (args, out)
        assert "space or an invisible character" in out, (args, out)
    code, out = mailer(config, "hold", "--distribution", "0190 abc")
    assert code == 1
    assert "distribution: " in out
    assert "space or an invisible character" in out
    # nothing was held, not even the name the IDNA mapping would have made
    code, out = mailer(config, "hold", "--json")
    assert code == 0, out
    assert json.loads(out) == []


# addresses ----------------------------------------------------------------------


def test_a_65_character_local_part_is_refused_64_is_taken() -> None:
    assert parse_address("email", "a" * 64 + "@example.com").local == "a" * 64
    with pytest.raises(ValidationError, match="local part longer than 64") as err:
        parse_address("email", "a" * 65 + "@example.com")
    assert err.value.field == "email"
    with pytest.raises(ValidationError, match="local part"):
        parse_address("email", '"' + "a b" * 22 + '"@example.com')


def test_an_overlong_sender_name_is_reported_as_sender_name() -> None:
    dist = NewDistribution(**{**SURVEY.__dict__, "sender_name": "N" * 200})
    with pytest.raises(ValidationError) as err:
        check_distribution(dist)
    assert err.value.field == "sender.name"


def test_an_overlong_recipient_name_is_reported_as_name() -> None:
    compiled = check_distribution(SURVEY)
    _, rejected = check_recipients(
        compiled, [RecipientInput("a@dest.test", "N" * 200, {"token": "t"})]
    )
    assert [r.field for r in rejected] == ["recipients[0].name"]


# config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[worker]\nmax_in_flight = true\n", "worker.max_in_flight"),
        ("smtp_port = 25.0\n", "smtp_port"),
        ("[worker]\nmax_in_flight = '500'\n", "worker.max_in_flight"),
        ("[limits.default]\nconnections = false\n", "limits.default.connections"),
    ],
)
def test_integer_settings_are_strict(tmp_path: Path, toml: str, key: str) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert err.value.key == key


def test_an_integer_from_the_environment_still_reads(tmp_path: Path) -> None:
    config = load_config(environ={"MAILER_WORKER__MAX_IN_FLIGHT": "42"})
    assert config.worker.max_in_flight == 42


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_bytes('hostname = "m\u00fcller.example"\n'.encode("cp1252"))
    with pytest.raises(ConfigError, match="not UTF-8") as err:
        load_config(path, environ={})
    assert err.value.key == "config"
    code, out = mailer(path, "stats")
    assert code == 1
    assert "Traceback" not in out
    assert "not UTF-8" in out


# read-only commands on a missing database -----------------------------------------


@pytest.mark.parametrize(
    "args",
    [("stats",), ("queue", "list"), ("suppress", "list"), ("replay", "--state", "failed")],
)
def test_reading_commands_do_not_create_a_missing_database(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    database = tmp_path / "typo.sqlite3"
    code, out = mailer(config_at(tmp_path, database), *args)
    assert code == 1
    assert "does not exist" in out
    assert "database" in out
    assert not database.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "mailer.toml"]


# keys -------------------------------------------------------------------------------


async def test_one_bad_key_file_stops_only_its_own_domains_signing(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(keys_dir, keys)
    (keys / "acme.test" / "broken.key").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    (keys / "other.test").mkdir(mode=0o700)
    (keys / "other.test" / "sel.key").write_bytes(b"\x00\x01 not a key")
    sink = make_sink("127.0.0.2")
    config = make_config(tmp_path, dns_server, smtp_port, keys)
    async with App(config) as app:
        await app.enqueue(SURVEY, [RecipientInput("a@dest.test", "A", {"token": "t"})])
        await run_until_settled(app)
    [received] = sink.messages
    msg = message_from_bytes(received.data, policy=email.policy.default)
    domains = {
        part.split("=", 1)[1].strip()
        for sig in msg.get_all("DKIM-Signature") or []
        for part in str(sig).split(";")
        if part.strip().startswith("d=")
    }
    # our own signature stands; acme.test's (one of its keys is bad) is left out
    assert domains == {"mailer.test"}


async def test_a_bad_key_of_our_own_domain_still_stops_the_worker(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path
) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(keys_dir, keys)
    (keys / "mailer.test" / "broken.key").write_text("garbage")
    async with App(make_config(tmp_path, dns_server, smtp_port, keys)) as app:
        with pytest.raises(Exception, match=r"broken\.key"):
            await app.engine()


# mailer spf ---------------------------------------------------------------------------


def test_spf_takes_an_idn_sender_in_its_a_label_form() -> None:
    assert spf_identity("hr@Bücher.example", None) == (
        "xn--bcher-kva.example",
        "hr@xn--bcher-kva.example",
        None,
    )


def test_spf_sender_without_local_part_is_postmaster_at_the_domain() -> None:
    # RFC 7208 §4.3
    assert spf_identity("bücher.example", None) == (
        "xn--bcher-kva.example",
        "postmaster@xn--bcher-kva.example",
        None,
    )
    assert spf_identity("", "MTA.Bücher.example") == (
        "mta.xn--bcher-kva.example",
        "",
        "mta.xn--bcher-kva.example",
    )


@pytest.mark.parametrize("sender", ["hr@not a domain", "bad name!", "hr@"])
def test_spf_refuses_a_sender_domain_that_is_no_domain_name(sender: str) -> None:
    with pytest.raises(ValidationError) as err:
        spf_identity(sender, None)
    assert err.value.field == "sender"


def test_spf_command_names_the_field_and_asks_no_dns_for_a_bad_sender(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    result = CliRunner().invoke(
        cli,
        ["spf", "192.0.2.10", "hr@not a domain"],
        env={"MAILER_NAMESERVERS": dns_server.address},
    )
    assert result.exit_code == 1
    assert "sender" in result.output
    assert "not a domain name" in result.output


def test_errors_name_a_value_as_typed_escaping_only_what_cannot_be_printed() -> None:
    assert shown("a\\b.com") == '"a\\b.com"'
    assert shown('ex"ample') == '"ex"ample"'
    assert shown("exa\u200bmple.com\r\n") == '"exa\\u200bmple.com\\r\\n"'


@pytest.mark.parametrize("name", ["bad name!", "a\\b.com", "münchen.de\\x"])
def test_a_name_that_is_no_domain_is_named_once_not_escaped_twice(
    tmp_path: Path, name: str
) -> None:
    # check-domain turned the name into DNS text (a space is "\032") and an
    # error then quoted that with repr, doubling every backslash
    config = config_at(tmp_path, tmp_path / "db.sqlite3")
    for args in (["check-domain", name], ["hold", name]):
        code, out = mailer(config, *args)
        assert code != 0, (args, out)
        assert f'"{name}" is not a domain name' in out, (args, out)
        assert "\\\\" not in out, (args, out)
        assert "\\032" not in out, (args, out)
