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


def test_compose_environment_is_a_valid_configuration() -> None:
    env = compose_environment()
    assert env["MAILER_DATABASE"].startswith("postgresql://")
    config = load_config(environ=env)
    assert config.database.startswith("postgresql://")
    assert config.relay == "sink:2525"
    assert config.worker.metrics_port == 9108
    assert config.api.listen == "0.0.0.0:8025"


def test_image_is_slim_non_root_with_the_console_script_and_a_healthz_check() -> None:
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", DOCKERFILE, flags=re.M)
    assert re.search(r"^USER mailer$", DOCKERFILE, flags=re.M)
    assert re.search(r"^ENTRYPOINT \[\"mailer\"\]$", DOCKERFILE, flags=re.M)
    healthcheck = DOCKERFILE.partition("\nHEALTHCHECK ")[2].partition("\nENTRYPOINT")[0]
    assert "/healthz" in healthcheck
    assert '".[postgres]"' in DOCKERFILE
