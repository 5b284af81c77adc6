"""``mailer bench``: end-to-end throughput against a local sink."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

import mailer
from mailer.bench import history
from mailer.bench.compare import Comparison, run_comparison
from mailer.bench.hooks import EVENTS_AT_MOST
from mailer.bench.rtt import RTTReport, RTTRun, run_rtt_bench
from mailer.bench.runner import BenchReport, api_recipients_for, run_bench
from mailer.cli.main import cli
from mailer.errors import ValidationError


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
    show_default="--messages in whole thousands, 1,000 to 100,000",
    type=click.IntRange(1000, 1_000_000),
    help="Recipients POSTed to the HTTP API in distributions of 1,000.",
)
@click.option(
    "--workers",
    default=os.cpu_count() or 1,
    show_default="the number of CPUs",
    type=click.IntRange(1, 64),
    help="Engine processes (mailer worker), one per core as deployed.",
)
@click.option(
    "--mta-sts",
    is_flag=True,
    help="Deliver the messages a second time with an MTA-STS enforce policy on every "
    "domain (served over HTTPS on loopback) and report that rate beside the encrypt one.",
)
@click.option(
    "--dane",
    is_flag=True,
    help="Deliver the messages again under DANE (a TLSA record on the MX, the loopback DNS "
    "server setting the AD bit), alternating with encrypt runs, and report both rates.",
)
@click.option(
    "--tlsrpt",
    is_flag=True,
    help="Deliver the messages with one message per connection, TLS report counting off "
    "and on (alternating, best of three each), and report both rates.",
)
@click.option(
    "--rtt",
    "rtt_ms",
    type=click.FloatRange(1, 1000),
    default=None,
    metavar="MS",
    help="Also deliver through a relay adding this round trip, with and without PIPELINING.",
)
@click.option(
    "--rtt-messages",
    default=3000,
    show_default=True,
    type=click.IntRange(100, 1_000_000),
    help="Messages for each --rtt run.",
)
@click.option(
    "--rtt-connections",
    default=4,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Connections per domain in the --rtt runs (the limit the bound is computed from).",
)
@click.option(
    "--rtt-only",
    is_flag=True,
    help="Only the --rtt figures (the loopback ones take longest on a busy machine).",
)
@click.option(
    "--history",
    "history_runs",
    type=click.IntRange(1, 1000),
    default=None,
    metavar="N",
    help="Run nothing: print the last N runs of the history side by side.",
)
@click.option(
    "--history-file",
    envvar="MAILER_BENCH_HISTORY",
    type=click.Path(dir_okay=False, path_type=Path),
    default=history.DEFAULT_PATH,
    show_default=True,
    help="Where each run's figures are appended (JSON lines) and --history reads them.",
)
@click.option(
    "--postfix",
    is_flag=True,
    help="Instead of the usual figures: the engine, the transport ceiling and Postfix + "
    "OpenDKIM (Debian's postfix, opendkim) relaying to the same sink, interleaved.",
)
@click.option(
    "--rounds",
    default=3,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Interleaved rounds of each kind with --postfix; the best of each is compared.",
)
@click.option(
    "--postfix-messages",
    default=3000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Messages smtp-source injects into Postfix in each --postfix round.",
)
@click.option("--json", "as_json", is_flag=True)
def bench(
    messages: int,
    domains: int,
    baseline_messages: int,
    store: str,
    database: str,
    api_recipients: int,
    workers: int,
    mta_sts: bool,
    dane: bool,
    tlsrpt: bool,
    rtt_ms: float | None,
    rtt_messages: int,
    rtt_connections: int,
    rtt_only: bool,
    history_runs: int | None,
    history_file: Path,
    postfix: bool,
    rounds: int,
    postfix_messages: int,
    as_json: bool,
) -> None:
    """Deliver N messages on loopback and compare with a naive baseline;
    with --rtt, also at that round-trip time. Every run's figures are
    appended to --history-file; --history N shows the last N."""
    if history_runs is not None:
        _echo_history(history.last(history_file, history_runs), as_json)
        return
    if rtt_only and rtt_ms is None:
        raise click.UsageError("--rtt-only needs --rtt MS")
    if postfix:
        if store != "sqlite" or rtt_ms is not None or mta_sts:
            raise click.UsageError("--postfix runs alone, on the SQLite store")
        # a missing program is a MailerError, which the group shows as such
        comparison = run_comparison(
            messages,
            rounds=rounds,
            postfix_messages=postfix_messages,
            workers=workers,
            domains=domains,
        )
        if as_json:
            click.echo(json.dumps(comparison.as_dict()))
        else:
            _echo_comparison(comparison)
        return
    if api_recipients is None:
        api_recipients = api_recipients_for(messages)
    options: dict[str, Any] = {
        "messages": messages,
        "domains": domains,
        "baseline": baseline_messages,
        "store": store,
        "api_recipients": api_recipients,
        "workers": workers,
        "mta_sts": mta_sts,
        "dane": dane,
        "tlsrpt": tlsrpt,
        "rtt_ms": rtt_ms,
        "rtt_messages": rtt_messages,
        "rtt_connections": rtt_connections,
        "rtt_only": rtt_only,
    }
    started = datetime.now(UTC)
    machine = history.machine()
    rtt = (
        None
        if rtt_ms is None
        else run_rtt_bench(rtt_ms, rtt_messages, domains=domains, connections=rtt_connections)
    )
    if rtt_only and rtt is not None:
        if as_json:
            click.echo(json.dumps({"rtt": rtt.as_dict()}))
        else:
            _echo_rtt(rtt)
        _record(history_file, options, None, rtt, machine, started)
        return
    report = run_bench(
        messages,
        domains=domains,
        baseline_messages=baseline_messages,
        postgres=database if store == "postgres" else None,
        api_recipients=api_recipients,
        workers=workers,
        mta_sts=mta_sts,
        dane=dane,
        tlsrpt=tlsrpt,
    )
    # the figures first: a history that cannot be written loses no run
    _echo_report(report, rtt, as_json=as_json, mta_sts=mta_sts, dane=dane, tlsrpt=tlsrpt)
    _record(history_file, options, report.as_dict(), rtt, machine, started)


def _echo_report(
    report: BenchReport,
    rtt: RTTReport | None,
    *,
    as_json: bool,
    mta_sts: bool,
    dane: bool = False,
    tlsrpt: bool = False,
) -> None:
    if as_json:
        click.echo(json.dumps({**report.as_dict(), **({"rtt": rtt.as_dict()} if rtt else {})}))
        return
    click.echo(
        f"engine:   {report.messages} messages to {report.domains} domains over STARTTLS "
        f"({report.store} store, {report.workers} engine process"
        f"{'es' if report.workers > 1 else ''}) "
        f"in {report.deliver_seconds:.2f} s = {report.messages_per_second:.0f} msg/s "
        f"(sink received {report.sink_received})"
    )
    click.echo(
        f"ceiling:  aiosmtplib to the same sink, unsigned, no store, "
        f"{report.ceiling_connections} connections from {report.workers} process"
        f"{'es' if report.workers > 1 else ''}: {report.ceiling_messages_per_second:.0f} msg/s; "
        f"the engine is {report.ceiling_ratio:.0%} of it"
    )
    click.echo(
        f"latency:  start of delivery→delivered p50 {report.latency_p50_ms:.0f} ms, "
        f"p99 {report.latency_p99_ms:.0f} ms (all {report.messages} enqueued first, "
        f"so this is when each was delivered within the run); "
        f"enqueue took {report.enqueue_seconds:.2f} s"
    )
    if mta_sts:
        click.echo(
            f"mta-sts:  the same messages with an enforce policy on every domain "
            f"(verified certificates, MX checked): {report.mta_sts_messages_per_second:.0f} "
            f"msg/s = {report.mta_sts_ratio:.2f} x the encrypt rate above"
        )
    if dane:
        runs = " / ".join(
            f"{d:.0f} vs {e:.0f}"
            for d, e in zip(report.dane_runs, report.dane_encrypt_runs, strict=True)
        )
        click.echo(
            f"dane:     the same messages under DANE (TLSA 3 1 1 on the MX, AD bit): "
            f"{report.dane_messages_per_second:.0f} msg/s = {report.dane_ratio:.2f} x the "
            f"encrypt rate above (runs, dane vs encrypt: {runs})"
        )
    if tlsrpt:
        click.echo(
            f"tlsrpt:   one message per connection, TLS report counting off "
            f"{report.tlsrpt_off_messages_per_second:.0f} msg/s, on "
            f"{report.tlsrpt_on_messages_per_second:.0f} msg/s "
            f"= {report.tlsrpt_ratio:.3f} x (best of three each, alternating)"
        )
    each = ", ".join(f"{mb:.0f}" for mb in report.peak_rss_mb_per_engine)
    at_start = ", ".join(f"{mb:.0f}" for mb in report.startup_rss_mb_per_engine if mb)
    click.echo(
        f"memory:   peak RSS per engine process {each} MB "
        f"(largest {report.peak_rss_mb:.0f} MB, with {report.messages} queued at the start"
        f"{f'; {at_start} MB once started, before the first send' if at_start else ''})"
    )
    click.echo(
        f"baseline: smtplib, one connection + STARTTLS per message, dkimpy-signed: "
        f"{report.baseline_messages} messages, {report.baseline_messages_per_second:.0f} msg/s "
        f"(capped at --baseline {report.baseline_cap_messages} messages or "
        f"{report.baseline_cap_seconds:.0f} s, whichever comes first, whatever --messages is)"
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
    click.echo(
        f"bounces:  {report.bounces_parsed_per_second:.0f} returned messages parsed/s on one "
        f"core (the {report.bounce_samples} samples of every layout, over and over)"
    )
    click.echo(
        f"inbound:  {report.inbound_messages} DSNs over STARTTLS, 8 sessions: "
        f"{report.inbound_accepted_per_second:.0f} msg/s accepted (durable before each 250)"
    )
    click.echo(
        f"sink:     {report.sink_checked_messages} messages over {report.sink_connections} "
        "STARTTLS connections through `mailer sink`'s full checks "
        f"(DKIM verify, header checks, Maildir): {report.sink_checks_per_second:.0f} msg/s "
        f"with {report.sink_check_processes} checking processes, "
        f"{report.sink_checks_in_process_per_second:.0f} msg/s checking in its own"
    )
    click.echo(
        f"webhooks: {report.webhook_events} events of the run (its last {EVENTS_AT_MOST:,} at "
        f"most) pushed signed, in batches, "
        f"to a loopback receiver: {report.webhook_events_per_second:.0f} events/s "
        f"(receiver counted {report.webhook_events_received})"
    )
    if rtt is not None:
        _echo_rtt(rtt)


def _echo_comparison(report: Comparison) -> None:
    click.echo(
        f"compare:  {report.messages} messages by the engine ({report.workers} process"
        f"{'es' if report.workers > 1 else ''}, SQLite, DKIM RSA-2048, STARTTLS) and by the "
        f"transport ceiling (aiosmtplib, unsigned, no store, {report.ceiling_connections} "
        f"connections); {report.postfix_messages} by Postfix + OpenDKIM (smtp-source -s "
        f"{report.postfix_sessions} -l {report.postfix_length}); one sink, interleaved "
        f"(load average {report.load_before:.1f} before, {report.load_after:.1f} after)"
    )
    for index, run in enumerate(report.rounds, 1):
        click.echo(
            f"  round {index}: engine {run.engine:.0f} msg/s, ceiling {run.ceiling:.0f} msg/s "
            f"({run.engine / run.ceiling:.0%}), Postfix {run.postfix:.0f} msg/s "
            f"({run.engine / run.postfix:.1f}x); CPU per message with the sink's: engine "
            f"{run.engine_cpu_ms:.2f} ms, ceiling {run.ceiling_cpu_ms:.2f} ms"
        )
    click.echo(
        f"  best:    engine {report.engine:.0f} msg/s = {report.of_ceiling:.0%} of the ceiling "
        f"{report.ceiling:.0f} msg/s and {report.over_postfix:.1f}x Postfix + OpenDKIM "
        f"{report.postfix:.0f} msg/s"
    )
    click.echo(
        f"  by CPU:  the engine is {report.cpu_of_ceiling:.0%} of the ceiling (least CPU per "
        f"message of each, every process and the sink included: on an idle machine the rates "
        f"would follow it)"
    )


def _echo_rtt(report: RTTReport) -> None:
    def line(label: str, run: RTTRun) -> None:
        click.echo(
            f"{label} {run.messages} messages over {run.connections} connections "
            f"in {run.seconds:.2f} s = {run.messages_per_second:.0f} msg/s "
            f"({run.per_connection_per_second:.2f} per connection), "
            f"{run.of_bound:.0%} of the bound {run.bound_messages_per_second:.0f} msg/s; "
            f"a message on its connection p50 {run.message_p50_ms:.0f} ms, "
            f"p99 {run.message_p99_ms:.0f} ms; start of delivery→delivered p50 "
            f"{run.latency_p50_ms:.0f} ms, p99 {run.latency_p99_ms:.0f} ms "
            f"(all enqueued first; sink received "
            f"{run.sink_received})"
        )

    click.echo(
        f"rtt:      {report.rtt_ms:g} ms round trip through a delaying relay, "
        f"{report.domains} domains x {report.connections_per_domain} connections "
        f"(load average {report.load_before:.1f} before, {report.load_after:.1f} after)"
    )
    line("  PIPELINING:   ", report.pipelined)
    line("  without it:   ", report.baseline)
    click.echo(f"  per connection, PIPELINING is {report.speedup:.2f}x without it")


def _record(
    path: Path,
    options: dict[str, Any],
    figures: dict[str, Any] | None,
    rtt: RTTReport | None,
    machine: dict[str, Any],
    started: datetime,
) -> None:
    line = history.entry(
        options=options,
        figures=figures,
        rtt=None if rtt is None else rtt.as_dict(),
        machine=machine,
        commit=history.commit_of(Path(mailer.__file__).parent),
        at=started,
    )
    try:
        history.append(path, line)
    except OSError as exc:
        raise ValidationError("history-file", f"cannot append to {path}: {exc}") from exc


def _echo_history(entries: list[history.Entry], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False))
        return
    if not entries:
        click.echo("no bench runs recorded yet")
        return
    header, rows = history.table(entries)
    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    # a figure with "!" changed for the worse against the run before it
    Console(width=max(100, 26 + 24 * len(entries))).print(table)
