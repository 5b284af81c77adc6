"""``mailer check-domain DOMAIN``: is a customer's domain set up for
survey mail (SPF, sender, DKIM, DMARC, receiving TLS)?

Exit status: 0 nothing needs action, 1 something does, 2 the check could
not run (DNS did not answer, bad input or configuration).
"""

from __future__ import annotations

import asyncio
import json

import click

from mailer.checkdomain import (
    EXIT_COULD_NOT_RUN,
    DomainReport,
    check_domain,
    error_json,
    render_text,
)
from mailer.cli.main import Context, cli, pass_ctx
from mailer.config import Config
from mailer.errors import DNSTemporaryError, MailerError


def _could_not_run(domain: str, exc: MailerError) -> str:
    if isinstance(exc, DNSTemporaryError):
        return (
            f"could not check {domain}: DNS did not answer ({exc}); nothing was judged,"
            " try again when DNS is reachable"
        )
    return f"could not check {domain}: {exc}"


@cli.command("check-domain")
@click.argument("domain")
@click.option(
    "--region",
    type=click.Choice(["azure", "de"]),
    default=None,
    help="Region the customer's account is on (default: the configured one).",
)
@click.option(
    "--selector",
    "selectors",
    multiple=True,
    help="DKIM selector to check (repeatable; default: every key we hold for DOMAIN).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object (docs/check-domain.md).")
@pass_ctx
def check_domain_command(
    ctx: Context, domain: str, region: str | None, selectors: tuple[str, ...], as_json: bool
) -> None:
    """Check DOMAIN's SPF, sender identity, DKIM, DMARC and receiving TLS;
    exit 0 when nothing needs action, 1 when something does, 2 when the
    check could not run."""
    try:
        config = ctx.config
        # asyncio.run rather than cli.main.run: every MailerError here means
        # "could not run" (exit 2), not click's generic exit 1.
        report = asyncio.run(check_domain(config, domain, region=region, selectors=selectors))
    except MailerError as exc:
        text = _could_not_run(domain, exc)
        if as_json:
            click.echo(json.dumps(error_json(domain, region or "", text), ensure_ascii=False))
        click.echo(f"error: {text}", err=True)
        raise SystemExit(EXIT_COULD_NOT_RUN) from exc
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        for line in render_text(report):
            click.echo(line)
        if _our_envelope(report):
            for line in return_path_records(config, report.region):
                click.echo(line)
    raise SystemExit(report.exit_code)


def _our_envelope(report: DomainReport) -> bool:
    """Whether the domain's surveys go out with our envelope (the sender
    check's decision), so that their bounces return to our bounce domain."""
    try:
        details = report.check("sender").details
    except KeyError:
        return False
    return bool(details.get("envelope_from")) and details.get("envelope_from") != details.get(
        "address"
    )


def return_path_records(config: Config, region: str) -> list[str]:
    """Where this region's bounces return (the envelope of every message
    not sent under the customer's own SPF-passing address) and the records
    our side publishes for it, so SPF keeps passing for our envelope (pure;
    docs/feedback.md)."""
    settings = config.regions[region]
    domain = config.feedback.bounce_domain or f"bounces.{settings.platform_host}"
    return [
        f"Bounces of mail under our envelope return to b+…@{domain}; our side publishes:",
        f"     {domain}. IN MX 10 <the inbound listener's host>.",
        f'     {domain}. IN TXT "v=spf1 include:{settings.spf_include} -all"',
    ]
