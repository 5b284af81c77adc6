"""`mailer bench` end to end, small: it completes and reports every figure.
How fast is for the benchmark itself to say, not for a test."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.bench.hooks import receiver_process, webhook_rate
from mailer.bench.runner import _enqueue, own_peak_kb
from mailer.cli import cli
from mailer.config import Config
from mailer.enqueue import MAX_RECIPIENTS
from mailer.reasons import State
from mailer.sink.runner import pick_port


def test_bench_delivers_everything_reports_measured_figures_and_records_them(
    tmp_path: Path,
) -> None:
    history = tmp_path / "var" / "bench-history.jsonl"
    result = CliRunner().invoke(
        cli,
        ["bench", "--messages", "60", "--baseline", "5", "--json", "--history-file", str(history)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["messages"] == 60
    assert report["sink_received"] == 60
    assert report["baseline_messages"] == 5
    assert report["baseline_cap_messages"] == 5
    # by default the API figure is as large as the run, in whole requests
    assert report["api_recipients"] == 1000
    assert report["bounce_samples"] >= 15
    assert report["inbound_messages"] == 100
    assert report["sink_checked_messages"] == 60
    assert report["sink_check_processes"] == os.cpu_count()
    assert report["sink_connections"] == 32
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
        "sink_checks_in_process_per_second",
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
    # and what each had once started, before the first send (Linux's /proc)
    assert len(report["startup_rss_mb_per_engine"]) == report["workers"]
    for started, peak in zip(
        report["startup_rss_mb_per_engine"], report["peak_rss_mb_per_engine"], strict=True
    ):
        assert 0 < started <= peak
    # the run is one line of the history, with what it ran on and how
    [line] = [json.loads(text) for text in history.read_text().splitlines()]
    assert line["figures"] == report
    assert line["options"]["messages"] == 60
    assert line["machine"]["rsa_operations_per_second"] == report["rsa_operations_per_second"]
    assert line["commit"]
    shown = CliRunner().invoke(cli, ["bench", "--history", "5", "--history-file", str(history)])
    assert "60 msg" in shown.output


async def test_bench_enqueues_more_than_one_request_takes_in_batches(config: Config) -> None:
    await _enqueue(config, MAX_RECIPIENTS + 50, 4)
    async with App(config) as app:
        assert await app.store.counts() == {State.QUEUED: MAX_RECIPIENTS + 50}


async def test_the_webhook_figure_pushes_the_last_events_of_a_large_run(config: Config) -> None:
    await _enqueue(config, 30, 4)  # a "queued" event each
    port = pick_port(["127.0.0.1"])
    with receiver_process(port) as received:
        hooks = await webhook_rate(config, port, "bench", received, at_most=12)
    assert (hooks.events, hooks.received) == (12, 12)
    assert hooks.per_second > 0


def test_bench_rtt_runs_with_and_without_pipelining_against_the_bound(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["bench", "--rtt", "20", "--rtt-only", "--rtt-messages", "100", "--json"],
        catch_exceptions=False,
        env={"MAILER_BENCH_HISTORY": str(tmp_path / "history.jsonl")},
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


def test_bench_with_mta_sts_delivers_under_enforce_and_reports_the_rate(tmp_path: Path) -> None:
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
        env={"MAILER_BENCH_HISTORY": str(tmp_path / "history.jsonl")},
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["mta_sts_messages_per_second"] > 0
    assert report["mta_sts_ratio"] == pytest.approx(
        report["mta_sts_messages_per_second"] / report["messages_per_second"], rel=0.01
    )


def test_bench_with_dane_delivers_under_dane_and_reports_every_run() -> None:
    # _outcome() inside the bench fails the run unless the DANE phases'
    # attempts were recorded under "dane"
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
            "--dane",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["dane_messages_per_second"] == max(report["dane_runs"])
    assert len(report["dane_runs"]) == len(report["dane_encrypt_runs"]) == 3
    assert report["dane_ratio"] == pytest.approx(
        report["dane_messages_per_second"] / report["messages_per_second"], rel=0.01
    )


def test_bench_with_tlsrpt_reports_counting_off_and_on_side_by_side() -> None:
    # the bench fails the run unless the "on" phases counted sessions and
    # the "off" phases none (_check_tls_counts)
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
            "--tlsrpt",
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["tlsrpt_off_messages_per_second"] > 0
    assert report["tlsrpt_on_messages_per_second"] > 0
    assert report["tlsrpt_ratio"] == pytest.approx(
        report["tlsrpt_on_messages_per_second"] / report["tlsrpt_off_messages_per_second"],
        rel=0.01,
    )


def test_an_engine_process_peak_is_its_own_not_its_parents() -> None:
    # a parent holding 300 MB when it starts the process, as the bench's
    # holds what it enqueued: ru_maxrss of the child would say >= 300 MB
    ballast = bytearray(300 * 1024 * 1024)
    for index in range(0, len(ballast), 4096):
        ballast[index] = 1
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        child_kb = pool.submit(own_peak_kb).result(timeout=60)
    assert 0 < child_kb < 200 * 1024
    del ballast
