"""``mailer cancel`` and ``mailer flush``: the queue-control verbs an
operator knows from ``postsuper -d`` and ``postqueue -f``."""

from __future__ import annotations

import json
import time

import click

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.client import Cancelled, Client
from mailer.config import Config
from mailer.store.rules import hold_value


async def _cancel(config: Config, distribution_id: str) -> Cancelled:
    async with App(config) as app:
        return await Client(app).cancel(distribution_id)


async def _flush(config: Config, domain: str | None) -> int:
    async with App(config) as app:
        return await app.store.flush(now=time.time(), domain=domain)


@cli.command()
@click.argument("distribution_id", metavar="DISTRIBUTION")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def cancel(ctx: Context, distribution_id: str, as_json: bool) -> None:
    """Cancel a DISTRIBUTION's sends that are not yet sent (queued,
    deferred, held); each gets a `cancelled` event. Sends a worker holds
    right now finish their attempt."""
    done = run(_cancel(ctx.config, distribution_id))
    if as_json:
        counts = {state.value: n for state, n in sorted(done.counts.items())}
        click.echo(
            json.dumps(
                {
                    "distribution": done.distribution_id,
                    "cancelled": done.cancelled,
                    "counts": counts,
                }
            )
        )
        return
    left = ", ".join(f"{n} {state.value}" for state, n in sorted(done.counts.items()))
    click.echo(f"cancelled {done.cancelled} send(s) of distribution {distribution_id} ({left})")


@cli.command()
@click.option("--domain", default=None, help="Only the sends to this recipient domain.")
@pass_ctx
def flush(ctx: Context, domain: str | None) -> None:
    """Retry deferred sends now (as `postqueue -f`): they become due at
    once and the running workers pick them up; state and attempts stay."""
    if domain is not None:
        hold_value("domain", domain)  # refused before the store is opened
    moved = run(_flush(ctx.config, domain))
    where = f" to {domain}" if domain else ""
    click.echo(f"flushed {moved} deferred send(s){where}: due now")
