"""``mailer webhooks add|list|remove|test|replay|rotate``: the accounts'
webhook endpoints from the operator's side (every account; ``--account``
narrows ``list``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from mailer.app import App
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.store.webhooks import Endpoint
from mailer.webhooks import Webhooks
from mailer.webhooks.payload import EVENT_TYPES, event_type

T = TypeVar("T")


async def _with(config: Config, work: Callable[[Webhooks], Awaitable[T]]) -> T:
    async with App(config) as app:
        return await work(app.webhooks())


def _state(endpoint: Endpoint) -> str:
    if endpoint.enabled:
        return f"failing ({endpoint.failures} tries)" if endpoint.failures else "enabled"
    return f"disabled: {endpoint.disabled_reason}"


def _as_dict(e: Endpoint) -> dict[str, object]:
    return {
        "id": e.id,
        "account": e.account,
        "url": e.url,
        "description": e.description,
        "event_types": [event_type(s) for s in e.event_types],
        "enabled": e.enabled,
        "disabled_reason": e.disabled_reason,
        "cursor": e.cursor,
        "failures": e.failures,
    }


@cli.group()
def webhooks() -> None:
    """Webhook endpoints: signed pushes of each account's events."""


@webhooks.command("add")
@click.argument("url")
@click.option("--account", required=True, help="The account whose events go there.")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(EVENT_TYPES),
    help="Only these event types (repeat; default: all).",
)
@click.option("--description", default=None)
@pass_ctx
def webhooks_add(
    ctx: Context, url: str, account: str, events: tuple[str, ...], description: str | None
) -> None:
    """Register URL (https) for ACCOUNT's events; prints the signing secret,
    which is not shown again."""
    created = run(
        _with(
            ctx.config,
            lambda hooks: hooks.add(account, url, event_types=events, description=description),
        )
    )
    click.echo(f"webhook {created.endpoint.id} for account {account}: {url}")
    click.echo(f"secret: {created.secret}  (shown once: verify signatures with it)")


@webhooks.command("list")
@click.option("--account", default=None, help="Only this account's endpoints.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@pass_ctx
def webhooks_list(ctx: Context, account: str | None, as_json: bool) -> None:
    """The endpoints, their cursor and state."""
    found = run(_with(ctx.config, lambda hooks: hooks.endpoints(account)))
    if as_json:
        click.echo(json.dumps([_as_dict(e) for e in found], indent=2))
        return
    for e in found:
        click.echo(f"{e.id}  {e.account}  {e.url}  cursor {e.cursor}  {_state(e)}")
    if not found:
        click.echo("no webhook endpoints")


@webhooks.command("remove")
@click.argument("webhook_id")
@pass_ctx
def webhooks_remove(ctx: Context, webhook_id: str) -> None:
    """Delete an endpoint and its delivery log."""
    run(_with(ctx.config, lambda hooks: hooks.remove(webhook_id, None)))
    click.echo(f"webhook {webhook_id} removed")


@webhooks.command("test")
@click.argument("webhook_id")
@pass_ctx
def webhooks_test(ctx: Context, webhook_id: str) -> None:
    """POST one signed webhook.test event now; prints the reply. Exit
    status 1 unless the reply is 2xx."""
    reply = run(_with(ctx.config, lambda hooks: hooks.test(webhook_id, None)))
    click.echo(f"HTTP {reply.status} in {reply.latency * 1000:.0f} ms  {reply.excerpt[:200]!r}")
    if not 200 <= reply.status < 300:
        raise click.exceptions.Exit(1)


@webhooks.command("replay")
@click.argument("webhook_id")
@click.option(
    "--from",
    "cursor",
    type=click.IntRange(min=0),
    required=True,
    help="Feed cursor: the events after this seq are sent again.",
)
@pass_ctx
def webhooks_replay(ctx: Context, webhook_id: str, cursor: int) -> None:
    """Send an endpoint's events after --from again, in order."""
    run(_with(ctx.config, lambda hooks: hooks.replay(webhook_id, None, cursor)))
    click.echo(f"webhook {webhook_id}: events after {cursor} go out again")


@webhooks.command("rotate")
@click.argument("webhook_id")
@pass_ctx
def webhooks_rotate(ctx: Context, webhook_id: str) -> None:
    """A new signing secret; the old one signs beside it for the overlap
    ([webhooks] rotation_overlap, 24 h)."""
    created = run(_with(ctx.config, lambda hooks: hooks.rotate(webhook_id, None)))
    click.echo(f"secret: {created.secret}  (shown once)")
