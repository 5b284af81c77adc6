"""Secrets: read from files (``MAILER_…_FILE``, as Docker secrets are
given), and refused by ``serve`` and ``worker`` outside ``--dev`` when they
were published as defaults, are empty or are short; a delivering node must
be able to build the one-click unsubscribe URL of every message."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli.main import cli, register_commands
from mailer.config import Config, load_config
from mailer.errors import ConfigError

register_commands()

GOOD_SECRET = "k9VtQ2r7uXc1Lm4pZs8Bw3Hn6Jy0Df5Ga"  # 34 bytes
GOOD_KEY = "Api-Key-0123456789-abcdefghijklmnop"
PRODUCTION = {
    "MAILER_API__KEYS": GOOD_KEY,
    "MAILER_API__SECRET": GOOD_SECRET,
    "MAILER_API__PUBLIC_URL": "https://mailer.example.test",
}


def config(**environ: str) -> Config:
    return load_config(environ={**PRODUCTION, **environ})


def refusal(cfg: Config, *, api: bool = True, delivers: bool = True) -> str:
    with pytest.raises(ConfigError) as caught:
        cfg.check_production(api=api, delivers=delivers)
    return caught.value.key


# from files ----------------------------------------------------------------------


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(GOOD_SECRET + "\n")
    (tmp_path / "keys").write_text(f"{GOOD_KEY}\n{GOOD_KEY}-two\n")
    (tmp_path / "db").write_text("postgresql://mailer:s3cr3t-from-file@db:5432/mailer\n")
    cfg = load_config(
        environ={
            "MAILER_API__SECRET_FILE": str(tmp_path / "secret"),
            "MAILER_API__KEYS_FILE": str(tmp_path / "keys"),
            "MAILER_DATABASE_FILE": str(tmp_path / "db"),
        }
    )
    assert cfg.api.secret == GOOD_SECRET
    assert cfg.api.keys == (GOOD_KEY, f"{GOOD_KEY}-two")
    assert cfg.database == "postgresql://mailer:s3cr3t-from-file@db:5432/mailer"


def test_a_secret_file_of_digits_stays_text(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("1" * 40)
    cfg = load_config(environ={"MAILER_API__SECRET_FILE": str(tmp_path / "secret")})
    assert cfg.api.secret == "1" * 40


def test_an_unreadable_secret_file_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"MAILER_API__SECRET_FILE": str(tmp_path / "missing")})
    assert caught.value.key == "MAILER_API__SECRET_FILE"
    assert "cannot read" in caught.value.reason


def test_a_secret_given_both_ways_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(GOOD_SECRET)
    with pytest.raises(ConfigError) as caught:
        load_config(
            environ={
                "MAILER_API__SECRET_FILE": str(tmp_path / "secret"),
                "MAILER_API__SECRET": GOOD_SECRET,
            }
        )
    assert caught.value.key == "MAILER_API__SECRET_FILE"


# refused outside --dev ----------------------------------------------------------


def test_a_production_config_passes() -> None:
    config().check_production(api=True, delivers=True)


@pytest.mark.parametrize(
    "secret",
    ["dev-unsubscribe-secret-change-me", "dev-api-key-change-me", "short-but-valid-16"],
)
def test_known_default_or_short_unsubscribe_secret_is_refused(secret: str) -> None:
    assert refusal(config(MAILER_API__SECRET=secret)) == "api.secret"
    assert refusal(config(MAILER_API__SECRET=secret), api=False) == "api.secret"


def test_an_empty_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError) as caught:
        load_config(environ={"MAILER_API__SECRET_FILE": str(tmp_path / "empty")})
    assert caught.value.key == "api.secret"


@pytest.mark.parametrize("key", ["dev-api-key-change-me", "sixteen-chars-ok!"])
def test_known_default_or_short_api_key_is_refused_by_serve(key: str) -> None:
    assert refusal(config(MAILER_API__KEYS=key)) == "api.keys[0]"
    # a worker serves no API: its keys are not its business
    config(MAILER_API__KEYS=key).check_production(api=False, delivers=True)


def test_the_published_database_password_is_refused() -> None:
    cfg = config(MAILER_DATABASE="postgresql://mailer:mailer@postgres:5432/mailer")
    assert refusal(cfg) == "database"
    # trust or peer authentication: no password at all is no published one
    config(MAILER_DATABASE="postgresql://127.0.0.1/test").check_production(api=True, delivers=True)


@pytest.mark.parametrize("missing", ["MAILER_API__SECRET", "MAILER_API__PUBLIC_URL"])
def test_a_delivering_node_without_unsubscribe_settings_is_refused(missing: str) -> None:
    environ = {k: v for k, v in PRODUCTION.items() if k != missing}
    cfg = load_config(environ=environ)
    assert refusal(cfg, api=False) == missing.removeprefix("MAILER_").lower().replace("__", ".")


def test_unsubscribe_explicitly_switched_off_lets_a_worker_start_without_them() -> None:
    cfg = load_config(environ={"MAILER_API__UNSUBSCRIBE": "false"})
    cfg.check_production(api=False, delivers=True)


def test_public_url_is_https_or_http_on_localhost_only() -> None:
    assert config(MAILER_API__PUBLIC_URL="http://127.0.0.1:8025").api.public_url == (
        "http://127.0.0.1:8025"
    )
    assert config(MAILER_API__PUBLIC_URL="http://localhost:8025/").api.public_url == (
        "http://localhost:8025"
    )
    with pytest.raises(ConfigError) as caught:
        config(MAILER_API__PUBLIC_URL="http://mailer.example.test")
    assert caught.value.key == "api.public_url"


# the commands -------------------------------------------------------------------


def test_a_bare_worker_refuses_to_start_without_unsubscribe_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--drain"], env={"MAILER_DATABASE": str(tmp_path / "db.sqlite3")}
    )
    assert result.exit_code == 1
    assert "api.secret" in result.output
    assert "api.unsubscribe = false" in result.output
    assert not (tmp_path / "db.sqlite3").exists()


def test_serve_refuses_the_published_compose_secret(tmp_path: Path) -> None:
    env = {
        **PRODUCTION,
        "MAILER_API__SECRET": "dev-unsubscribe-secret-change-me",
        "MAILER_DATABASE": str(tmp_path / "db.sqlite3"),
    }
    result = CliRunner().invoke(cli, ["serve", "--listen", "127.0.0.1:9"], env=env)
    assert result.exit_code == 1
    assert "api.secret" in result.output
    assert "published default" in result.output
