"""``mailer inbound`` (the listener for returned mail) and ``mailer
bounces parse|list|import``."""

from __future__ import annotations

import asyncio
import json
import logging
import mailbox
import time
from collections.abc import Iterator
from email.utils import getaddresses
from pathlib import Path

import click
from rich.table import Table

from mailer.app import App
from mailer.cli.main import Context, cli, on_stop_signals, pass_ctx, run
from mailer.cli.ops import accounts_json
from mailer.cli.queue import console, when
from mailer.config import Config
from mailer.errors import ValidationError
from mailer.feedback import parse_message
from mailer.feedback.circuit import Breaker, Standing
from mailer.feedback.processor import Processor
from mailer.feedback.service import FeedbackService, matcher_for
from mailer.sink.options import parse_listen
from mailer.store.models import Inbound, NewInbound

# headers where a mailbox that collected bounces keeps the address they
# were sent to: the return path that names the send
_ENVELOPE_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "to")


async def _inbound(config: Config, host: str, port: int, dev: bool) -> None:
    async with (
        App(config) as app,
        FeedbackService(config, app.store, host=host, port=port, dev=dev) as service,
    ):
        tls = "STARTTLS offered" if service.listener.tls else "no STARTTLS (no certificate)"
        click.echo(
            f"inbound on {service.listener.address} ({tls}); bounce domain {config.bounce_domain}"
        )
        stop = asyncio.Event()
        on_stop_signals(stop.set)
        await stop.wait()


@cli.command()
@click.option("--listen", default=None, metavar="HOST:PORT", help="Address [inbound.listen].")
@click.option("--dev", is_flag=True, help="A throw-away certificate when none is configured.")
@click.option("-v", "--verbose", is_flag=True)
@pass_ctx
def inbound(ctx: Context, listen: str | None, dev: bool, verbose: bool) -> None:
    """Receive returned mail (bounces, complaints, auto-replies) over SMTP.

    Each message is stored before its 250, then parsed, matched to its send
    and acted on; what a crash left stored is processed at the next start.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    config = ctx.config
    address = listen or config.inbound.listen
    if address is None:
        raise click.UsageError("give --listen HOST:PORT or set inbound.listen")
    try:
        host, port = parse_listen(address, "listen")
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint="--listen") from exc
    run(_inbound(config, host, port, dev))


@cli.group()
def bounces() -> None:
    """Returned mail: parse files, list what arrived, import a mailbox."""


@bounces.command("parse")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="A JSON list, one object per file.")
def parse_files(files: tuple[str, ...], as_json: bool) -> None:
    """Parse returned messages from files; no store is needed. ``send_id``
    is the send the message names (ENVID or Message-ID), unchecked."""
    out: list[dict[str, object]] = []
    for name in files:
        report = parse_message(Path(name).read_bytes())
        data = {"file": name, **report.as_json()}
        send_id = report.envid
        message_id = report.original_message_id
        if send_id is None and message_id and "@" in message_id:
            send_id = message_id.strip("<>").partition("@")[0]
        data["send_id"] = send_id
        out.append(data)
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    for data in out:
        line = f"{data['file']}: {data['kind']} ({data['layout']})"
        if data["feedback_type"]:
            line += f" feedback-type={data['feedback_type']}"
        if data["original_message_id"]:
            line += f" message-id={data['original_message_id']}"
        click.echo(line)
        recipients = data["recipients"]
        assert isinstance(recipients, list)
        for r in recipients:
            click.echo(
                f"  {r['address']}: {r['action']} {r['status'] or '-'} {r['reason']}"
                f"{'  ' + r['diagnostic'] if r['diagnostic'] else ''}"
            )
        if data["problem"]:
            click.echo(f"  ({data['problem']})")


def _row(message: Inbound) -> dict[str, object]:
    return {
        "id": message.id,
        "received_at": message.received_at,
        "mail_from": message.mail_from,
        "recipients": list(message.recipients),
        "size": message.size,
        "tls": message.tls,
        "processed_at": message.processed_at,
        "kind": message.kind,
        "layout": message.layout,
        "send_id": message.send_id,
        "matched_by": message.matched_by,
        "problem": message.problem,
    }


async def _list(config: Config, unmatched: bool, limit: int) -> list[Inbound]:
    async with App(config) as app:
        return await app.store.inbound_list(unmatched=unmatched, limit=limit)


@bounces.command("list")
@click.option("--unmatched", is_flag=True, help="Only messages that matched no send.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def list_bounces(ctx: Context, unmatched: bool, limit: int, as_json: bool) -> None:
    """Returned messages as received, with what they were found to be."""
    found = run(_list(ctx.config, unmatched, limit))
    if as_json:
        click.echo(json.dumps([_row(m) for m in found], indent=2))
        return
    table = Table("id", "received", "kind", "layout", "send", "matched by", "note")
    for m in found:
        table.add_row(
            m.id,
            when(m.received_at, short=True),
            m.kind or "(pending)",
            m.layout or "",
            m.send_id or "-",
            m.matched_by or "",
            m.problem or "",
        )
    console().print(table)


def _messages(path: Path) -> Iterator[bytes]:
    """The messages of an mbox file or a Maildir directory, as bytes.
    Raises ValidationError("source", …) for anything else."""
    if path.is_dir():
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise ValidationError("source", f"{path} is a directory but no Maildir")
        box: mailbox.Mailbox[mailbox.Message] = mailbox.Maildir(path, create=False)
    elif path.is_file():
        box = mailbox.mbox(path, create=False)
    else:
        raise ValidationError("source", f"{path} does not exist")
    for key in box.iterkeys():
        yield box.get_bytes(key)


def _envelope_of(raw: bytes) -> tuple[str, tuple[str, ...]]:
    from mailer.feedback.mime import load

    msg = load(raw)
    values = [str(v) for name in _ENVELOPE_HEADERS for v in (msg.get_all(name) or [])]
    recipients = tuple(dict.fromkeys(a for _, a in getaddresses(values) if "@" in a))
    return_path = str(msg.get("return-path") or "").strip().strip("<>")
    return return_path, recipients


async def _import(config: Config, path: Path) -> tuple[int, int, int]:
    async with App(config) as app:
        stored = 0
        for raw in _messages(path):
            mail_from, recipients = _envelope_of(raw)
            message = NewInbound(mail_from, recipients, raw, peer=f"import:{path.name}")
            await app.store.inbound_put([message], now=time.time())
            stored += 1
        processor = Processor(app.store, matcher_for(config))
        processed = await processor.drain()
        unmatched = len(await app.store.inbound_list(unmatched=True, limit=1_000_000))
        return stored, processed, unmatched


@bounces.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@pass_ctx
def import_bounces(ctx: Context, source: Path) -> None:
    """Import returned mail another mailbox collected (mbox file or
    Maildir), then process it like mail the listener received."""
    stored, processed, unmatched = run(_import(ctx.config, source))
    click.echo(f"{stored} imported, {processed} processed; {unmatched} unmatched in all")


async def _accounts(config: Config) -> list[Standing]:
    async with App(config, existing=True) as app:
        # as GET /v1/stats gives them: the paused accounts too
        return await Breaker(app.store, config.feedback.breaker).standings()


@bounces.command("accounts")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def accounts(ctx: Context, as_json: bool) -> None:
    """Hard-bounce and complaint rates per account over the circuit
    breaker's window (our envelope only), and whether it is paused."""
    found = run(_accounts(ctx.config))
    if as_json:
        click.echo(json.dumps(accounts_json(found), indent=2))
        return
    for s in found:
        j = s.judgement
        click.echo(
            f"{s.account}: {j.sends} sends, hard bounces {j.bounce_rate:.2%}, "
            f"complaints {j.complaint_rate:.2%}{'  PAUSED' if s.paused else ''}"
        )
