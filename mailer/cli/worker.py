"""``mailer worker``: the delivery engine alone (``mailer serve`` runs it
beside the HTTP API).

It logs at INFO what an operator needs: what it started with, every
deferral with its next attempt, its throughput every ``--log-every``
seconds, and its shutdown; each delivery only at DEBUG (``-v``)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mailer import logs, loop
from mailer.app import App
from mailer.cli.main import Context, cli, on_stop_signals, pass_ctx, run
from mailer.config import Config
from mailer.store.base import Store

log = logging.getLogger("mailer.worker")

_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def store_name(database: str) -> str:
    """The store as a log may show it: a URL without its password (pure)."""
    return _PASSWORD.sub(r"\1***@", database)


def startup_line(config: Config, owner: str) -> str:
    """What a worker starts with (pure): store, region, identity, limits."""
    region = config.region_settings
    limits = config.limits.default
    rate = f", {limits.rate:g}/s" if limits.rate else ""
    route = f"relay {config.relay}" if config.relay else f"MX on port {config.smtp_port}"
    return (
        f"worker {owner} starting: store {store_name(config.database)}; "
        f"region {config.region} (SPF include {region.spf_include}, neutral sender "
        f"{region.neutral_sender}); identity: sending from {config.outbound_ip} as "
        f"{config.hostname}, DKIM d={config.dkim_domain}; limits: {limits.connections} "
        f"connections and {limits.messages_per_connection} messages per connection per "
        f"destination{rate}, {len(config.limits.domains)} domain override(s), "
        f"{config.worker.max_in_flight} in flight; {route}, TLS {config.tls.policy.value}"
    )


async def report_throughput(delivered: Callable[[], int], owner: str, every: float) -> None:
    """Log the deliveries of each ``every`` seconds, until cancelled."""
    last, since = delivered(), time.monotonic()
    while True:
        await asyncio.sleep(every)
        now, total = time.monotonic(), delivered()
        done, rate = total - last, (total - last) / (now - since)
        log.info(
            "delivered %d in the last %.0f s (%.1f/s), %d in total",
            done, now - since, rate, total,
            extra={"delivered": done, "per_second": round(rate, 1), "owner": owner},
        )  # fmt: skip
        last, since = total, now


async def drain_progress(store: Store, console: Console) -> None:
    """A progress bar of the sends due when the drain began (on a terminal,
    and only when something is due), until cancelled."""
    first = await store.summary(now=time.time())
    total = first.due + first.in_flight
    if total == 0 or not console.is_terminal:
        return
    columns = (TextColumn("draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("drain", total=total)
        while True:
            now = await store.summary(now=time.time())
            bar.update(task, completed=max(0, total - now.due - now.in_flight))
            await asyncio.sleep(0.5)


async def _work(config: Config, drain: bool, every: float) -> int:
    async with App(config) as app:
        engine = await app.engine()
        # webhooks go out from the same process, under the engine's name
        dispatcher = app.dispatcher(owner=engine.owner)
        # and the TLS reports of finished days (RFC 8460)
        reporter = app.tls_reporter(owner=engine.owner) if config.tlsrpt.send else None
        log.info(startup_line(config, engine.owner), extra={"owner": engine.owner})
        loop.settle_heap()

        def stop() -> None:
            engine.stop()
            dispatcher.stop()
            if reporter is not None:
                reporter.stop()

        on_stop_signals(stop)
        helpers = [
            asyncio.create_task(report_throughput(lambda: engine.delivered, engine.owner, every))
        ]
        if drain:
            helpers.append(asyncio.create_task(drain_progress(app.store, Console(stderr=True))))
        try:
            if drain:
                # the events of the drained sends, then out
                await engine.run(drain=True)
                await dispatcher.run(drain=True)
                if reporter is not None:
                    await reporter.run_once()
            else:
                loops = [engine.run(), dispatcher.run()]
                if reporter is not None:
                    loops.append(reporter.run())
                await asyncio.gather(*loops)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info(
                "worker %s stopped: %d delivered",
                engine.owner, engine.delivered,
                extra={"owner": engine.owner, "delivered": engine.delivered},
            )  # fmt: skip
        return engine.delivered


@cli.command()
@click.option("--drain", is_flag=True, help="Exit once nothing is due or in flight.")
@click.option("-v", "--verbose", is_flag=True, help="Also log every delivery (DEBUG).")
@click.option(
    "--log-every",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="How often the throughput is logged.",
)
@pass_ctx
def worker(ctx: Context, drain: bool, verbose: bool, log_every: float) -> None:
    """Run the delivery engine (no HTTP API).

    Refuses to start without what the one-click unsubscribe URL of every
    message needs (api.secret, api.public_url; unless api.unsubscribe is
    false) and with a published, empty or short secret."""
    logs.setup(logging.DEBUG if verbose else logging.INFO, ctx.log_format)
    ctx.config.check_production(api=False, delivers=True)
    delivered = run(_work(ctx.config, drain, log_every))
    if drain:
        click.echo(f"drained: {delivered} delivered by this worker")
