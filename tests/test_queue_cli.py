"""``mailer queue list|show`` as an operator used to ``mailq`` reads them:
whole values in pipes, one line per send on a terminal, a total line, UTC."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner, Result

from mailer.app import App
from mailer.cli import cli
from mailer.config import Config, load_config
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, NewSend, Outcome
from tests.conftest import SURVEY

LONG = "a-rather-long-local-part-for-a-respondent." + "x" * 40 + "@survey-panel.example.org"


def setup(tmp_path: Path) -> tuple[Path, Config]:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{tmp_path / "mailer.sqlite3"}"\n')
    return path, load_config(str(path))


def mailer(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(path), *args])


async def fill(config: Config) -> list[str]:
    """Three sends: one long address deferred after a timed attempt, one
    deferred by an attempt that never reached an MX, one still queued."""
    async with App(config) as app:
        recipients = [NewSend(LONG, "Long", {}), NewSend("b@b.test", "B", {})]
        _, ids = await app.store.enqueue(SURVEY, recipients, hostname="h", now=100.0)
        timed = Attempt(
            101.0,
            101.25,
            Reason.CONNECTION,
            mx_host="mx1.survey-panel.example.org",
            address="192.0.2.7",
            text="refused",
        )
        untimed = Attempt(101.0, 101.0, Reason.DNS)
        claimed = await app.store.claim("w", 2, lease_seconds=60, now=101.0)
        by_id = {c.send.id: c for c in claimed}
        outcomes = [
            Outcome(ids[0], State.DEFERRED, Reason.CONNECTION, due_at=900.0, attempt=timed),
            Outcome(ids[1], State.DEFERRED, Reason.DNS, due_at=900.0, attempt=untimed),
        ]
        assert set(by_id) == set(ids)
        await app.store.complete("w", outcomes, now=102.0)
        _, more = await app.store.enqueue(
            SURVEY, [NewSend("c@c.test", "C", {})], hostname="h", now=103.0
        )
        return [*ids, *more]


def test_piped_list_is_tsv_with_whole_values_so_grep_finds_the_row(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    ids = asyncio.run(fill(config))
    result = mailer(path, "queue", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "id\trecipient\tstate\treason\ttry\tupdated (UTC)"
    [row] = [line for line in lines if "survey-panel.example.org" in line]
    fields = row.split("\t")
    assert fields[:5] == [ids[0], LONG, "deferred", "connection", "1"]
    assert fields[5] == "1970-01-01T00:01:42Z"
    assert lines[-1] == "-- 3 send(s) listed"


def test_table_keeps_one_line_per_send_and_ends_with_the_total(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    ids = asyncio.run(fill(config))
    result = mailer(path, "queue", "list", "--format", "table", "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "updated (UTC)" in lines[0]
    rows = lines[1:-1]
    assert [row.split()[0] for row in rows] == ids
    assert "…" in rows[0]
    assert all(len(line) <= 100 for line in lines)
    assert lines[-1] == f"-- 3 send(s) listed (page of 3); more: add --after {ids[-1]}"


def test_show_gives_the_mx_once_with_its_address_and_no_duration_for_an_untimed_attempt(
    tmp_path: Path,
) -> None:
    path, config = setup(tmp_path)
    ids = asyncio.run(fill(config))
    timed = mailer(path, "queue", "show", ids[0]).stdout
    assert "250 ms: connection" in timed
    assert "mx mx1.survey-panel.example.org [192.0.2.7]" in timed
    assert timed.count("mx1.survey-panel.example.org") == 1
    untimed = mailer(path, "queue", "show", ids[1]).stdout
    assert "0 ms" not in untimed
    assert "no MX reached" in untimed
    # event dates are whole on their lines
    assert all(
        line.startswith("1970-01-01 00:01:4")
        for line in untimed.splitlines()
        if line.startswith("1970-")
    )
    assert "events (UTC)" in untimed
