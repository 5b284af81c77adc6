"""``mailer cancel``, ``mailer flush`` and ``mailer --version`` through the
real command line on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailer.app import App
from mailer.cli import cli
from mailer.config import Config, load_config
from mailer.reasons import Reason, State
from mailer.replycodes import classify
from mailer.store.models import NewSend, Outcome
from mailer.store.rules import REPLAYABLE_REASONS
from tests.conftest import SURVEY


def setup(tmp_path: Path) -> tuple[Path, Config]:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{tmp_path / "mailer.sqlite3"}"\n')
    return path, load_config(str(path))


def mailer(path: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(path), *args])


async def enqueue_and_defer(config: Config, domains: list[str], *, due_at: float) -> list[str]:
    """One send per domain, each deferred until ``due_at``."""
    async with App(config) as app:
        recipients = [NewSend(f"someone@{d}", "Someone", {}) for d in domains]
        _, ids = await app.store.enqueue(SURVEY, recipients, hostname="h", now=100.0)
        claimed = await app.store.claim("w", len(ids), lease_seconds=60, now=101.0)
        outcomes = [
            Outcome(c.send.id, State.DEFERRED, Reason.CONNECTION, due_at=due_at) for c in claimed
        ]
        await app.store.complete("w", outcomes, now=102.0)
        return ids


async def due_ats(config: Config, ids: list[str]) -> list[float]:
    async with App(config) as app:
        return [(await app.store.send(i)).due_at for i in ids]


def test_version_names_the_installed_distribution() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"mailer, version {version('survey-mailer')}\n"


def test_flush_with_a_domain_makes_only_its_deferred_sends_due_now(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    far = 4_000_000_000.0
    ids = asyncio.run(enqueue_and_defer(config, ["a.test", "b.test"], due_at=far))
    result = mailer(path, "flush", "--domain", "B.test")
    assert result.exit_code == 0, result.output
    assert result.output == "flushed 1 deferred send(s) to B.test: due now\n"
    a_due, b_due = asyncio.run(due_ats(config, ids))
    assert a_due == far
    assert b_due < far
    result = mailer(path, "flush")
    assert result.output == "flushed 1 deferred send(s): due now\n"
    assert all(due < far for due in asyncio.run(due_ats(config, ids)))


def test_cancel_ends_the_waiting_sends_and_says_what_is_left(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    ids = asyncio.run(enqueue_and_defer(config, ["a.test", "b.test"], due_at=500.0))

    async def distribution_of() -> str:
        async with App(config) as app:
            return (await app.store.send(ids[0])).distribution_id

    dist = asyncio.run(distribution_of())
    result = mailer(path, "cancel", dist, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "distribution": dist,
        "cancelled": 2,
        "counts": {"cancelled": 2},
    }
    again = mailer(path, "cancel", dist)
    assert again.output == f"cancelled 0 send(s) of distribution {dist} (2 cancelled)\n"


def test_cancel_of_an_unknown_distribution_is_an_error_naming_it(tmp_path: Path) -> None:
    path, _ = setup(tmp_path)
    result = mailer(path, "cancel", "nope")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "nope" in result.output


def test_replay_offers_only_reasons_a_bounced_or_failed_send_can_have(tmp_path: Path) -> None:
    path, _ = setup(tmp_path)
    help_text = " ".join(mailer(path, "replay", "--help").output.split())
    offered = help_text.split("--reason [", 1)[1].split("]", 1)[0].split("|")
    assert "mailbox-unknown" in offered
    assert "expired" in offered
    for never in ("delivered", "cancelled", "replayed", "suppressed-unsubscribe"):
        assert never not in offered
    refused = mailer(path, "replay", "--reason", "delivered")
    assert refused.exit_code == 2
    assert "'delivered' is not one of" in refused.output


@pytest.mark.parametrize("code", range(500, 560))
@pytest.mark.parametrize("enhanced", [None, "5.1.1", "5.2.2", "5.7.1", "5.7.28", "5.4.4", "5.3.4"])
def test_every_permanent_reply_class_gives_a_replayable_reason(
    code: int, enhanced: str | None
) -> None:
    verdict = classify(code, enhanced)
    assert verdict.reason in REPLAYABLE_REASONS


def test_replay_with_nothing_to_replay_draws_no_bar(tmp_path: Path) -> None:
    path, config = setup(tmp_path)
    asyncio.run(enqueue_and_defer(config, ["a.test"], due_at=500.0))
    result = mailer(path, "replay", "--all")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout == "requeued 0 send(s), due now\n"
