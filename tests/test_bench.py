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
        ["bench", "--messages", "60", "--baseline", "5", "--api-recipients", "2000", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["messages"] == 60
    assert report["sink_received"] == 60
    assert report["baseline_messages"] == 5
    assert report["api_recipients"] == 2000
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
        "webhook_events_per_second",
    ):
        assert report[figure] > 0, figure
    assert report["ratio"] == pytest.approx(
        report["messages_per_second"] / report["baseline_messages_per_second"], rel=0.01
    )
    assert report["latency_p50_ms"] <= report["latency_p99_ms"]
