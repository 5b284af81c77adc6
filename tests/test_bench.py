"""`mailer bench` end to end, small: it completes and reports every figure.
How fast is for the benchmark itself to say, not for a test."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.bench.runner import _enqueue
from mailer.cli import cli
from mailer.config import Config
from mailer.enqueue import MAX_RECIPIENTS
from mailer.reasons import State


def test_bench_delivers_everything_and_reports_measured_figures() -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--messages", "60", "--baseline", "5", "--api-recipients", "2000", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["messages"] == 60
    assert report["sink_received"] == 60
    assert report["baseline_messages"] == 5
    assert report["api_recipients"] == 2000
    assert report["bounce_samples"] >= 15
    assert report["inbound_messages"] == 100
    assert report["sink_checked_messages"] == 60
    # at least queued, sending and delivered for each message, all received
    assert report["webhook_events"] >= 180
    assert report["webhook_events_received"] == report["webhook_events"]
    for figure in (
        "messages_per_second",
        "baseline_messages_per_second",
        "dkim_signatures_per_second",
        "rsa_operations_per_second",
        "dkimpy_signatures_per_second",
        "api_recipients_per_second",
        "bounces_parsed_per_second",
        "inbound_accepted_per_second",
        "sink_checks_per_second",
        "webhook_events_per_second",
        "ceiling_messages_per_second",
    ):
        assert report[figure] > 0, figure
    assert report["ceiling_connections"] == 32
    assert report["ceiling_ratio"] == pytest.approx(
        report["messages_per_second"] / report["ceiling_messages_per_second"], rel=0.01
    )
    assert report["ratio"] == pytest.approx(
        report["messages_per_second"] / report["baseline_messages_per_second"], rel=0.01
    )
    assert report["latency_p50_ms"] <= report["latency_p99_ms"]
    # one figure per engine process
    assert len(report["peak_rss_mb_per_engine"]) == report["workers"]
    assert max(report["peak_rss_mb_per_engine"]) == report["peak_rss_mb"]


async def test_bench_enqueues_more_than_one_request_takes_in_batches(config: Config) -> None:
    await _enqueue(config, MAX_RECIPIENTS + 50, 4)
    async with App(config) as app:
        assert await app.store.counts() == {State.QUEUED: MAX_RECIPIENTS + 50}


def test_bench_rtt_runs_with_and_without_pipelining_against_the_bound() -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--rtt", "20", "--rtt-only", "--rtt-messages", "100", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    rtt = json.loads(result.output.strip().splitlines()[-1])["rtt"]
    pipelined, baseline = rtt["pipelined"], rtt["baseline"]
    assert (pipelined["pipelining"], baseline["pipelining"]) == (True, False)
    for run in (pipelined, baseline):
        assert run["sink_received"] == run["messages"] == 100
        assert run["connections"] == 4 * 4
        assert run["message_p50_ms"] <= run["message_p99_ms"]
        # no message can be faster than the round trips its exchange needs
        assert run["message_p50_ms"] >= (2 if run["pipelining"] else 4) * 20
    # 16 connections, 2 or 4 round trips of 20 ms a message
    assert pipelined["bound_messages_per_second"] == 400.0
    assert baseline["bound_messages_per_second"] == 200.0
    assert rtt["speedup"] == pytest.approx(
        pipelined["per_connection_per_second"] / baseline["per_connection_per_second"], rel=0.01
    )


def test_bench_with_mta_sts_delivers_under_enforce_and_reports_the_rate() -> None:
    # _outcome() inside the bench fails the run unless the enforce phases'
    # attempts were recorded under "mta-sts enforce"
    result = CliRunner().invoke(
        cli,
        [
            "bench",
            "--messages",
            "40",
            "--baseline",
            "5",
            "--api-recipients",
            "1000",
            "--workers",
            "1",
            "--mta-sts",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["mta_sts_messages_per_second"] > 0
    assert report["mta_sts_ratio"] == pytest.approx(
        report["mta_sts_messages_per_second"] / report["messages_per_second"], rel=0.01
    )
