"""``mailer queue list|show``: what happened to the sends.

The filter options and their parsing are shared with ``mailer replay``
(:mod:`mailer.cli.ops`).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.client import Client, Story
from mailer.config import Config
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Hold, Send, SendFilter
from mailer.store.rules import FilterArgs

F = TypeVar("F", bound=Callable[..., Any])

# Every table is laid out for this width, so output fits a 100-column
# terminal (and mail, and tickets) whatever the terminal says.
WIDTH = 100


def filter_options(
    states: tuple[State, ...] = tuple(State), reasons: tuple[Reason, ...] = tuple(Reason)
) -> Callable[[F], F]:
    """The filter options of ``queue list`` and ``replay``; the command gets
    them as one ``flt: FilterArgs`` argument."""

    def decorate(fn: F) -> F:
        # wraps() also carries over the options click already attached
        @functools.wraps(fn)
        def bundle(**kw: Any) -> Any:
            flt = FilterArgs(
                states=kw.pop("states"),
                reasons=kw.pop("reasons"),
                distribution=kw.pop("distribution"),
                domain=kw.pop("domain"),
                since=kw.pop("since"),
                until=kw.pop("until"),
            )
            return fn(flt=flt, **kw)

        options = [
            click.option(
                "--state",
                "states",
                multiple=True,
                type=click.Choice([s.value for s in states]),
                help="Only sends in this state (repeatable).",
            ),
            click.option(
                "--reason",
                "reasons",
                multiple=True,
                type=click.Choice([r.value for r in reasons]),
                help="Only sends whose last reason is this category (repeatable).",
            ),
            click.option("--distribution", default=None, help="Only this distribution's sends."),
            click.option("--domain", default=None, help="Only sends to this recipient domain."),
            click.option(
                "--since", default=None, help="Changed at or after: 30m, 2h, 1d ago or ISO time."
            ),
            click.option("--until", default=None, help="Changed before: as --since."),
        ]
        wrapped: Any = bundle
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate


def when(ts: float | None, *, short: bool = False) -> str:
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def console() -> Console:
    return Console(width=WIDTH, highlight=False)


def send_json(send: Send) -> dict[str, Any]:
    """One send as ``queue list --json`` prints it (docs/operations.md)."""
    data = asdict(send)
    data["state"] = send.state.value
    data["reason"] = send.reason.value
    data["variables"] = dict(send.variables)
    return data


def hold_json(hold: Hold) -> dict[str, Any]:
    return asdict(hold)


def holds_line(holds: list[Hold]) -> str | None:
    if not holds:
        return None
    return "holds: " + ", ".join(f"{h.kind} {h.value}" for h in holds)


@cli.group()
def queue() -> None:
    """Inspect the queue."""


async def _list(
    config: Config, flt: SendFilter, limit: int, after: str | None
) -> tuple[list[Send], list[Hold]]:
    async with App(config, existing=True) as app:
        return await app.store.list_sends(flt, limit=limit, after=after), await app.store.holds()


#: The columns of ``queue list`` (table and TSV).
LIST_COLUMNS = ("id", "recipient", "state", "reason", "try", "updated (UTC)")


def iso_utc(ts: float) -> str:
    """``2026-12-06T02:51:42Z``: one field, sortable, says it is UTC."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sends_table(sends: list[Send]) -> Table:
    """For a terminal: one line per send; only the recipient gives way to
    the width, ending in an ellipsis rather than wrapping."""
    rows = [
        (
            s.id,
            s.recipient,
            s.state.value,
            s.reason.value,
            str(s.attempts),
            when(s.updated_at, short=True),
        )
        for s in sends
    ]
    widths = [
        max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(LIST_COLUMNS)
    ]
    # what the other columns and the one-space gaps between columns leave
    widths[1] = max(12, WIDTH - (sum(widths) - widths[1]) - (len(LIST_COLUMNS) - 1))
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for name, width in zip(LIST_COLUMNS, widths, strict=True):
        table.add_column(
            name,
            no_wrap=True,
            overflow="ellipsis",
            justify="right" if name == "try" else "left",
            min_width=width if name != "recipient" else None,
            max_width=width,
        )
    for row in rows:
        table.add_row(*row)
    return table


def sends_tsv(sends: list[Send]) -> list[str]:
    """For pipes: a header and one line per send, every value whole and
    tab-separated, so that ``grep`` finds a row and ``cut`` a column."""
    lines = ["\t".join(LIST_COLUMNS)]
    for s in sends:
        fields = (s.id, s.recipient, s.state.value, s.reason.value, str(s.attempts))
        lines.append("\t".join((*fields, iso_utc(s.updated_at))))
    return lines


def total_line(sends: list[Send], limit: int) -> str:
    """The closing line, as ``mailq`` ends with its total."""
    line = f"-- {len(sends)} send(s) listed"
    if len(sends) == limit:
        line += f" (page of {limit}); more: add --after {sends[-1].id}"
    return line


@queue.command("list")
@filter_options()
@click.option(
    "--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Page size."
)
@click.option("--after", default=None, help="Next page: sends after this id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "tsv", "json"]),
    default=None,
    help="table on a terminal, tsv (full values, tab-separated) otherwise.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@pass_ctx
def list_(
    ctx: Context, flt: FilterArgs, limit: int, after: str | None, fmt: str | None, as_json: bool
) -> None:
    """List sends (ordered by id) with their state and reason, a page at a
    time, ending with a total line; times are UTC."""
    if as_json:
        fmt = "json"
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() else "tsv"
    sends, holds = run(_list(ctx.config, flt.build(time.time()), limit, after))
    if fmt == "json":
        click.echo(json.dumps([send_json(s) for s in sends], ensure_ascii=False))
        return
    line = holds_line(holds)
    if fmt == "tsv":
        if line:
            # on stderr: stdout stays rows and the total line
            click.echo(line, err=True)
        for row in sends_tsv(sends):
            click.echo(row)
        click.echo(total_line(sends, limit))
        return
    out = console()
    if line:
        out.print(line, overflow="fold")
    if sends:
        out.print(sends_table(sends))
    else:
        out.print("no sends match")
    out.print(total_line(sends, limit))


async def _show(config: Config, send_id: str) -> Story:
    async with App(config, existing=True) as app:
        return await Client(app).story(send_id)


def story_json(story: Story) -> dict[str, Any]:
    """``queue show --json`` (docs/operations.md)."""
    dist = story.distribution
    data = send_json(story.send)
    data["distribution"] = {
        "id": dist.id,
        "account": dist.account,
        "sender_address": dist.sender_address,
        "sender_name": dist.sender_name,
        "subject": dist.subject,
        "send_at": dist.send_at,
        "tags": list(dist.tags),
    }
    data["attempts"] = [
        {**asdict(a), "number": n, "reason": a.reason.value}
        for n, a in enumerate(story.attempts, start=1)
    ]
    data["events"] = [
        {**asdict(e), "state": _value(e.state), "reason": _value(e.reason)} for e in story.events
    ]
    data["holds"] = [hold_json(h) for h in story.holds]
    data["suppressions"] = [
        {**asdict(s), "reason": s.reason.value, "global": s.account == ""}
        for s in story.suppressions
    ]
    return data


def _reply(code: int | None, enhanced: str | None, text: str | None) -> str:
    return " ".join(str(p) for p in (code, enhanced, text) if p) or "-"


def bounce_route(identity: str) -> str:
    """Where a send's later bounces go, from its identity decision (pure):
    only an SPF pass puts the customer's own address on the envelope
    (mailer.identity.sender); every other decision uses our return path."""
    if identity.startswith("spf=pass"):
        return (
            "to the customer (their address is the envelope, SPF pass); "
            "only what still reaches us is matched, by Message-ID"
        )
    return "back to us, at the send's own return path"


def took(attempt: Attempt) -> str:
    """``, 120 ms``; nothing for an attempt that never reached the wire
    (no MX found, held back before connecting): it has no duration."""
    if attempt.finished_at <= attempt.started_at:
        return ""
    return f", {(attempt.finished_at - attempt.started_at) * 1000:.0f} ms"


def mx_line(attempt: Attempt) -> str:
    """``mx mx1.example.org [192.0.2.7]``: the host once, with the address
    the attempt connected to."""
    if attempt.mx_host is None and attempt.address is None:
        return "no MX reached"
    host = attempt.mx_host or "-"
    if attempt.address is None or attempt.address == host:
        return f"mx {host}"
    return f"mx {host} [{attempt.address}]"


def print_story(out: Console, story: Story) -> None:
    s, dist = story.send, story.distribution
    out.print(f"[bold]send {s.id}[/] → {s.recipient}" + (f" ({s.name})" if s.name else ""))
    out.print(f"distribution {dist.id}, account {dist.account}, subject {dist.subject!r}")
    out.print(f"sender {dist.sender_name!r} <{dist.sender_address}>")
    waiting = s.state in (State.QUEUED, State.DEFERRED)
    due = f", next attempt {when(s.due_at)}" if waiting else ""
    out.print(
        f"state [bold]{s.state.value}[/] ({s.reason.value}) since {when(s.updated_at)} UTC, "
        f"{s.attempts} attempt(s){due}"
    )
    out.print(f"last reply: {_reply(s.last_code, s.last_enhanced, s.last_text)}")
    out.print(f"identity: {s.identity or '- (not decided yet)'}")
    if s.identity:
        out.print(f"bounces: {bounce_route(s.identity)}")
    out.print(f"message-id: {s.message_id}, enqueued {when(s.created_at)}")
    for h in story.holds:
        note = f": {h.note}" if h.note else ""
        out.print(f"[bold]held[/] by {h.kind} {h.value} since {when(h.created_at)}{note}")
    for sup in story.suppressions:
        scope = "global list" if sup.account == "" else f"account {sup.account}"
        out.print(
            f"[bold]suppressed[/] on the {scope}: {sup.reason.value} since "
            f"{when(sup.created_at)}" + (f" ({sup.detail})" if sup.detail else "")
        )
    for number, a in enumerate(story.attempts, start=1):
        tls = " ".join(p for p in (a.tls_version, a.tls_cipher) if p) or "no TLS"
        out.print(
            f"[bold]attempt {number}[/] {when(a.started_at)}{took(a)}: {a.reason.value}\n"
            f"  {mx_line(a)}, {tls}, tls policy {a.tls_policy or '-'}\n"
            f"  reply: {_reply(a.code, a.enhanced, a.text)}",
            overflow="fold",
        )
    table = Table(title="events (UTC)", title_justify="left", box=None, pad_edge=False)
    # a date, a state and a reason are never broken over two lines
    for column in ("at", "state", "reason"):
        table.add_column(column, no_wrap=True)
    table.add_column("reply / detail", overflow="fold")
    for e in story.events:
        said = [
            p for p in (" ".join(str(x) for x in (e.code, e.enhanced, e.text) if x), e.detail) if p
        ]
        # a send's events only: an account's event (no state) never names a send
        table.add_row(when(e.at), _value(e.state), _value(e.reason), " / ".join(said))
    out.print(table)


def _value(item: State | Reason | None) -> str | None:
    return None if item is None else item.value


@queue.command("show")
@click.argument("send_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def show(ctx: Context, send_id: str, as_json: bool) -> None:
    """One send's whole story: identity decision, every attempt (MX host and
    IP, TLS, reply, timing), every event, holds and suppressions."""
    story = run(_show(ctx.config, send_id))
    if as_json:
        click.echo(json.dumps(story_json(story), ensure_ascii=False))
        return
    print_story(console(), story)
