"""``mailer spf``: RFC 7208 check_host from the command line."""

from __future__ import annotations

import json
import re

import click

from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.dns import Resolver, normalise_name
from mailer.errors import DNSPermanentError, ValidationError, shown
from mailer.identity.check_host import SPFOutcome, SPFResult, check_host

# labels of letters, digits, '-' and '_' (SPF domains may hold underscores)
_NAME = re.compile(r"[a-z0-9_-]{1,63}(?:\.[a-z0-9_-]{1,63})*")


def spf_identity(sender: str, helo: str | None) -> tuple[str, str, str | None]:
    """The (domain, sender, helo) check_host is given for the command's
    SENDER and --helo: domains in their A-label form (an IDN as given is no
    DNS name), and a SENDER without local part as ``postmaster@domain``
    (RFC 7208 §4.3). Pure.

    Raises ValidationError("sender" / "helo") for a name that is no domain
    name, and ValidationError("helo") for an empty SENDER without --helo.
    """

    def a_label(field: str, name: str) -> str:
        try:
            ascii_name = normalise_name(name)
        except DNSPermanentError as exc:
            raise ValidationError(field, f"{shown(name)} is not a domain name") from exc
        if not _NAME.fullmatch(ascii_name):
            raise ValidationError(field, f"{shown(name)} is not a domain name")
        return ascii_name

    if helo is not None:
        helo = a_label("helo", helo)
    if not sender:
        if helo is None:
            raise ValidationError("helo", "an empty SENDER (null reverse-path) needs --helo")
        return helo, sender, helo
    local, at, domain = sender.rpartition("@")
    if not at:
        domain, local = sender, ""
    domain = a_label("sender", domain)
    return domain, f"{local or 'postmaster'}@{domain}", helo


async def _check(config: Config, ip: str, sender: str, helo: str | None) -> SPFOutcome:
    domain, sender, helo = spf_identity(sender, helo)
    resolver = Resolver(config.nameservers, timeout=config.worker.dns_timeout)
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
