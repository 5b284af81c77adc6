"""``mailer send``: enqueue a distribution from files and a CSV."""

from __future__ import annotations

import email.policy
import json
import time
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mailer.app import App, Preview
from mailer.cli.csvfile import CsvProblem, CsvRecipients, decode, read_recipients
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.enqueue import MAX_RECIPIENTS, Rejected, check_distribution, check_recipients
from mailer.errors import ValidationError
from mailer.intake import NoValidRecipient
from mailer.store.models import NewDistribution

# the variable the service fills in at delivery; a stand-in while checking
_SERVICE = {"unsubscribe_url": "https://unsubscribe.invalid/u/probe"}


def _read(path: Path | None, field: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(field, f"cannot read {path}: {exc}") from exc


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValidationError("csv", f"cannot read {path}: {exc.strerror}") from exc


@dataclass
class Sent:
    """What ``mailer send`` did: one distribution per batch of at most
    MAX_RECIPIENTS rows, and every row left out, by CSV line."""

    distributions: list[str] = field(default_factory=list)
    accepted: int = 0
    rejected: list[CsvProblem] = field(default_factory=list)


def _field(rejected: Rejected) -> str:
    # "recipients[3].email" -> "email": the CSV line says which recipient
    head, dot, rest = rejected.field.partition(".")
    return rest if dot and head.startswith("recipients[") else rejected.field


def _on_lines(rejected: list[Rejected], lines: list[int]) -> list[CsvProblem]:
    return [CsvProblem(lines[r.index], f"{_field(r)}: {r.reason}") for r in rejected]


def _precheck(dist: NewDistribution, csv_rows: CsvRecipients) -> list[CsvProblem]:
    """Every rejection the service would make, without storing anything
    (pure): for --strict, which enqueues nothing when there is any."""
    compiled = check_distribution(dist)
    service = _SERVICE if "unsubscribe_url" in compiled.referenced else None
    problems: list[CsvProblem] = []
    for start in range(0, len(csv_rows.recipients), MAX_RECIPIENTS):
        batch = csv_rows.recipients[start : start + MAX_RECIPIENTS]
        _, rejected = check_recipients(compiled, batch, service=service)
        problems += _on_lines(rejected, csv_rows.lines[start : start + MAX_RECIPIENTS])
    return problems


async def _send(
    config: Config, dist: NewDistribution, csv_rows: CsvRecipients, console: Console
) -> Sent:
    """Enqueue the rows in batches, with a progress bar of the rows on
    ``console`` when it is a terminal (nothing otherwise: the report on
    stdout is what scripts read)."""
    sent = Sent(rejected=list(csv_rows.problems))
    total = len(csv_rows.recipients)
    columns = (TextColumn("enqueueing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    async with App(config) as app:
        with bar:
            task = bar.add_task("send", total=total)
            for start in range(0, total, MAX_RECIPIENTS):
                batch = csv_rows.recipients[start : start + MAX_RECIPIENTS]
                lines = csv_rows.lines[start : start + MAX_RECIPIENTS]
                try:
                    result = await app.enqueue(dist, batch)
                except NoValidRecipient as exc:
                    sent.rejected += _on_lines(exc.rejected, lines)
                    continue
                finally:
                    bar.advance(task, len(batch))
                sent.distributions.append(result.distribution_id)
                sent.accepted += len(result.send_ids)
                sent.rejected += _on_lines(result.rejected, lines)
    sent.rejected.sort(key=lambda p: p.line)
    return sent


async def _preview(config: Config, dist: NewDistribution, csv_rows: CsvRecipients) -> Preview:
    # the first rows are enough to show the first message
    async with App(config) as app:
        return await app.preview(dist, csv_rows.recipients[:MAX_RECIPIENTS], now=time.time())


def preview_lines(preview: Preview) -> list[str]:
    """The dry run's report: the identity decision, the first message's
    headers and both of its parts, and what would be enqueued."""
    prepared = preview.prepared
    message = message_from_bytes(prepared.data, policy=email.policy.default)
    lines = [
        f"dry run: nothing enqueued; would accept {preview.accepted}, "
        f"reject {len(preview.rejected)}",
        *(f"  recipient {r.index}: {r.field}: {r.reason}" for r in preview.rejected),
        f"identity: {prepared.identity}",
        f"envelope: MAIL FROM:<{prepared.mail_from}> RCPT TO:<{prepared.recipient}>",
        "",
        f"--- headers of the first message ({prepared.recipient})",
    ]
    lines += [f"{name}: {value}" for name, value in message.items()]
    for subtype in ("plain", "html"):
        part = message.get_body(preferencelist=(subtype,))
        lines.append("")
        lines.append(f"--- text/{subtype} part")
        lines.append(part.get_content().rstrip("\n") if part is not None else "(none)")
    return lines


@cli.command()
@click.option("--from", "sender", required=True, help="Sender address (the customer's).")
@click.option("--name", "sender_name", default="", help="Sender display name.")
@click.option("--subject", required=True, help="Subject template.")
@click.option("--html", "html_file", type=click.Path(exists=True, path_type=Path))
@click.option("--text", "text_file", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--csv",
    "csv_file",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Recipients: columns email, name (any case); other columns are template variables. "
    "Delimiter , ; or tab; UTF-8 (BOM or not) or Windows-1252.",
)
@click.option(
    "--encoding", default=None, help="The CSV's encoding (default: UTF-8, else Windows-1252)."
)
@click.option(
    "--strict",
    is_flag=True,
    help="Enqueue nothing and exit 1 when any row would be rejected.",
)
@click.option("--account", default="default", show_default=True)
@click.option("--unsubscribe-url", default=None, help="Unsubscribe URL template.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Render and print the first message (headers, identity, both parts); enqueue nothing.",
)
@pass_ctx
def send(
    ctx: Context,
    sender: str,
    sender_name: str,
    subject: str,
    html_file: Path | None,
    text_file: Path | None,
    csv_file: Path,
    encoding: str | None,
    strict: bool,
    account: str,
    unsubscribe_url: str | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Enqueue one survey distribution (one per 10,000 rows); prints its
    id, the counts, and every row left out by its CSV line."""
    dist = NewDistribution(
        account=account,
        sender_address=sender,
        sender_name=sender_name,
        subject=subject,
        html=_read(html_file, "html"),
        text=_read(text_file, "text"),
        unsubscribe_url=unsubscribe_url,
    )
    compiled = check_distribution(dist)
    text, used_encoding = decode(_read_bytes(csv_file), encoding)
    csv_rows = read_recipients(text, used=compiled.referenced - {"email", "name"})
    if dry_run:
        for line in preview_lines(run(_preview(ctx.config, dist, csv_rows))):
            click.echo(line)
        return
    if strict:
        problems = sorted(csv_rows.problems + _precheck(dist, csv_rows), key=lambda p: p.line)
        if problems:
            _report(Sent(rejected=problems), csv_rows, used_encoding, as_json, enqueued=False)
            raise SystemExit(1)
    sent = run(_send(ctx.config, dist, csv_rows, Console(stderr=True)))
    _report(sent, csv_rows, used_encoding, as_json, enqueued=True)
    if strict and sent.rejected:
        raise SystemExit(1)


def _report(
    sent: Sent, csv_rows: CsvRecipients, encoding: str, as_json: bool, *, enqueued: bool
) -> None:
    if as_json:
        data: dict[str, Any] = {
            "distribution_ids": sent.distributions,
            "distribution_id": sent.distributions[0] if sent.distributions else None,
            "accepted": sent.accepted,
            "rejected": [{"line": p.line, "reason": p.reason} for p in sent.rejected],
            "duplicates": [{"line": p.line, "reason": p.reason} for p in csv_rows.duplicates],
            "encoding": encoding,
            "delimiter": csv_rows.delimiter,
        }
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    for distribution_id in sent.distributions:
        click.echo(f"distribution {distribution_id}")
    if not enqueued:
        click.echo("nothing enqueued (--strict):")
    click.echo(
        f"accepted {sent.accepted}, rejected {len(sent.rejected)}, "
        f"duplicates dropped {len(csv_rows.duplicates)}"
    )
    for problem in sent.rejected:
        click.echo(f"  line {problem.line}: {problem.reason}")
    for problem in csv_rows.duplicates:
        click.echo(f"  line {problem.line}: {problem.reason}")
