"""Configuration: TOML file, MAILER_* overrides, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.config import TLSPolicy, load_config
from mailer.errors import ConfigError


def test_defaults_are_the_azure_region_on_sqlite() -> None:
    config = load_config(environ={})
    assert config.region == "azure"
    assert config.region_settings.neutral_sender == "survey@netigate.se"
    assert config.region_settings.spf_include == "_spf.netigate.se"
    assert config.database.endswith(".sqlite3")
    assert config.smtp_port == 25
    assert config.tls.for_domain("any.example") is TLSPolicy.ENCRYPT
    assert config.dkim_domain == "netigate.se"


def test_de_preset_and_per_domain_settings_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(
        'region = "de"\n'
        'nameservers = ["127.0.0.1:5353"]\n'
        "[tls]\n"
        'domains = { "bank.example" = "verify" }\n'
        '[limits.domains."big.example"]\n'
        "connections = 2\n"
    )
    config = load_config(path, environ={})
    assert config.region_settings.neutral_sender == "survey@ntgt.de"
    assert config.dkim_domain == "ntgt.de"
    assert config.tls.for_domain("bank.example") is TLSPolicy.VERIFY
    assert config.limits.for_domain("big.example").connections == 2
    assert config.limits.for_domain("small.example").connections == 10


def test_environment_overrides_the_file_with_nested_keys_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text("smtp_port = 25\n")
    config = load_config(
        path,
        environ={
            "MAILER_SMTP_PORT": "2525",
            "MAILER_RETRY__MAX_AGE": "3600",
            "MAILER_NAMESERVERS": "127.0.0.1:5353, 127.0.0.2:5353",
            "MAILER_CONFIG": str(path),
            "MAILER_TEST_POSTGRES_DSN": "postgresql://x@127.0.0.1/test",
            "MAILER_BENCH_DATABASE": "postgresql://x@127.0.0.1/test",
        },
    )
    assert config.smtp_port == 2525
    assert config.retry.max_age == 3600
    assert config.nameservers == ("127.0.0.1:5353", "127.0.0.2:5353")


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"MAILER_SMTP_PORT": "0"}, "smtp_port"),
        ({"MAILER_REGION": "mars"}, "region"),
        ({"MAILER_OUTBOUND_IP": "not-an-ip"}, "outbound_ip"),
        ({"MAILER_NAMESERVERS": "127.0.0.1:99999"}, "nameservers"),
        ({"MAILER_RETRY__JITTER": "2"}, "retry.jitter"),
        ({"MAILER_TLS__POLICY": "maybe"}, "tls.policy"),
        ({"MAILER_DKIM__SIGNING_THREADS": "-1"}, "dkim.signing_threads"),
        ({"MAILER_NO_SUCH_KEY": "1"}, "no_such_key"),
    ],
)
def test_bad_values_are_refused_naming_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ=environ)
    assert err.value.key == key


def test_missing_or_broken_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("region = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, environ={})
