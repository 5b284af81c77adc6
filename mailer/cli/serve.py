"""``mailer serve``: the HTTP API and the engine in one process.

``--no-worker`` serves the API alone (separate ``mailer worker`` processes
deliver). ``--dev`` makes a machine-local set-up in which nothing leaves
the machine: a STARTTLS sink that prints one line per message, every
message relayed to it, a loopback DNS server publishing a throw-away DKIM
key and the sample sender's SPF record, and API credentials made up for
the run unless configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from mailer import logs, loop
from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.cli.main import Context, cli, on_stop_signals, pass_ctx, run
from mailer.client import Client
from mailer.config import Config, load_config
from mailer.delivery.engine import Engine
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.errors import ConfigError
from mailer.message.keys import KeyStore, dns_name, dns_record_value
from mailer.sink import DevSink, SinkOptions, format_line
from mailer.sink.options import parse_host_port
from mailer.store.models import NewDistribution

SAMPLE = NewDistribution(
    account="beispiel",
    sender_address="umfragen@kunde.test",
    sender_name="Müller & Söhne GmbH",
    subject="Ihre Meinung zählt, {{ name }}: kurze Umfrage zur Zufriedenheit",
    html=(
        "<p>Grüß Gott {{ name }},</p>"
        "<p>wie zufrieden sind Sie mit unserem Service? Die Umfrage dauert drei Minuten.</p>"
        "<p><a href='https://umfrage.kunde.test/s/{{ token }}'>Zur Umfrage</a></p>"
    ),
    text=None,
    tags=("sample",),
)
SAMPLE_RECIPIENTS = (
    RecipientInput("anna.schaefer@beispiel.test", "Anna Schäfer", {"token": "a1"}),
    RecipientInput("joerg.mueller@example.test", "Jörg Müller", {"token": "b2"}),
    RecipientInput("zoe.weiss@umfrage.test", "Zoë Weiß", {"token": "c3"}),
)


@dataclass
class _Dev:
    """What ``--dev`` started, and the config pointing at it."""

    config: Config
    sink: DevSink


@contextlib.contextmanager
def _dev_setup(ctx: Context, api_listen: tuple[str, int], sink_listen: str) -> Iterator[_Dev]:
    base = ctx.config
    sink_host, sink_port = parse_host_port(sink_listen, "--sink")
    dev_dir = Path(base.database).parent / "dev"
    keys = KeyStore(dev_dir / "keys")
    if not keys.list(base.dkim_domain):
        keys.generate(base.dkim_domain, "dev")
    dkim_records = {dns_name(k.domain, k.selector): dns_record_value(k) for k in keys.list()}
    sender_domain = SAMPLE.sender_address.rpartition("@")[2]
    zone: dict[str, dict[str, Any]] = {name: {"TXT": [v]} for name, v in dkim_records.items()}
    zone[sender_domain] = {"TXT": [f"v=spf1 ip4:{base.outbound_ip} -all"]}
    api = base.api
    host, port = api_listen
    overrides: dict[str, Any] = {
        "relay": f"{sink_host}:{sink_port}",
        "tls": {"policy": "encrypt"},
        "keys_dir": str(dev_dir / "keys"),
        "api": {
            "keys": list(api.keys) or [secrets.token_urlsafe(24)],
            "secret": api.secret or secrets.token_urlsafe(32),
            "public_url": api.public_url or f"https://localhost:{port}",
            "listen": f"{host}:{port}",
        },
    }
    with DNSServer(zone) as dns:
        overrides["nameservers"] = [dns.address]
        config = load_config(ctx.config_path, overrides=overrides)
        # the sink checks DKIM against the dev DNS, like a receiver would
        sink = DevSink.for_config(
            config,
            SinkOptions(
                host=sink_host,
                port=sink_port,
                hostname="sink.localhost",
                maildir=dev_dir / "Maildir",
            ),
            on_message=lambda message: click.echo(format_line(message)),
        )
        try:
            sink.start()
        except OSError as exc:
            raise ConfigError("--sink", f"cannot listen on {sink_listen}: {exc.strerror}") from exc
        try:
            yield _Dev(config, sink)
        finally:
            sink.stop()


async def _enqueue_sample(app: App) -> None:
    accepted = await Client(app).enqueue(SAMPLE, SAMPLE_RECIPIENTS)
    click.echo(
        f"sample distribution {accepted.distribution_id}: {len(accepted.sends)} recipients queued"
    )


async def _run_until_stopped(server: ApiServer, engine: Engine | None) -> None:
    """Until SIGTERM/SIGINT, or until the API or the engine ends by itself;
    then both stop: requests in progress and sends in an SMTP transaction
    finish, the engine's other leases are released."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    engine_run = asyncio.create_task(engine.run()) if engine is not None else None
    waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(server.wait())}
    try:
        await asyncio.wait(
            waiters | ({engine_run} if engine_run else set()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        server.stop()
        for task in waiters:
            task.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        if engine is not None and engine_run is not None:
            engine.stop()
            await engine_run


async def _serve(
    config: Config,
    listen: tuple[str, int],
    *,
    worker: bool,
    sample: bool,
    dev: _Dev | None,
    log_level: str,
) -> None:
    async with App(config) as app:
        engine = await app.engine() if worker else None
        host, port = listen
        server = ApiServer(create_api(app), host, port, log_level=log_level)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                "--listen", f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        loop.settle_heap()
        try:
            click.echo(f"API on {server.url}  (docs: {server.url}/docs)")
            if dev is not None:
                click.echo(f"API key: {config.api.keys[0]}")
                click.echo(
                    f"sink on {dev.sink.address}: every message goes there, one line each; "
                    f"Maildir {dev.sink.maildir}"
                )
            click.echo("engine running" if engine is not None else "no engine (--no-worker)")
            if sample:
                await _enqueue_sample(app)
            await _run_until_stopped(server, engine)
        finally:
            server.stop()
            await server.wait()


def _check_production(config: Config) -> None:
    if not config.api.keys:
        raise ConfigError("api.keys", "at least one API key is required (MAILER_API__KEYS)")
    if config.api.secret is None or config.api.public_url is None:
        click.echo(
            "warning: api.secret or api.public_url not set: distributions without their own "
            "unsubscribe_url get no List-Unsubscribe header",
            err=True,
        )


@cli.command()
@click.option("--listen", default=None, metavar="HOST:PORT", help="API address [api.listen].")
@click.option("--no-worker", is_flag=True, help="The API alone; `mailer worker` delivers.")
@click.option(
    "--dev", is_flag=True, help="Local set-up: sink, relay to it, loopback DNS, dev DKIM key."
)
@click.option(
    "--sink",
    "sink_listen",
    default="127.0.0.1:2525",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the --dev sink listens.",
)
@click.option("--sample", is_flag=True, help="Enqueue a small sample distribution at start.")
@click.option("-v", "--verbose", is_flag=True)
@pass_ctx
def serve(
    ctx: Context,
    listen: str | None,
    no_worker: bool,
    dev: bool,
    sink_listen: str,
    sample: bool,
    verbose: bool,
) -> None:
    """Serve the HTTP API and run the engine in one process."""
    logs.setup(logging.INFO if verbose else logging.WARNING, ctx.log_format)
    log_level = "info" if verbose else "warning"
    address = parse_host_port(listen, "--listen") if listen else ctx.config.api.listen_address
    if not dev:
        _check_production(ctx.config)
        run(
            _serve(
                ctx.config,
                address,
                worker=not no_worker,
                sample=sample,
                dev=None,
                log_level=log_level,
            )
        )
        return
    with _dev_setup(ctx, address, sink_listen) as setup:
        run(
            _serve(
                setup.config,
                address,
                worker=not no_worker,
                sample=sample,
                dev=setup,
                log_level=log_level,
            )
        )
