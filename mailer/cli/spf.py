"""``mailer spf``: RFC 7208 check_host from the command line."""

from __future__ import annotations

import json

import click

from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.dns import Resolver
from mailer.errors import ValidationError
from mailer.identity.check_host import SPFOutcome, SPFResult, check_host


async def _check(config: Config, ip: str, sender: str, helo: str | None) -> SPFOutcome:
    resolver = Resolver(config.nameservers, timeout=config.worker.dns_timeout)
    if sender:
        domain = sender.rpartition("@")[2]
    elif helo:
        domain = helo
    else:
        raise ValidationError("helo", "an empty SENDER (null reverse-path) needs --helo")
    return await check_host(resolver, ip, domain, sender, helo=helo)


@cli.command()
@click.argument("ip")
@click.argument("sender")
@click.option("--helo", default=None, help="HELO/EHLO name (checked when SENDER is empty).")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def spf(ctx: Context, ip: str, sender: str, helo: str | None, as_json: bool) -> None:
    """Evaluate SPF for client IP and SENDER ('' = null reverse-path)."""
    outcome = run(_check(ctx.config, ip, sender, helo))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "result": outcome.result.value,
                    "domain": outcome.domain,
                    "mechanism": outcome.mechanism,
                    "lookups": outcome.lookups,
                    "void_lookups": outcome.void_lookups,
                    "explanation": outcome.explanation,
                }
            )
        )
        return
    click.echo(f"spf={outcome.result.value} for {ip} at {outcome.domain}")
    if outcome.mechanism:
        click.echo(f"mechanism: {outcome.mechanism}")
    elif outcome.result is SPFResult.NEUTRAL:
        # a record was evaluated and nothing in it matched
        click.echo("mechanism: (none matched: the default result)")
    # none, temperror and permerror have no deciding mechanism: the
    # explanation says why
    click.echo(f"lookups: {outcome.lookups} of 10, void lookups: {outcome.void_lookups} of 2")
    if outcome.explanation:
        click.echo(f"explanation: {outcome.explanation}")
