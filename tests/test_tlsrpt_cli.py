"""``mailer tlsrpt show`` against a config file and a SQLite store with a
day's counts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from mailer.cli import cli, register_commands
from mailer.store.sqlite.store import SQLiteStore
from mailer.store.tlsrpt import TLSCount

register_commands()


def mailer(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(path), "tlsrpt", "show", *args])


POLICY = ("version: STSv1", "mode: testing", "mx: *.dest.test", "max_age: 86400")


async def fill(tmp_path: Path) -> Path:
    database = tmp_path / "mailer.sqlite3"
    async with SQLiteStore(database) as store:
        ok = TLSCount("2026-12-05", "dest.test", "sts", POLICY, ("*.dest.test",), count=7)
        failed = TLSCount(
            "2026-12-05", "dest.test", "sts", POLICY, ("*.dest.test",),
            result_type="certificate-expired", sending_ip="192.0.2.10",
            receiving_mx="mx1.dest.test", receiving_ip="127.0.0.2",
            reason_code="certificate", count=2,
        )  # fmt: skip
        await store.tlsrpt.add_counts([ok, failed])
        await store.tlsrpt.claim_reports(
            "w", before_day="2026-12-06", limit=1, lease_seconds=1, now=1.0
        )
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{database}"\n[dkim]\ndomain = "mailer.test"\nrequired = false\n')
    return path


async def test_show_prints_the_days_counts_and_the_report_state(tmp_path: Path) -> None:
    path = await fill(tmp_path)
    result = await asyncio.to_thread(mailer, path, "--date", "2026-12-05")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "dest.test  report: due"
    assert lines[1].split() == ["sts", "ok", "7", "failed", "2"]
    assert lines[2].split()[:2] == ["certificate-expired", "2"]
    assert "mx1.dest.test [127.0.0.2] from 192.0.2.10" in lines[2]


async def test_show_json_is_the_report_as_it_would_be_sent(tmp_path: Path) -> None:
    path = await fill(tmp_path)
    result = await asyncio.to_thread(mailer, path, "--date", "2026-12-05", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["date"] == "2026-12-05"
    [entry] = shown["domains"]
    assert entry["state"] == "due"
    report = entry["report"]
    assert report["report-id"] == "2026-12-05.dest.test@mailer.test"
    assert report["contact-info"] == "postmaster@mailer.test"
    assert report["policies"][0]["summary"]["total-failure-session-count"] == 2


async def test_show_refuses_a_bad_date_and_says_so_for_an_empty_day(tmp_path: Path) -> None:
    path = await fill(tmp_path)
    bad = await asyncio.to_thread(mailer, path, "--date", "5.12.2026")
    assert bad.exit_code == 1
    assert "date" in bad.output
    assert "YYYY-MM-DD" in bad.output
    empty = await asyncio.to_thread(mailer, path, "--date", "2026-01-01")
    assert empty.exit_code == 0
    assert empty.output.strip() == "no TLS sessions counted on 2026-01-01"
