"""docker/: what can be checked without a Docker engine. Every command in
compose.yaml parses with the real command line, every MAILER_* variable is
a configuration key with a valid value, and the image runs the console
script as a non-root user with a /healthz health check."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest

from mailer.cli import cli
from mailer.config import load_config

DOCKER = Path(__file__).parent.parent / "docker"
COMPOSE = (DOCKER / "compose.yaml").read_text()
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def compose_commands() -> list[list[str]]:
    """The ``command: [...]`` lists of compose.yaml (written as JSON arrays)."""
    found = re.findall(r"^\s+command:\s*(\[.*?\])", COMPOSE, flags=re.M | re.S)
    return [json.loads(" ".join(text.split())) for text in found]


def compose_environment() -> dict[str, str]:
    """Every MAILER_* variable of compose.yaml with ``${VAR:-default}``
    replaced by its default."""
    env: dict[str, str] = {}
    for name, raw in re.findall(r"^\s+(MAILER_[A-Z0-9_]+):\s*(.+?)\s*$", COMPOSE, flags=re.M):
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", raw).strip("\"'")
        env[name] = value
    return env


def parse_command_line(argv: list[str]) -> click.Context:
    """Parse like ``mailer ARGV`` would, without running anything; raises
    click.UsageError for an unknown command or option."""
    ctx = click.Context(cli, info_name="mailer")
    name, *rest = argv
    command = cli.get_command(ctx, name)
    if command is None:
        raise click.UsageError(f"no such command {name!r}")
    return command.make_context(name, rest, parent=ctx)


def test_compose_runs_an_api_without_worker_workers_and_a_sink() -> None:
    commands = compose_commands()
    roles = sorted(argv[0] for argv in commands)
    assert roles == ["serve", "sink", "worker"]
    serve = next(argv for argv in commands if argv[0] == "serve")
    assert "--no-worker" in serve
    assert re.search(r"worker:\n(?:.*\n)*?\s+deploy:\n\s+replicas: 2\n", COMPOSE)
    assert re.search(r"^  postgres:\n\s+image: postgres:", COMPOSE, flags=re.M)


@pytest.mark.parametrize("argv", compose_commands(), ids=lambda argv: argv[0])
def test_every_compose_command_parses_with_the_real_cli(argv: list[str]) -> None:
    ctx = parse_command_line(argv)
    assert ctx.command.name == argv[0]


def test_unknown_options_would_be_caught() -> None:
    with pytest.raises(click.UsageError):
        parse_command_line(["serve", "--no-such-option"])


def service_environment(service: str) -> dict[str, str]:
    """The MAILER_* variables one service of compose.yaml gets: the shared
    x-mailer-env block and its own, ``${VAR:-default}`` by its default."""
    shared = COMPOSE.partition("x-mailer-env: &mailer-env\n")[2].partition("\n\n")[0]
    block = re.search(rf"^  {service}:\n(.*?)(?=^  \S|^\S|\Z)", COMPOSE, flags=re.M | re.S)
    assert block is not None, service
    own = block.group(1)
    env: dict[str, str] = {}
    text = shared + "\n" + own if "<<: *mailer-env" in own else own
    for name, raw in re.findall(r"^\s+(MAILER_[A-Z0-9_]+):\s*(.+?)\s*$", text, flags=re.M):
        env[name] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", raw).strip("\"'")
    return env


def secret_files(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """``env`` with each *_FILE path moved to a file under ``tmp_path``
    holding what the secrets service would have made."""
    made = {
        "database_url": "postgresql://mailer:Zq0vW7pL3xR9tY2uK5nB8mC1dF4gH6jS@postgres:5432/mailer",
        "api_key": "aP3kQ9wE7rT1yU5iO2pA8sD4fG6hJ0kL",
        "unsubscribe_secret": "uN5sB2cR8iB4eS6eC0rE3tK7eY1mA9kE",
    }
    out = dict(env)
    for name, path in env.items():
        if name.endswith("_FILE"):
            base = path.rsplit("/", 1)[1]
            target = tmp_path / base
            target.write_text(made[base] + "\n")
            out[name] = str(target)
    return out


def test_compose_environment_is_a_valid_configuration(tmp_path: Path) -> None:
    env = compose_environment()
    assert env["MAILER_DATABASE_FILE"] == "/run/mailer-secrets/database_url"
    config = load_config(environ=secret_files(env, tmp_path))
    assert config.database.startswith("postgresql://")
    assert config.relay == "sink:2525"
    assert config.worker.metrics_port == 9108
    assert config.api.listen == "0.0.0.0:8025"


def test_compose_has_no_secret_in_it_and_every_role_starts_with_its_secrets(
    tmp_path: Path,
) -> None:
    # every secret is read from a file the secrets service makes
    for name, value in compose_environment().items():
        assert not re.search(r"(KEYS|SECRET|DATABASE)$", name), f"{name}={value} is inline"
    assert "POSTGRES_PASSWORD_FILE: /run/mailer-secrets/postgres_password" in COMPOSE
    assert re.search(r"^  secrets:\n", COMPOSE, flags=re.M)
    api = load_config(environ=secret_files(service_environment("api"), tmp_path))
    api.check_production(api=True, delivers=False)
    worker_env = service_environment("worker")
    # the workers build every message's one-click unsubscribe URL
    assert "MAILER_API__SECRET_FILE" in worker_env
    assert (
        worker_env["MAILER_API__PUBLIC_URL"] == service_environment("api")["MAILER_API__PUBLIC_URL"]
    )
    worker = load_config(environ=secret_files(worker_env, tmp_path))
    worker.check_production(api=False, delivers=True)
    assert worker.api.secret == api.api.secret


def test_image_is_slim_non_root_with_the_console_script_and_a_healthz_check() -> None:
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", DOCKERFILE, flags=re.M)
    assert re.search(r"^USER mailer$", DOCKERFILE, flags=re.M)
    assert re.search(r"^ENTRYPOINT \[\"mailer\"\]$", DOCKERFILE, flags=re.M)
    healthcheck = DOCKERFILE.partition("\nHEALTHCHECK ")[2].partition("\nENTRYPOINT")[0]
    assert "/healthz" in healthcheck
    assert '".[postgres]"' in DOCKERFILE
