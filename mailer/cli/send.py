"""``mailer send``: enqueue a distribution from files and a CSV."""

from __future__ import annotations

import email.policy
import json
import time
from email import message_from_bytes
from pathlib import Path

import click

from mailer.app import App, Preview
from mailer.cli.main import Context, cli, pass_ctx, run
from mailer.config import Config
from mailer.enqueue import EnqueueResult, read_recipients_csv
from mailer.errors import ValidationError
from mailer.store.models import NewDistribution


def _read(path: Path | None, field: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(field, f"cannot read {path}: {exc}") from exc


async def _send(config: Config, dist: NewDistribution, csv_text: str) -> EnqueueResult:
    recipients = read_recipients_csv(csv_text)
    async with App(config) as app:
        return await app.enqueue(dist, recipients)


async def _preview(config: Config, dist: NewDistribution, csv_text: str) -> Preview:
    recipients = read_recipients_csv(csv_text)
    async with App(config) as app:
        return await app.preview(dist, recipients, now=time.time())


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
    help="Recipients: columns email, name; other columns are template variables.",
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
    account: str,
    unsubscribe_url: str | None,
    as_json: bool,
    dry_run: bool,
) -> None:
    """Enqueue one survey distribution; prints its id and counts."""
    dist = NewDistribution(
        account=account,
        sender_address=sender,
        sender_name=sender_name,
        subject=subject,
        html=_read(html_file, "html"),
        text=_read(text_file, "text"),
        unsubscribe_url=unsubscribe_url,
    )
    csv_text = _read(csv_file, "csv") or ""
    if dry_run:
        for line in preview_lines(run(_preview(ctx.config, dist, csv_text))):
            click.echo(line)
        return
    result = run(_send(ctx.config, dist, csv_text))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "distribution_id": result.distribution_id,
                    "accepted": len(result.send_ids),
                    "rejected": [r.__dict__ for r in result.rejected],
                }
            )
        )
        return
    click.echo(f"distribution {result.distribution_id}")
    click.echo(f"accepted {len(result.send_ids)}, rejected {len(result.rejected)}")
    for item in result.rejected:
        click.echo(f"  recipient {item.index}: {item.field}: {item.reason}")
