"""``mailer worker``: the delivery engine alone (``mailer serve`` runs it
beside the HTTP API)."""

from __future__ import annotations

import asyncio
import logging

import click

from mailer import loop
from mailer.app import App
from mailer.cli.main import Context, cli, on_stop_signals, pass_ctx, run
from mailer.config import Config


async def _work(config: Config, drain: bool) -> int:
    async with App(config) as app:
        engine = await app.engine()
        # webhooks go out from the same process, under the engine's name
        dispatcher = app.dispatcher(owner=engine.owner)
        loop.settle_heap()

        def stop() -> None:
            engine.stop()
            dispatcher.stop()

        on_stop_signals(stop)
        if drain:
            # the events of the drained sends, then out
            await engine.run(drain=True)
            await dispatcher.run(drain=True)
        else:
            await asyncio.gather(engine.run(), dispatcher.run())
        return engine.delivered


@cli.command()
@click.option("--drain", is_flag=True, help="Exit once nothing is due or in flight.")
@click.option("-v", "--verbose", is_flag=True)
@pass_ctx
def worker(ctx: Context, drain: bool, verbose: bool) -> None:
    """Run the delivery engine (no HTTP API).

    Refuses to start without what the one-click unsubscribe URL of every
    message needs (api.secret, api.public_url; unless api.unsubscribe is
    false) and with a published, empty or short secret."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    ctx.config.check_production(api=False, delivers=True)
    delivered = run(_work(ctx.config, drain))
    if drain:
        click.echo(f"drained: {delivered} delivered by this worker")
