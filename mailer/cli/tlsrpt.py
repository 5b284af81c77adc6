"""``mailer tlsrpt show``: a day's SMTP TLS report counts (RFC 8460) per
policy domain, as the reports say them, and whether each report went out."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import click

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.delivery.tls.counter import utc_day
from mailer.delivery.tls.report import build_report
from mailer.errors import ValidationError
from mailer.tlsrpt import Submitter


def _day(value: str | None) -> str:
    if value is None:
        return utc_day(time.time())
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise ValidationError("date", f"{value!r} is not a date (YYYY-MM-DD)") from None


async def _show(config: Config, day: str) -> list[dict[str, Any]]:
    async with App(config) as app:
        counts = await app.store.tlsrpt.counts(day)
        jobs = {job.domain: job for job in await app.store.tlsrpt.reports(day)}
    submitter = Submitter.from_config(config)
    out = []
    for domain in sorted({c.domain for c in counts}):
        job = jobs.get(domain)
        report = build_report(
            counts,
            domain=domain,
            day=day,
            organization=submitter.organization,
            contact=submitter.contact,
            report_id=submitter.report_id(day, domain),
        )
        out.append(
            {
                "domain": domain,
                "report": report,
                "state": job.state if job is not None else "not due",
                "tries": job.tries if job is not None else 0,
                "detail": job.detail if job is not None else None,
            }
        )
    return out


@cli.group()
def tlsrpt() -> None:
    """SMTP TLS reports (RFC 8460) to the domains that ask for them."""


@tlsrpt.command("show")
@click.option("--date", "date", default=None, help="The UTC day, YYYY-MM-DD (default: today).")
@click.option("--json", "as_json", is_flag=True, help="The reports as RFC 8460 JSON, and state.")
@pass_ctx
def tlsrpt_show(ctx: Context, date: str | None, as_json: bool) -> None:
    """The day's counts per policy domain and policy: successful sessions,
    failed ones by result type, and the report's state (due, sent,
    no-record, failed; "not due" while the day lasts)."""
    day = _day(date)
    found = run(_show(ctx.config, day))
    if as_json:
        click.echo(json.dumps({"date": day, "domains": found}, indent=2))
        return
    if not found:
        click.echo(f"no TLS sessions counted on {day}")
        return
    for entry in found:
        state = entry["state"] + (f" ({entry['detail']})" if entry["detail"] else "")
        click.echo(f"{entry['domain']}  report: {state}")
        for policy in entry["report"]["policies"]:
            summary = policy["summary"]
            click.echo(
                f"  {policy['policy']['policy-type']:<16}"
                f"ok {summary['total-successful-session-count']:>8}  "
                f"failed {summary['total-failure-session-count']:>8}"
            )
            for detail in policy.get("failure-details", []):
                where = detail.get("receiving-mx-hostname", "-")
                ip = detail.get("receiving-ip", "-")
                click.echo(
                    f"    {detail['result-type']:<28}{detail['failed-session-count']:>8}  "
                    f"{where} [{ip}] from {detail.get('sending-mta-ip', '-')}"
                )
