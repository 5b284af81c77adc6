"""What ``mailer worker`` logs: start-up, deferrals with their next
attempt, throughput and shutdown at INFO, each delivery only at DEBUG; as
one JSON object per line with ``--log-format json``. A real worker on
loopback DNS and a STARTTLS sink."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from mailer.app import App
from mailer.cli import cli
from mailer.cli.worker import drain_progress, report_throughput, startup_line, store_name
from mailer.config import load_config
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.logs import JsonFormatter
from mailer.reasons import Reason, State
from mailer.store.models import NewSend, Outcome
from mailer.store.sqlite.store import SQLiteStore
from tests.conftest import SURVEY


def write_config(tmp_path: Path, dns_server: DNSServer, smtp_port: int) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'database = "{tmp_path / "mailer.sqlite3"}"\n'
        'hostname = "mailer.test"\n'
        'outbound_ip = "192.0.2.10"\n'
        f'keys_dir = "{tmp_path / "no-keys"}"\n'
        f'nameservers = ["{dns_server.address}"]\n'
        f"smtp_port = {smtp_port}\n"
        "[dkim]\n"
        'domain = "mailer.test"\n'
        "required = false\n"
        "[retry]\n"
        "base = 3600\n"
        "jitter = 0\n"
        "[api]\n"
        'secret = "worker-logs-test-secret-of-32-bytes-or-more"\n'
        'public_url = "https://mailer.example.test"\n'
        "[worker]\n"
        "poll_interval = 0.1\n"
        "idle_timeout = 0.1\n"
        "smtp_timeout = 10\n"
        "dns_timeout = 2\n"
    )
    return path


async def enqueue(path: Path) -> list[str]:
    async with App(load_config(str(path))) as app:
        recipients = [
            RecipientInput("anna@dest.test", "Anna", {"token": "a"}),
            RecipientInput("later@dest.test", "Later", {"token": "l"}),
        ]
        return (await app.enqueue(SURVEY, recipients)).send_ids


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# The worker installs signal handlers: it runs in the main thread here, the
# sinks and the DNS server on their own threads.
def test_json_logs_say_startup_deferral_and_shutdown_and_no_delivery_at_info(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    sink = make_sink("127.0.0.2")
    sink.script("later@dest.test", "451 4.7.1 greylisted, try again later")
    path = write_config(tmp_path, dns_server, smtp_port)
    anna, later = asyncio.run(enqueue(path))
    argv = ["--config", str(path), "--log-format", "json", "worker", "--drain"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert result.stdout == "drained: 1 delivered by this worker\n"
    lines = json_lines(result.stderr)
    assert [line for line in lines if line["level"] not in ("info", "warning")] == []
    start, *_, stop = [line for line in lines if line["logger"] == "mailer.worker"]
    assert "starting: store " in start["message"]
    assert "region azure" in start["message"]
    assert "sending from 192.0.2.10" in start["message"]
    assert "10 connections and 100 messages per connection" in start["message"]
    assert stop["message"].endswith("stopped: 1 delivered")
    assert stop["delivered"] == 1
    [deferral] = [line for line in lines if line.get("state") == "deferred"]
    assert deferral["send_id"] == later
    assert deferral["domain"] == "dest.test"
    assert deferral["reason"] == "temporary"
    assert deferral["due_at"].endswith("Z")
    assert "next attempt" in deferral["message"]
    assert not [line for line in lines if line.get("send_id") == anna]


def test_verbose_worker_logs_each_delivery_at_debug(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    make_sink("127.0.0.2")
    path = write_config(tmp_path, dns_server, smtp_port)
    anna, later = asyncio.run(enqueue(path))
    env = {"MAILER_LOG_FORMAT": "json"}
    argv = ["--config", str(path), "worker", "--drain", "-v"]
    result = CliRunner(env=env).invoke(cli, argv)
    assert result.exit_code == 0, result.output
    delivered = [line for line in json_lines(result.stderr) if line.get("state") == "delivered"]
    assert {line["send_id"] for line in delivered} == {anna, later}
    assert {line["level"] for line in delivered} == {"debug"}


async def test_throughput_is_logged_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    count = 0

    def delivered() -> int:
        nonlocal count
        count += 5
        return count

    caplog.set_level(logging.INFO, logger="mailer.worker")
    task = asyncio.create_task(report_throughput(delivered, "w1", 0.05))
    deadline = time.monotonic() + 30
    while not caplog.records and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    record = caplog.records[0]
    assert record.__dict__["delivered"] == 5
    assert record.__dict__["owner"] == "w1"
    assert record.getMessage().startswith("delivered 5 in the last ")


def test_json_formatter_puts_the_send_fields_at_the_top_level() -> None:
    record = logging.LogRecord("mailer.x", logging.INFO, "f", 1, "hello %s", ("you",), None)
    record.__dict__.update(send_id="s1", domain="d.test", state="deferred", reason="dns")
    record.__dict__["due_at"] = 0.0
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "hello you"
    assert (data["send_id"], data["domain"], data["state"], data["reason"]) == (
        "s1", "d.test", "deferred", "dns",
    )  # fmt: skip
    assert data["due_at"] == "1970-01-01T00:00:00.000Z"


def test_the_startup_line_hides_the_database_password(tmp_path: Path) -> None:
    assert store_name("postgresql://mailer:s3cret@db:5432/mailer") == (
        "postgresql://mailer:***@db:5432/mailer"
    )
    config = load_config(
        environ={}, overrides={"database": "postgresql://u:pw@h/db", "region": "de"}
    )
    line = startup_line(config, "w1")
    assert "pw" not in line
    assert "region de (SPF include _spf.ntgt.de" in line


async def test_drain_progress_shows_a_bar_of_the_due_sends_and_none_when_nothing_is_due(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3") as store:
        quiet = io.StringIO()
        await drain_progress(store, Console(file=quiet, force_terminal=True, width=80))
        assert quiet.getvalue() == ""  # returned at once: nothing to do

        await store.enqueue(
            SURVEY, [NewSend(f"u{i}@dest.test", "U", {}) for i in range(3)], hostname="h",
            now=time.time() - 10,
        )  # fmt: skip
        out = io.StringIO()
        task = asyncio.create_task(
            drain_progress(store, Console(file=out, force_terminal=True, width=80))
        )
        deadline = time.monotonic() + 30
        # the bar is up, counting from the 3 due sends, before any finishes
        while "0/3" not in out.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        claimed = await store.claim("w", 3, lease_seconds=60, now=time.time())
        done = [Outcome(c.send.id, State.DELIVERED, Reason.DELIVERED) for c in claimed]
        await store.complete("w", done, now=time.time())
        deadline = time.monotonic() + 30
        while "3/3" not in out.getvalue() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "draining" in out.getvalue()
    assert "3/3" in out.getvalue()
