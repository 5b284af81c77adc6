"""Entry point and shared plumbing of the command line."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from mailer import loop
from mailer.config import LOG_FORMAT_ENV, Config, load_config
from mailer.errors import MailerError
from mailer.logs import LogFormat

T = TypeVar("T")


class Context:
    def __init__(self, config_path: str | None, log_format: LogFormat = "text") -> None:
        self.config_path = config_path
        self.log_format: LogFormat = log_format
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


pass_ctx = click.make_pass_decorator(Context)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine (errors are reported by MailerGroup)."""
    return loop.run(coro)


def on_stop_signals(stop: Callable[[], None]) -> None:
    """SIGTERM and SIGINT ask for a graceful stop (in-flight sends finish)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


class MailerGroup(click.Group):
    """Every command's MailerError (bad config key, invalid input naming its
    field, store trouble) ends as a one-line error and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MailerError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=MailerGroup, context_settings={"help_option_names": ["-h", "--help"]})
# the distribution is published as survey-mailer (`mailer` on PyPI is another
# project); the version is the installed distribution's
@click.version_option(package_name="survey-mailer", prog_name="mailer")
@click.option(
    "--config",
    "config_path",
    envvar="MAILER_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (default: built-in defaults + MAILER_* variables).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar=LOG_FORMAT_ENV,
    show_default=True,
    help="Log lines on stderr: text, or one JSON object per line (Docker, journald).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_format: LogFormat) -> None:
    """Outbound mail for survey invitations: STARTTLS only, durable queue."""
    ctx.obj = Context(config_path, log_format)


def register_commands() -> None:
    """Import the command modules; each registers its commands on ``cli``."""
    from mailer.cli import (  # noqa: F401
        accounts,
        bench,
        check_domain,
        control,
        doctor,
        inbound,
        keys,
        ops,
        queue,
        send,
        serve,
        sink,
        spf,
        suppress,
        tlsrpt,
        webhooks,
        worker,
    )


def main() -> None:
    register_commands()
    cli(prog_name="mailer")
