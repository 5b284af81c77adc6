"""``mailer suppress add|remove|list|import``: the suppression lists, per
account and global (account ``""``), with reasons."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.cli.queue import console, when
from mailer.client import SUPPRESSION_REASONS, Client, parse_suppression_csv
from mailer.config import Config
from mailer.errors import ValidationError
from mailer.message.addresses import parse_address
from mailer.reasons import Reason
from mailer.store.models import Suppression


def _scope(account: str | None, everyone: bool, *, required: bool = True) -> str | None:
    if account is not None and everyone:
        raise click.UsageError("--account and --global exclude each other")
    if everyone:
        return ""
    if account is None and required:
        raise click.UsageError("say whose list: --account NAME or --global")
    return account


def scope_options(fn: Any) -> Any:
    fn = click.option("--global", "everyone", is_flag=True, help="The global list.")(fn)
    return click.option("--account", default=None, help="That account's list.")(fn)


reason_option = click.option(
    "--reason",
    type=click.Choice([r.value for r in SUPPRESSION_REASONS]),
    default=Reason.SUPPRESSED_BOUNCE.value,
    show_default=True,
)


@cli.group()
def suppress() -> None:
    """The suppression lists: per account, and global (every account)."""


async def _suppress_many(config: Config, entries: list[Suppression], *, replace: bool) -> int:
    async with App(config) as app:
        return await Client(app).suppress(entries, replace=replace)


replace_option = click.option(
    "--replace",
    is_flag=True,
    help="Overwrite an entry already on the list (reason, time, note). Without it, an "
    "entry gives way only to a stronger reason: complaint > unsubscribe > bounce.",
)


def _written(count: int, total: int, verb: str) -> str:
    kept = total - count
    line = f"{verb} {count} of {total}"
    if kept:
        line += (
            f"; {kept} already on the list with an equal or stronger reason, kept as they were"
            " (--replace overwrites)"
        )
    return line


@suppress.command("add")
@click.argument("addresses", nargs=-1, required=True)
@scope_options
@reason_option
@click.option("--note", default=None, help="Why (kept as the entry's detail).")
@replace_option
@pass_ctx
def suppress_add(
    ctx: Context,
    addresses: tuple[str, ...],
    account: str | None,
    everyone: bool,
    reason: str,
    note: str | None,
    replace: bool,
) -> None:
    """Put ADDRESSES on a suppression list: later sends to them end
    `suppressed`."""
    owner = _scope(account, everyone) or ""
    now = time.time()
    entries = [
        Suppression(owner, parse_address(f"address {a!r}", a).address, Reason(reason), now, note)
        for a in addresses
    ]
    count = run(_suppress_many(ctx.config, entries, replace=replace))
    click.echo(f"{_written(count, len(entries), 'suppressed')} on {_scope_name(owner)}")


def _scope_name(account: str) -> str:
    return "the global list" if account == "" else f"account {account}'s list"


async def _unsuppress(config: Config, account: str, addresses: tuple[str, ...]) -> int:
    async with App(config, existing=True) as app:
        return await Client(app).unsuppress(account, addresses)


@suppress.command("remove")
@click.argument("addresses", nargs=-1, required=True)
@scope_options
@pass_ctx
def suppress_remove(
    ctx: Context, addresses: tuple[str, ...], account: str | None, everyone: bool
) -> None:
    """Take ADDRESSES off a suppression list."""
    owner = _scope(account, everyone) or ""
    removed = run(_unsuppress(ctx.config, owner, addresses))
    click.echo(f"removed {removed} of {len(addresses)} address(es) from {_scope_name(owner)}")


async def _suppressions(config: Config, account: str | None) -> list[Suppression]:
    async with App(config, existing=True) as app:
        return await app.store.suppressions(account)


@suppress.command("list")
@scope_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@pass_ctx
def suppress_list(ctx: Context, account: str | None, everyone: bool, as_json: bool) -> None:
    """List suppressions (all lists unless --account or --global)."""
    entries = run(_suppressions(ctx.config, _scope(account, everyone, required=False)))
    if as_json:
        rows = [{**asdict(e), "reason": e.reason.value} for e in entries]
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("account", "address", "reason", "since", "detail"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e.account or "(global)", e.address, e.reason.value, when(e.created_at), e.detail or ""
        )
    console().print(table if entries else "no suppressions")


@suppress.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@scope_options
@reason_option
@click.option("--note", default=None, help="Detail recorded with every entry.")
@replace_option
@pass_ctx
def suppress_import(
    ctx: Context,
    csv_file: Path,
    account: str | None,
    everyone: bool,
    reason: str,
    note: str | None,
    replace: bool,
) -> None:
    """Import CSV_FILE (address[,reason][,account]); rows without an account
    go on the --account/--global list. All or nothing: a bad line is
    reported by number and nothing is imported."""
    owner = _scope(account, everyone) or ""
    try:
        text = csv_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError("csv", f"cannot read {csv_file}: {exc}") from exc
    entries = parse_suppression_csv(
        text, account=owner, reason=Reason(reason), now=time.time(), detail=note
    )
    count = run(_suppress_many(ctx.config, entries, replace=replace))
    click.echo(_written(count, len(entries), "imported"))
