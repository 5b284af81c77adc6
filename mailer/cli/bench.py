"""``mailer bench``: end-to-end throughput against a local sink."""

from __future__ import annotations

import json

import click

from mailer.bench import run_bench
from mailer.cli.main import cli


@cli.command()
@click.option("--messages", default=5000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--domains", default=4, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--baseline",
    "baseline_messages",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Messages for the naive smtplib baseline.",
)
@click.option("--json", "as_json", is_flag=True)
def bench(messages: int, domains: int, baseline_messages: int, as_json: bool) -> None:
    """Deliver N messages on loopback and compare with a naive baseline."""
    report = run_bench(messages, domains=domains, baseline_messages=baseline_messages)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"engine:   {report.messages} messages to {report.domains} domains over STARTTLS "
        f"in {report.deliver_seconds:.2f} s = {report.messages_per_second:.0f} msg/s "
        f"(sink received {report.sink_received})"
    )
    click.echo(
        f"latency:  enqueue→delivered p50 {report.latency_p50_ms:.0f} ms, "
        f"p99 {report.latency_p99_ms:.0f} ms; enqueue took {report.enqueue_seconds:.2f} s"
    )
    click.echo(f"memory:   peak RSS {report.peak_rss_mb:.0f} MB")
    click.echo(
        f"baseline: smtplib, one connection + STARTTLS per message, dkimpy-signed: "
        f"{report.baseline_messages} messages, {report.baseline_messages_per_second:.0f} msg/s"
    )
    click.echo(f"ratio:    {report.ratio:.1f}x the naive baseline")
    click.echo(
        f"dkim:     {report.dkim_signatures_per_second:.0f} RSA-2048 signatures/s on one core "
        f"(plain dkimpy: {report.dkimpy_signatures_per_second:.0f}/s)"
    )
