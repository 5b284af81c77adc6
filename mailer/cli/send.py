"""``mailer send``: enqueue a distribution from files and a CSV."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mailer.app import App
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
