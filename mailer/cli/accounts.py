"""``mailer accounts add|list|show|set`` and ``mailer apikeys
create|list|revoke``: the account records and their API keys."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import click
from rich.table import Table

from mailer.accounts import account_change, create_key, new_account
from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.cli.queue import console, when
from mailer.config import Config
from mailer.store.fair import PRIORITIES
from mailer.store.models import LANGUAGES, Account, AccountChange, ApiKey

_language = click.Choice(LANGUAGES)
_priority = click.Choice(PRIORITIES)


def _account_row(account: Account) -> dict[str, Any]:
    return asdict(account)


def _show(account: Account) -> None:
    for key, value in _account_row(account).items():
        if key == "created_at":
            value = when(value)
        click.echo(f"{key}: {'(none)' if value is None else value}")


@cli.group()
def accounts() -> None:
    """Account records: name, language, rate cap, default priority."""


async def _add(config: Config, account: Account) -> Account:
    async with App(config) as app:
        return await app.store.add_account(account)


@accounts.command("add")
@click.argument("account_id")
@click.option("--name", default=None, help="Display name (default: the id).")
@click.option("--language", type=_language, default="en", show_default=True)
@click.option("--rate-cap", type=int, default=None, help="Sends per minute, every worker.")
@click.option("--priority", type=_priority, default="normal", show_default=True)
@pass_ctx
def accounts_add(
    ctx: Context,
    account_id: str,
    name: str | None,
    language: str,
    rate_cap: int | None,
    priority: str,
) -> None:
    """Record the account ACCOUNT_ID (the id its sends carry)."""
    account = new_account(
        account_id,
        name,
        language=language,
        rate_cap=rate_cap,
        priority_name=priority,
        now=time.time(),
    )
    _show(run(_add(ctx.config, account)))


async def _list(config: Config) -> list[Account]:
    async with App(config) as app:
        return await app.store.accounts()


@accounts.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@pass_ctx
def accounts_list(ctx: Context, as_json: bool) -> None:
    """List the accounts."""
    found = run(_list(ctx.config))
    if as_json:
        click.echo(json.dumps([_account_row(a) for a in found], ensure_ascii=False))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "name", "language", "rate cap/min", "priority", "since"):
        table.add_column(column, overflow="fold")
    for a in found:
        cap = "" if a.rate_cap is None else str(a.rate_cap)
        table.add_row(a.id, a.name, a.language, cap, a.priority, when(a.created_at))
    console().print(table if found else "no accounts")


async def _get(config: Config, account_id: str) -> Account:
    async with App(config) as app:
        return await app.store.account(account_id)


@accounts.command("show")
@click.argument("account_id")
@pass_ctx
def accounts_show(ctx: Context, account_id: str) -> None:
    """Show one account."""
    _show(run(_get(ctx.config, account_id)))


async def _set(config: Config, account_id: str, change: AccountChange) -> Account:
    async with App(config) as app:
        return await app.store.update_account(account_id, change)


@accounts.command("set")
@click.argument("account_id")
@click.option("--name", default=None)
@click.option("--language", type=_language, default=None)
@click.option("--rate-cap", type=int, default=None, help="Sends per minute, every worker.")
@click.option("--no-rate-cap", is_flag=True, help="Remove the rate cap.")
@click.option("--priority", type=_priority, default=None)
@pass_ctx
def accounts_set(
    ctx: Context,
    account_id: str,
    name: str | None,
    language: str | None,
    rate_cap: int | None,
    no_rate_cap: bool,
    priority: str | None,
) -> None:
    """Change an account's name, language, rate cap or default priority."""
    change = account_change(
        name=name,
        language=language,
        rate_cap=rate_cap,
        clear_rate_cap=no_rate_cap,
        priority_name=priority,
    )
    _show(run(_set(ctx.config, account_id, change)))


@cli.group()
def apikeys() -> None:
    """API keys: made here, stored only as digests."""


async def _create(
    config: Config, account: str, operator: bool, name: str | None
) -> tuple[ApiKey, str]:
    async with App(config) as app:
        return await create_key(app.store, account, operator=operator, name=name, now=time.time())


@apikeys.command("create")
@click.option("--account", "account", required=True, help="The account the key belongs to.")
@click.option("--operator", is_flag=True, help="May act for every account.")
@click.option("--name", default=None, help="What the key is for.")
@pass_ctx
def apikeys_create(ctx: Context, account: str, operator: bool, name: str | None) -> None:
    """Make a key and print it once: it cannot be shown again."""
    key, token = run(_create(ctx.config, account, operator, name))
    click.echo(f"id: {key.id}", err=True)
    click.echo("the key is shown once; keep it now:", err=True)
    click.echo(token)


async def _keys(config: Config, account: str | None) -> list[ApiKey]:
    async with App(config) as app:
        return await app.store.api_keys(account)


@apikeys.command("list")
@click.option("--account", default=None, help="Only this account's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@pass_ctx
def apikeys_list(ctx: Context, account: str | None, as_json: bool) -> None:
    """List keys (ids, never the keys themselves)."""
    found = run(_keys(ctx.config, account))
    if as_json:
        click.echo(json.dumps([asdict(k) for k in found], ensure_ascii=False))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "account", "operator", "name", "created", "revoked"):
        table.add_column(column, overflow="fold")
    for k in found:
        revoked = "" if k.revoked_at is None else when(k.revoked_at)
        table.add_row(
            k.id, k.account, "yes" if k.operator else "", k.name or "", when(k.created_at), revoked
        )
    console().print(table if found else "no API keys")


async def _revoke(config: Config, key_id: str) -> bool:
    async with App(config) as app:
        return await app.store.revoke_api_key(key_id, now=time.time())


@apikeys.command("revoke")
@click.argument("key_id")
@pass_ctx
def apikeys_revoke(ctx: Context, key_id: str) -> None:
    """Revoke a key by its id; requests with it are refused from now on."""
    if not run(_revoke(ctx.config, key_id)):
        raise click.ClickException(f"no live API key with id {key_id!r}")
    click.echo(f"revoked {key_id}")
