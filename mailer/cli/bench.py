"""``mailer bench``: end-to-end throughput against a local sink."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mailer.bench.runner import run_bench
from mailer.cli.main import cli

PHASES = {
    "enqueue": "enqueueing",
    "deliver": "delivering",
    "history": "history",
    "deliver+history": "over history",
    "baseline": "baseline",
    "api": "API enqueue",
}


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A Rich progress line on stderr (a terminal only: a pipe or a log gets
    the report alone), one task per phase of the bench."""
    console = Console(stderr=True)
    if not sys.stderr.isatty():
        yield lambda phase, done, total: None
        return
    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as bar:
        tasks: dict[str, tuple[TaskID, int]] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                # a new phase: the previous ones are over
                for task, size in tasks.values():
                    bar.update(task, completed=size)
                tasks[phase] = (bar.add_task(PHASES.get(phase, phase), total=total), total)
            bar.update(tasks[phase][0], completed=min(done, total))

        yield update


@cli.command()
@click.option("--messages", default=5000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--domains", default=4, show_default=True, type=click.IntRange(1, 100))
@click.option(
    "--baseline",
    "baseline_messages",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Messages for the naive smtplib baseline (it stops after 20 s in any case).",
)
@click.option(
    "--store",
    type=click.Choice(["sqlite", "postgres"]),
    default="sqlite",
    show_default=True,
    help="Queue in a fresh SQLite file, or in a scratch schema of --database.",
)
@click.option(
    "--database",
    envvar="MAILER_BENCH_DATABASE",
    default="postgresql://postgres@127.0.0.1:5432/test",
    show_default=True,
    metavar="URL",
    help="PostgreSQL for --store postgres (a schema is made and dropped).",
)
@click.option(
    "--api-recipients",
    default=None,
    type=click.IntRange(1000, 1_000_000),
    help="Recipients POSTed to the HTTP API in distributions of 1,000 "
    "[default: --messages, at least 1,000].",
)
@click.option(
    "--workers",
    default=os.cpu_count() or 1,
    show_default="the number of CPUs",
    type=click.IntRange(1, 64),
    help="Engine processes (mailer worker), one per core as deployed.",
)
@click.option(
    "--history",
    default=0,
    show_default=True,
    type=click.IntRange(0, 10_000_000),
    help="Also deliver the messages again over a store already holding N finished sends.",
)
@click.option("--json", "as_json", is_flag=True)
def bench(
    messages: int,
    domains: int,
    baseline_messages: int,
    store: str,
    database: str,
    api_recipients: int | None,
    workers: int,
    history: int,
    as_json: bool,
) -> None:
    """Deliver N messages on loopback and compare with a naive baseline."""
    with progress_bar() as progress:
        report = run_bench(
            messages,
            domains=domains,
            baseline_messages=baseline_messages,
            postgres=database if store == "postgres" else None,
            api_recipients=api_recipients if api_recipients is not None else max(messages, 1000),
            workers=workers,
            progress=progress,
            history=history,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(
        f"engine:   {report.messages} messages to {report.domains} domains over STARTTLS "
        f"({report.store} store, {report.workers} engine process"
        f"{'es' if report.workers > 1 else ''}) "
        f"in {report.deliver_seconds:.2f} s = {report.messages_per_second:.0f} msg/s "
        f"(sink received {report.sink_received})"
    )
    click.echo(
        f"latency:  queued→delivered, from the engines' start, p50 {report.latency_p50_ms:.0f} ms, "
        f"p99 {report.latency_p99_ms:.0f} ms; enqueue took {report.enqueue_seconds:.2f} s"
    )
    if report.history_messages_per_second is not None and report.history_ratio is not None:
        click.echo(
            f"history:  the same {report.messages} messages over {report.history:,} finished "
            f"sends: {report.history_messages_per_second:.0f} msg/s = "
            f"{report.history_ratio:.0%} of the empty store's"
        )
    click.echo(f"memory:   peak RSS {report.peak_rss_mb:.0f} MB per engine process")
    click.echo(
        f"baseline: smtplib, one connection + STARTTLS per message, dkimpy-signed: "
        f"{report.baseline_messages} messages (stops at --baseline or after "
        f"{report.baseline_cap_seconds:.0f} s), {report.baseline_messages_per_second:.0f} msg/s"
    )
    click.echo(f"ratio:    {report.ratio:.1f}x the naive baseline")
    click.echo(
        f"dkim:     {report.dkim_signatures_per_second:.0f} RSA-2048 signatures/s on one core "
        f"(the RSA operation alone: {report.rsa_operations_per_second:.0f}/s; "
        f"plain dkimpy: {report.dkimpy_signatures_per_second:.0f}/s)"
    )
    click.echo(
        f"api:      {report.api_recipients} recipients POSTed in distributions of 1,000: "
        f"{report.api_recipients_per_second:.0f} recipients/s accepted (durable)"
    )
