"""Operator commands: ``mailer replay``, ``mailer hold|release`` and
``mailer stats`` (docs/operations.md); ``mailer suppress`` lives in
:mod:`mailer.cli.suppress`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.cli.queue import (
    WIDTH,
    console,
    filter_options,
    hold_json,
    sends_table,
    when,
)
from mailer.client import Client, ReplayReport
from mailer.config import Config
from mailer.feedback.circuit import Breaker, Standing
from mailer.reasons import State
from mailer.store.models import Hold, HoldKind, Send, SendFilter, Stats
from mailer.store.rules import REPLAYABLE_REASONS, REPLAYABLE_STATES, FilterArgs, hold_value

# replay ----------------------------------------------------------------------


async def _replay(
    config: Config,
    flt: SendFilter,
    *,
    note: str | None,
    include_suppressed: bool,
    dry_run: bool,
    batch: int,
    sample: int,
    progress_console: Console,
) -> tuple[ReplayReport, list[Send]]:
    async with App(config, existing=True) as app:
        client = Client(app)
        if dry_run:
            return await client.replay_preview(
                flt, include_suppressed=include_suppressed, sample=sample
            )
        plan = await app.store.replay_plan(flt)
        columns = (
            TextColumn("replaying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        total = plan.replayable(include_suppressed)
        # no bar when there is nothing to do
        with Progress(*columns, console=progress_console, disable=total == 0) as progress:
            task = progress.add_task("replay", total=total)
            report = await client.replay(
                flt,
                note=note,
                include_suppressed=include_suppressed,
                batch=batch,
                progress=lambda done: progress.update(task, completed=done.requeued),
            )
        return report, []


def _replay_lines(report: ReplayReport, include_suppressed: bool) -> list[str]:
    if report.dry_run:
        lines = [
            f"dry run: would requeue {report.replayable} of {report.matching} "
            "matching bounced/failed send(s); nothing was changed"
        ]
    else:
        lines = [f"requeued {report.requeued} send(s), due now"]
    skipped = report.matching - report.replayable if report.dry_run else report.skipped
    if skipped:
        why = "the global suppression list" if include_suppressed else "a suppression list"
        hint = "" if include_suppressed else " (--include-suppressed replays account-listed ones)"
        lines.append(f"skipped {skipped} whose address is on {why}{hint}")
    if include_suppressed and report.dry_run and report.suppressed:
        lifted = report.suppressed - (report.matching - report.replayable)
        lines.append(f"would remove the account suppression entry of {lifted} of them")
    if report.unsuppressed:
        lines.append(
            f"removed {report.unsuppressed} account suppression entr"
            f"{'y' if report.unsuppressed == 1 else 'ies'} (--include-suppressed)"
        )
    if report.held:
        lines.append(f"{report.held} of them went straight to held: their hold is still on")
    return lines


@cli.command()
@filter_options(states=REPLAYABLE_STATES, reasons=REPLAYABLE_REASONS)
@click.option("--all", "everything", is_flag=True, help="Replay without any filter.")
@click.option("--note", default=None, help="Why: recorded on every replayed event.")
@click.option("--dry-run", is_flag=True, help="Count and show a sample; change nothing.")
@click.option(
    "--include-suppressed",
    is_flag=True,
    help="Also replay addresses on their account's suppression list, removing the entry.",
)
@click.option("--sample", default=10, show_default=True, type=click.IntRange(0, 1000))
@click.option(
    "--batch", default=1000, show_default=True, type=click.IntRange(1, 100_000), hidden=True
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_ctx
def replay(
    ctx: Context,
    flt: FilterArgs,
    everything: bool,
    note: str | None,
    dry_run: bool,
    include_suppressed: bool,
    sample: int,
    batch: int,
    as_json: bool,
) -> None:
    """Requeue bounced and failed (expired included) sends matching the
    filters: due now, attempts kept, a `replayed` event each. Delivered,
    in-flight, queued and held sends are never touched; running it twice
    requeues nothing the second time."""
    if flt.empty and not everything:
        raise click.UsageError("give a filter (--domain, --reason, ...) or --all")
    report, shown = run(
        _replay(
            ctx.config,
            flt.build(time.time()),
            note=note,
            include_suppressed=include_suppressed,
            dry_run=dry_run,
            batch=batch,
            sample=sample,
            progress_console=Console(stderr=True, width=WIDTH),
        )
    )
    if as_json:
        data = asdict(report)
        data["sample"] = [s.id for s in shown]
        click.echo(json.dumps(data))
        return
    out = console()
    for line in _replay_lines(report, include_suppressed):
        out.print(line)
    if shown:
        out.print(f"sample (first {len(shown)} by id):")
        out.print(sends_table(shown))


# hold / release ----------------------------------------------------------------


def _target(domain: str | None, distribution: str | None) -> tuple[HoldKind, str]:
    if (domain is None) == (distribution is None):
        raise click.UsageError("name a DOMAIN or a --distribution ID (one of them)")
    if domain is not None:
        return "domain", domain
    assert distribution is not None
    return "distribution", distribution


async def _holds(config: Config) -> list[Hold]:
    async with App(config) as app:
        return await app.store.holds()


async def _hold(config: Config, kind: HoldKind, value: str, note: str | None) -> int:
    async with App(config) as app:
        _, moved = await Client(app).hold(kind, value, note=note)
        return moved


async def _hold_account(config: Config, account: str, note: str | None) -> int:
    async with App(config) as app:
        return await Client(app).hold_account(account, note=note)


async def _release(config: Config, kind: HoldKind, value: str) -> int:
    async with App(config, existing=True) as app:
        return await Client(app).release(kind, value)


def _holds_table(holds: list[Hold]) -> Table:
    table = Table(title="holds", title_justify="left", box=None, pad_edge=False)
    for column in ("kind", "value", "since", "note"):
        table.add_column(column, overflow="fold")
    for h in holds:
        table.add_row(h.kind, h.value, when(h.created_at), h.note or "")
    return table


@cli.command()
@click.argument("domain", required=False)
@click.option("--distribution", default=None, help="Hold this distribution instead.")
@click.option(
    "--account",
    default=None,
    help="Pause this account instead, as the circuit breaker does (`release --account`).",
)
@click.option("--note", default=None, help="Why (shown in events, list and stats).")
@click.option("--json", "as_json", is_flag=True, help="List holds as JSON.")
@pass_ctx
def hold(
    ctx: Context,
    domain: str | None,
    distribution: str | None,
    account: str | None,
    note: str | None,
    as_json: bool,
) -> None:
    """Hold a recipient DOMAIN, a distribution or an account: its queued
    and deferred sends become `held` and get no attempts until `mailer
    release`; new ones start held. Without arguments: list the holds."""
    if account is not None:
        if domain is not None or distribution is not None:
            raise click.UsageError("--account goes alone")
        paused = run(_hold_account(ctx.config, account, note))
        click.echo(f"held account {account}: {paused} waiting send(s) now held")
        return
    if domain is None and distribution is None:
        holds: list[Hold] = run(_holds(ctx.config))
        if as_json:
            click.echo(json.dumps([hold_json(h) for h in holds]))
        elif holds:
            console().print(_holds_table(holds))
        else:
            click.echo("no holds")
        return
    kind, value = _target(domain, distribution)
    value = hold_value(kind, value)  # refused before anything is opened; echoed normalised
    moved: int = run(_hold(ctx.config, kind, value, note))
    click.echo(f"held {kind} {value}: {moved} waiting send(s) now held")


async def _release_account(config: Config, account: str) -> int:
    async with App(config) as app:
        return await Client(app).release_account(account)


@cli.command()
@click.argument("domain", required=False)
@click.option("--distribution", default=None, help="Release this distribution instead.")
@click.option(
    "--account",
    default=None,
    help="Release an account the circuit breaker paused (it then judges only later sends).",
)
@pass_ctx
def release(
    ctx: Context, domain: str | None, distribution: str | None, account: str | None
) -> None:
    """Release a hold: its held sends are queued, due now (unless another
    hold still covers them)."""
    if account is not None:
        if domain is not None or distribution is not None:
            raise click.UsageError("--account goes alone")
        queued = run(_release_account(ctx.config, account))
        click.echo(f"released account {account}: {queued} send(s) queued")
        return
    kind, value = _target(domain, distribution)
    hold_value(kind, value)  # refused before the store is opened
    queued = run(_release(ctx.config, kind, value))
    click.echo(f"released {kind} {value}: {queued} send(s) queued")


# stats -------------------------------------------------------------------------


async def _stats(config: Config, minutes: int, top: int) -> tuple[Stats, list[Standing]]:
    async with App(config, existing=True) as app:
        result = await app.store.stats(now=time.time(), minutes=minutes, top=top)
        # as GET /v1/stats gives them: the paused accounts too
        accounts = await Breaker(app.store, config.feedback.breaker).standings()
        return result, accounts


def accounts_json(accounts: list[Standing]) -> list[dict[str, Any]]:
    """The circuit breaker's view per account (``mailer bounces accounts
    --json``)."""
    return [
        {
            "account": s.account,
            "sends": s.judgement.sends,
            "hard_bounces": s.judgement.hard_bounces,
            "complaints": s.judgement.complaints,
            "hard_bounce_rate": round(s.judgement.bounce_rate, 6),
            "complaint_rate": round(s.judgement.complaint_rate, 6),
            "paused": s.paused,
        }
        for s in accounts
    ]


def stats_json(stats: Stats, *, now: float, minutes: int) -> dict[str, Any]:
    """``mailer stats --json`` (docs/operations.md)."""
    return {
        "generated_at": now,
        "counts": {state.value: stats.counts.get(state, 0) for state in State},
        "failure_reasons": [
            {"state": r.state.value, "reason": r.reason.value, "count": r.count}
            for r in stats.failure_reasons
        ],
        "deferring": [
            {"domain": d.domain, "reason": d.reason.value, "count": d.count}
            for d in stats.deferring
        ],
        "window_minutes": minutes,
        "throughput": [asdict(t) for t in stats.throughput],
        "holds": [hold_json(h) for h in stats.holds],
    }


_COUNTS = frozenset({"count", "delivered", "deferred", "bounced", "failed"})


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold", justify="right" if column in _COUNTS else "left")
    return table


def print_stats(out: Console, stats: Stats, minutes: int) -> None:
    counts = _table("sends by state", "state", "count")
    for state in State:
        counts.add_row(state.value, str(stats.counts.get(state, 0)))
    out.print(counts)
    if stats.holds:
        out.print(_holds_table(list(stats.holds)))
    reasons = _table("top failure reasons", "state", "reason", "count")
    for r in stats.failure_reasons:
        reasons.add_row(r.state.value, r.reason.value, str(r.count))
    out.print(reasons if stats.failure_reasons else "no failures")
    deferring = _table("top deferring destinations", "domain", "reason", "count")
    for d in stats.deferring:
        deferring.add_row(d.domain, d.reason.value, str(d.count))
    out.print(deferring if stats.deferring else "no deferred sends")
    flow = _table(
        f"last {minutes} minutes (UTC)", "minute", "delivered", "deferred", "bounced", "failed"
    )
    for t in stats.throughput:
        flow.add_row(
            when(t.minute)[11:16], *(str(n) for n in (t.delivered, t.deferred, t.bounced, t.failed))
        )
    out.print(flow)
    total = sum(t.delivered for t in stats.throughput)
    out.print(f"delivered {total} in {minutes} min ({total / minutes:.1f}/min)")


@cli.command()
@click.option("--minutes", default=15, show_default=True, type=click.IntRange(1, 1440))
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def stats(ctx: Context, minutes: int, top: int, as_json: bool) -> None:
    """Counts per state, top failure reasons, top deferring destinations,
    throughput per minute, holds."""
    now = time.time()
    result, accounts = run(_stats(ctx.config, minutes, top))
    if as_json:
        # the per-account rates in JSON: `mailer bounces accounts --json`
        click.echo(json.dumps(stats_json(result, now=now, minutes=minutes)))
        return
    print_stats(console(), result, minutes)
    table = _table(
        "accounts (circuit breaker window, our envelope only)",
        "account",
        "sends",
        "hard-bounce rate",
        "complaint rate",
        "state",
    )
    for s in accounts:
        table.add_row(
            s.account,
            str(s.judgement.sends),
            f"{s.judgement.bounce_rate:.2%}",
            f"{s.judgement.complaint_rate:.2%}",
            "paused" if s.paused else "",
        )
    console().print(table if accounts else "no account sent in the breaker's window")
