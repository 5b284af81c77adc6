"""``mailer keys generate|show|check``: DKIM keys and their DNS records."""

from __future__ import annotations

import click

from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.dns import Resolver
from mailer.message.keys import (
    KeyCheck,
    KeyInfo,
    KeyStore,
    check_published,
    check_selector,
    dns_record_value,
    format_txt_record,
)


@cli.group()
def keys() -> None:
    """DKIM keys under keys_dir (keys/<domain>/<selector>.key)."""


def _record(info: KeyInfo) -> str:
    return format_txt_record(info.domain, info.selector, dns_record_value(info))


@keys.command()
@click.argument("domain")
@click.option("--selector", default="mailer", show_default=True)
@click.option(
    "--type", "algorithm", type=click.Choice(["rsa", "ed25519"]), default="rsa", show_default=True
)
@click.option("--bits", default=2048, show_default=True, type=int, help="RSA key size.")
@pass_ctx
def generate(ctx: Context, domain: str, selector: str, algorithm: str, bits: int) -> None:
    """Write a new key (mode 0600) and print the TXT record to publish."""
    info = KeyStore(ctx.config.keys_dir).generate(domain, selector, algorithm=algorithm, bits=bits)
    click.echo(f"wrote {info.path}")
    click.echo("publish this TXT record:")
    click.echo(_record(info))


@keys.command()
@click.argument("domain")
@pass_ctx
def show(ctx: Context, domain: str) -> None:
    """List a domain's keys with the TXT record each needs."""
    infos = KeyStore(ctx.config.keys_dir).list(domain)
    if not infos:
        raise click.ClickException(
            f"no key for {domain} in {ctx.config.keys_dir} (mailer keys generate {domain})"
        )
    for info in infos:
        bits = f", {info.bits} bits" if info.bits else ""
        click.echo(f"{info.domain} selector {info.selector}: {info.algorithm}{bits} ({info.path})")
        click.echo(_record(info))


async def _check(resolver: Resolver, infos: list[KeyInfo]) -> list[tuple[KeyInfo, KeyCheck]]:
    return [(info, await check_published(resolver, info)) for info in infos]


@keys.command()
@click.argument("domain")
@click.option("--selector", default=None, help="Check only this selector.")
@pass_ctx
def check(ctx: Context, domain: str, selector: str | None) -> None:
    """Compare what DNS publishes with the local keys; exit 1 on a problem."""
    config = ctx.config
    infos = KeyStore(config.keys_dir).list(domain)
    if selector is not None:
        wanted = check_selector(selector)
        infos = [i for i in infos if i.selector == wanted]
    if not infos:
        raise click.ClickException(
            f"no local key for {domain}" + (f" with selector {selector}" if selector else "")
        )
    resolver = Resolver(config.nameservers, timeout=config.worker.dns_timeout)
    results = run(_check(resolver, infos))
    failed = False
    for info, result in results:
        name = f"{info.selector}._domainkey.{info.domain}"
        if result.ok:
            click.echo(f"ok       {name}: DNS publishes this key")
        else:
            failed = True
            click.echo(f"PROBLEM  {name}: {result.problem}: {result.detail}")
            click.echo(f"         publish: {_record(info)}")
    if failed:
        raise SystemExit(1)
