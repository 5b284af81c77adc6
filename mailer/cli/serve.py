"""``mailer serve``: the HTTP API and the engine in one process.

``--no-worker`` serves the API alone (separate ``mailer worker`` processes
deliver). ``--dev`` makes a machine-local set-up in which nothing leaves
the machine: a STARTTLS sink that prints one line per message, every
message relayed to it (with its inbox in the browser, ``--inbox``), a
loopback DNS server publishing a throw-away DKIM key and the sample
sender's SPF record, and API credentials made up for the run unless
configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from fastapi import FastAPI

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
from mailer.feedback.processor import describe
from mailer.feedback.service import FeedbackService
from mailer.message.keys import KeyStore, dns_name, dns_record_value
from mailer.sink import DevSink, SinkOptions, format_line
from mailer.sink.faults import Faults
from mailer.sink.options import parse_listen
from mailer.sink.runner import pick_port
from mailer.sink.web import create_app as create_inbox
from mailer.store import is_postgres
from mailer.store.models import NewDistribution
from mailer.ui import create_console
from mailer.webhooks import Dispatcher

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
    language="de",
)
SAMPLE_RECIPIENTS = (
    RecipientInput("anna.schaefer@beispiel.test", "Anna Schäfer", {"token": "a1"}),
    RecipientInput("joerg.mueller@example.test", "Jörg Müller", {"token": "b2"}),
    RecipientInput("zoe.weiss@umfrage.test", "Zoë Weiß", {"token": "c3"}),
)
# A customer domain without SPF: its mail goes out under the neutral sender
# with our envelope, so its bounces and complaints come back to us; in
# --dev the sink returns two of these as DSNs and one as a complaint.
SAMPLE_NEUTRAL = NewDistribution(
    account="beispiel",
    sender_address="info@ohne-spf.test",
    sender_name="Verein ohne SPF",
    subject="Mitgliederbefragung, {{ name }}",
    html="<p>Hallo {{ name }},</p><p>bitte nehmen Sie an unserer Befragung teil.</p>",
    text=None,
    tags=("sample",),
    language="de",
)
SAMPLE_NEUTRAL_RECIPIENTS = (
    RecipientInput("karl.unbekannt@beispiel.test", "Karl", {"token": "d4"}),
    RecipientInput("lea.lang@example.test", "Lea", {"token": "e5"}),
    RecipientInput("max.voll@umfrage.test", "Max", {"token": "f6"}),
    RecipientInput("nina.nein@beispiel.test", "Nina", {"token": "g7"}),
)
# --dev rehearsal: with this seed the four draws are bounce, none, bounce,
# complaint (the sink draws once per message of our envelope)
_DEV_BOUNCE, _DEV_COMPLAIN, _DEV_SEED = 0.5, 0.25, 8


def dev_secret(path: Path) -> str:
    """The dev unsubscribe secret kept in ``path`` (made, mode 0600, on
    first use), so that links in mail from earlier runs keep working.
    Raises ConfigError when the file cannot be read or made."""
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("api.secret", f"cannot read the dev secret {path}: {exc}") from exc
    secret = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # another dev server made it meanwhile
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError("api.secret", f"cannot keep a dev secret in {path}: {exc}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(secret + "\n")
    return secret


def dev_public_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches the dev API: plain HTTP, as
    the dev server speaks it."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback and ":" not in host:
        return f"http://{host}:{port}"
    return f"http://localhost:{port}"


@dataclass
class _Dev:
    """What ``--dev`` started, and the config pointing at it."""

    config: Config
    sink: DevSink
    inbox: tuple[str, int] | None


def dev_directory(database: str) -> Path:
    """Where ``--dev`` keeps its keys, Maildir and unsubscribe secret: beside
    an SQLite store; for a PostgreSQL store (a URL, no directory), where the
    default SQLite store would be."""
    store = Config.model_fields["database"].default if is_postgres(database) else database
    return Path(store).parent / "dev"


@contextlib.contextmanager
def _dev_setup(
    ctx: Context,
    api_listen: tuple[str, int],
    sink_listen: str,
    inbox: str | None,
    inbound_listen: str,
) -> Iterator[_Dev]:
    base = ctx.config
    sink_host, sink_port = parse_listen(sink_listen, "--sink")
    inbox_address = parse_listen(inbox, "--inbox") if inbox else None
    inbound_host, inbound_port = parse_listen(inbound_listen, "--inbound")
    if inbound_port == 0:
        # the sink must know where returned mail goes before it starts
        inbound_port = pick_port([inbound_host])
    dev_dir = dev_directory(base.database)
    keys = KeyStore(dev_dir / "keys")
    if not keys.list(base.dkim_domain):
        keys.generate(base.dkim_domain, "dev")
    dkim_records = {dns_name(k.domain, k.selector): dns_record_value(k) for k in keys.list()}
    sender_domain = SAMPLE.sender_address.rpartition("@")[2]
    zone: dict[str, dict[str, Any]] = {name: {"TXT": [v]} for name, v in dkim_records.items()}
    zone[sender_domain] = {"TXT": [f"v=spf1 ip4:{base.outbound_ip} -all"]}
    # our own envelope domain passes SPF too, as the published records make it
    zone[base.bounce_domain] = {"TXT": [f"v=spf1 ip4:{base.outbound_ip} -all"]}
    api = base.api
    host, port = api_listen
    overrides: dict[str, Any] = {
        "relay": f"{sink_host}:{sink_port}",
        "tls": {"policy": "encrypt"},
        "keys_dir": str(dev_dir / "keys"),
        "api": {
            "keys": list(api.keys) or [secrets.token_urlsafe(24)],
            "secret": api.secret or dev_secret(dev_dir / "unsubscribe.secret"),
            "public_url": api.public_url or dev_public_url(host, port),
            "listen": f"{host}:{port}",
        },
        "inbound": {"listen": f"{inbound_host}:{inbound_port}"},
        "feedback": {"secret": base.feedback.secret or secrets.token_urlsafe(32)},
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
                bounce_after=_DEV_BOUNCE,
                complain=_DEV_COMPLAIN,
                faults=Faults(seed=_DEV_SEED),
                feedback_to=(inbound_host, inbound_port),
                feedback_domains=frozenset({config.bounce_domain}),
            ),
            on_message=lambda message: click.echo(format_line(message)),
        )
        try:
            sink.start()
        except OSError as exc:
            raise ConfigError("--sink", f"cannot listen on {sink_listen}: {exc.strerror}") from exc
        try:
            yield _Dev(config, sink, inbox_address)
        finally:
            sink.stop()


async def _enqueue_sample(app: App) -> None:
    for distribution, recipients in (
        (SAMPLE, SAMPLE_RECIPIENTS),
        (SAMPLE_NEUTRAL, SAMPLE_NEUTRAL_RECIPIENTS),
    ):
        accepted = await Client(app).enqueue(distribution, recipients)
        click.echo(
            f"sample distribution {accepted.distribution_id}: "
            f"{len(accepted.sends)} recipients queued"
        )


def service_api(app: App) -> FastAPI:
    """What ``mailer serve`` answers on HTTP: the API, with the operator
    console mounted at ``/ui`` (its pages set their own, stricter,
    Content-Security-Policy, which the API's headers keep)."""
    api = create_api(app)
    cfg = app.config.api
    api.mount("/ui", create_console(app, keys=cfg.keys, secret=cfg.secret))
    return api


async def _run_until_stopped(
    server: ApiServer, engine: Engine | None, dispatcher: Dispatcher | None
) -> None:
    """Until SIGTERM/SIGINT, or until the API or the engine ends by itself;
    then both stop: requests in progress and sends in an SMTP transaction
    finish, the engine's other leases are released."""
    stop = asyncio.Event()
    on_stop_signals(stop.set)
    engine_run = asyncio.create_task(engine.run()) if engine is not None else None
    hooks_run = asyncio.create_task(dispatcher.run()) if dispatcher is not None else None
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
        if dispatcher is not None and hooks_run is not None:
            dispatcher.stop()
            await hooks_run


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
        dispatcher = app.dispatcher(owner=engine.owner) if engine is not None else None
        host, port = listen
        api = config.api
        server = ApiServer(
            service_api(app),
            host,
            port,
            log_level=log_level,
            header_timeout=api.header_timeout,
            keep_alive_timeout=api.keep_alive_timeout,
            max_connections=api.max_connections,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                "--listen", f"cannot listen on {host}:{port}: {exc.strerror}"
            ) from exc
        inbox = inbox_app = None
        if dev is not None and dev.inbox is not None:
            inbox_app = create_inbox(dev.sink)
            inbox = ApiServer(inbox_app, *dev.inbox, graceful_seconds=2, log_level=log_level)
            try:
                await inbox.start()
            except OSError as exc:
                server.stop()
                await server.wait()
                where = f"{dev.inbox[0]}:{dev.inbox[1]}"
                raise ConfigError("--inbox", f"cannot listen on {where}: {exc.strerror}") from exc
        inbound = None
        if config.inbound.listen_address is not None:
            inbound_host, inbound_port = config.inbound.listen_address
            inbound = FeedbackService(
                config,
                app.store,
                host=inbound_host,
                port=inbound_port,
                dev=dev is not None,
                on_processed=lambda m, r: click.echo(describe(m, r)),
                metrics=app.metrics,
            )
            try:
                await inbound.__aenter__()
            except BaseException:
                server.stop()
                await server.wait()
                raise
        loop.settle_heap()
        try:
            click.echo(f"API on {server.url}  (docs: {server.url}/docs, console: {server.url}/ui)")
            if dev is not None:
                click.echo(f"API key: {config.api.keys[0]}")
                click.echo(
                    f"sink on {dev.sink.address}: every message goes there, one line each; "
                    f"Maildir {dev.sink.maildir}"
                )
                if inbox is not None:
                    click.echo(f"inbox on {inbox.url}")
            if inbound is not None:
                click.echo(
                    f"inbound on {inbound.listener.address}: bounces to "
                    f"b+…@{config.bounce_domain}, complaints and auto-replies"
                )
            click.echo("engine running" if engine is not None else "no engine (--no-worker)")
            if sample:
                await _enqueue_sample(app)
            await _run_until_stopped(server, engine, dispatcher)
        finally:
            if inbox is not None and inbox_app is not None:
                inbox_app.state.changes.close()  # open event streams end
                inbox.stop()
            server.stop()
            await server.wait()
            if inbox is not None:
                await inbox.wait()
            if inbound is not None:
                await inbound.__aexit__(None, None, None)


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
@click.option(
    "--inbox",
    default="127.0.0.1:8026",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the --dev sink's inbox is served in the browser ('' for none).",
)
@click.option(
    "--inbound",
    "inbound_listen",
    default="127.0.0.1:0",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the --dev inbound listener for returned mail listens (0: a free port).",
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
    inbox: str,
    inbound_listen: str,
    sample: bool,
    verbose: bool,
) -> None:
    """Serve the HTTP API and run the engine in one process."""
    logs.setup(logging.INFO if verbose else logging.WARNING, ctx.log_format)
    log_level = "info" if verbose else "warning"
    address = parse_listen(listen, "--listen") if listen else ctx.config.api.listen_address
    if not dev:
        ctx.config.check_production(api=True, delivers=not no_worker)
        if not ctx.config.api.keys:
            # keys made by `mailer apikeys create` live in the store, as digests
            click.echo(
                "note: no api.keys configured: only keys made with `mailer apikeys create` "
                "are accepted",
                err=True,
            )
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
    with _dev_setup(ctx, address, sink_listen, inbox, inbound_listen) as setup:
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
