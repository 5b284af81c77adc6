"""``mailer doctor``: check our own sending set-up, per source address:
forward-confirmed reverse DNS matching the EHLO name, and the address
inside the region's SPF include.

Exit status: 0 all good, 1 something needs fixing, 2 the check could not
run (bad configuration).
"""

from __future__ import annotations

import asyncio
import json

import click

from mailer.checkdomain.doctor import SourceReport, doctor
from mailer.cli.main import Context, cli, pass_ctx
from mailer.dns import Resolver
from mailer.errors import MailerError


async def _run(ctx: Context) -> list[SourceReport]:
    config = ctx.config
    resolver = Resolver(config.nameservers, timeout=config.worker.dns_timeout)
    return await doctor(config, resolver)


@cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source address.")
@pass_ctx
def doctor_command(ctx: Context, as_json: bool) -> None:
    """Check reverse DNS and SPF of every address we send from; exit 0
    when all is well, 1 when something needs fixing, 2 when the check could
    not run."""
    try:
        reports = asyncio.run(_run(ctx))
    except MailerError as exc:
        click.echo(f"error: could not run: {exc}", err=True)
        raise SystemExit(2) from exc
    if as_json:
        click.echo(json.dumps({"sources": [r.to_json() for r in reports]}, ensure_ascii=False))
    else:
        for report in reports:
            bound = f", bound to {report.bind_address}" if report.bind_address else ""
            click.echo(f"{report.public_ip} (EHLO {report.ehlo}{bound})")
            for finding in report.findings:
                mark = "ok  " if finding.ok else "FAIL"
                click.echo(f"  {mark} {finding.check}: {finding.detail}")
    raise SystemExit(0 if all(r.ok for r in reports) else 1)
