"""``mailer queue list|show``: what happened to the sends."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Event, Send, SendFilter


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def send_json(send: Send) -> dict[str, Any]:
    data = asdict(send)
    data["state"] = send.state.value
    data["reason"] = send.reason.value
    data["variables"] = dict(send.variables)
    return data


@cli.group()
def queue() -> None:
    """Inspect the queue."""


async def _list(config: Config, flt: SendFilter, limit: int, after: str | None) -> list[Send]:
    async with App(config) as app:
        return await app.store.list_sends(flt, limit=limit, after=after)


@queue.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State]))
@click.option("--reason", "reasons", multiple=True, type=click.Choice([r.value for r in Reason]))
@click.option("--distribution", default=None)
@click.option("--domain", default=None)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--after", default=None, help="Page on: list sends after this id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of sends.")
@pass_ctx
def list_(
    ctx: Context,
    states: tuple[str, ...],
    reasons: tuple[str, ...],
    distribution: str | None,
    domain: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """List sends with their state and reason."""
    flt = SendFilter(
        states=tuple(State(s) for s in states),
        reasons=tuple(Reason(r) for r in reasons),
        distribution_id=distribution,
        domain=domain,
    )
    sends = run(_list(ctx.config, flt, limit, after))
    if as_json:
        click.echo(json.dumps([send_json(s) for s in sends], ensure_ascii=False))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "recipient", "state", "reason", "tries", "updated"):
        table.add_column(column, overflow="fold")
    for s in sends:
        table.add_row(
            s.id, s.recipient, s.state.value, s.reason.value, str(s.attempts), _time(s.updated_at)
        )
    Console(width=100).print(table)


async def _show(config: Config, send_id: str) -> tuple[Send, list[Attempt], list[Event]]:
    async with App(config) as app:
        send = await app.store.send(send_id)
        return (
            send,
            await app.store.attempts(send_id),
            await app.store.events(send_id=send_id, limit=1000),
        )


@queue.command("show")
@click.argument("send_id")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show(ctx: Context, send_id: str, as_json: bool) -> None:
    """One send's whole story: identity, attempts, events."""
    send, attempts, events = run(_show(ctx.config, send_id))
    if as_json:
        data = send_json(send)
        data["attempts"] = [asdict(a) for a in attempts]
        data["events"] = [asdict(e) for e in events]
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
        return
    console = Console(width=100)
    console.print(f"[bold]send {send.id}[/] → {send.recipient}  ({send.distribution_id})")
    console.print(f"state {send.state.value} ({send.reason.value}), {send.attempts} attempt(s)")
    console.print(f"identity: {send.identity or '-'}")
    console.print(f"message-id: {send.message_id}")
    for number, a in enumerate(attempts, start=1):
        reply = " ".join(str(p) for p in (a.code, a.enhanced, a.text) if p)
        console.print(
            f"attempt {number} {_time(a.started_at)} {a.reason.value} "
            f"mx={a.mx_host or '-'}[{a.address or '-'}] tls={a.tls_version or '-'} "
            f"{a.tls_cipher or ''} {(a.finished_at - a.started_at) * 1000:.0f} ms: {reply}"
        )
    for e in events:
        console.print(f"event {e.seq} {_time(e.at)} {e.state.value} ({e.reason.value})")
