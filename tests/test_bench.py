"""`mailer bench` end to end, small: it completes and reports every figure.
How fast is for the benchmark itself to say, not for a test."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from mailer.cli import cli


def test_bench_delivers_everything_and_reports_measured_figures() -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--messages", "60", "--baseline", "5", "--history", "500", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["messages"] == 60
    assert report["sink_received"] == 60
    assert report["baseline_messages"] == 5
    assert report["baseline_cap_seconds"] == 20
    # --api-recipients follows --messages, never below the 1,000 of one request
    assert report["api_recipients"] == 1000
    for figure in (
        "messages_per_second",
        "baseline_messages_per_second",
        "dkim_signatures_per_second",
        "rsa_operations_per_second",
        "dkimpy_signatures_per_second",
        "api_recipients_per_second",
    ):
        assert report[figure] > 0, figure
    assert report["ratio"] == pytest.approx(
        report["messages_per_second"] / report["baseline_messages_per_second"], rel=0.01
    )
    assert report["latency_p50_ms"] <= report["latency_p99_ms"]
    # --history: the same delivery over a store with 500 finished sends
    assert report["history"] == 500
    assert report["history_messages_per_second"] > 0
    assert report["history_ratio"] == pytest.approx(
        report["history_messages_per_second"] / report["messages_per_second"], rel=0.01
    )
    # latencies run on the delivery clock: none is longer than the delivery
    # itself (engine start-up before the clock is in neither)
    assert report["latency_p99_ms"] <= report["deliver_seconds"] * 1000 + 5


def test_bench_help_documents_the_baseline_cap_and_the_api_default() -> None:
    text = " ".join(CliRunner().invoke(cli, ["bench", "--help"]).output.split())
    assert "it stops after 20 s in any case" in text
    assert "[default: --messages, at least 1,000]" in text
