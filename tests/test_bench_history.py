"""What `mailer bench` keeps and prints around its figures, without running
it: the history of runs and its table, latencies counted from the start of
delivery, the API figure's default size, the progress line on a terminal
only. (A real run writing its history line is in test_bench.)"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mailer.bench import history, progress
from mailer.bench.runner import api_recipients_for, delivery_latencies, resident_mb
from mailer.cli import cli
from mailer.cli.bench import _record
from mailer.errors import ValidationError
from mailer.reasons import Reason, State
from mailer.store.models import Event

OPTIONS = {"messages": 5000, "workers": 2, "store": "sqlite", "mta_sts": False, "rtt_ms": None}


def run_line(rate: float, *, rsa: float = 3000.0, p99: float = 900.0, **extra: Any) -> Any:
    figures = {
        "messages_per_second": rate,
        "rsa_operations_per_second": rsa,
        "latency_p99_ms": p99,
        "baseline_messages_per_second": 15.0,
    }
    return history.entry(
        options={**OPTIONS, **extra},
        figures=figures,
        rtt=None,
        machine={"cpus": 2, "load_average": 1.5},
        commit="abc1234",
        at=datetime(2026, 12, 6, 7, 0, tzinfo=UTC),
    )


def test_each_run_is_one_line_with_date_commit_yardstick_options_and_figures() -> None:
    line = run_line(150.0)
    assert line["date"] == "2026-12-06T07:00:00+00:00"
    assert line["commit"] == "abc1234"
    assert line["machine"] == {"cpus": 2, "load_average": 1.5, "rsa_operations_per_second": 3000.0}
    assert line["options"]["messages"] == 5000
    assert line["figures"]["messages_per_second"] == 150.0


def test_history_appends_lines_and_reads_back_the_last_n_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "var" / "bench-history.jsonl"
    assert history.last(path, 5) == []
    for rate in (100.0, 110.0, 120.0):
        history.append(path, run_line(rate))
    assert len(path.read_text().splitlines()) == 3
    runs = history.last(path, 2)
    assert [r["figures"]["messages_per_second"] for r in runs] == [110.0, 120.0]


def test_a_line_that_is_not_a_run_is_an_error_naming_its_line(tmp_path: Path) -> None:
    good = json.dumps(run_line(100.0))
    with pytest.raises(ValidationError) as err:
        history.parse(f"{good}\n\n{{broken\n", "h.jsonl")
    assert err.value.field == "h.jsonl:3"
    assert "not JSON" in str(err.value)
    with pytest.raises(ValidationError) as err:
        history.parse('{"figures": {}}\n', "h.jsonl")
    assert (err.value.field, "no date" in str(err.value)) == ("h.jsonl:1", True)


def test_the_table_puts_runs_side_by_side_and_marks_a_regression() -> None:
    runs = [run_line(150.0), run_line(120.0, p99=700.0), run_line(121.0, rsa=1500.0)]
    header, rows = history.table(runs)
    assert header == ["", "run 1", "run 2", "run 3"]
    by_label = {row[0]: row[1:] for row in rows}
    assert by_label["date (UTC)"] == ["2026-12-06 07:00"] * 3
    assert by_label["options"][0] == "5000 msg, 2 proc, sqlite"
    # fewer messages per second is worse, a lower p99 better, <1 % is noise
    assert by_label["engine msg/s"] == ["150", "120 -20% !", "121"]
    assert by_label["latency p99 ms"] == ["900", "700 -22%", "900 +29% !"]
    # the machine's yardstick changes, but is not the code's doing
    assert by_label["RSA-2048 op/s, one core"] == ["3,000", "3,000", "1,500 -50%"]
    # normalised by the machine's RSA rate: run 3 ran on a machine half as fast
    assert by_label["  per 1,000 RSA op/s"] == ["50.0", "40.0 -20% !", "80.7 +102%"]
    # rows no run measured are left out
    assert "MTA-STS msg/s" not in by_label
    assert "RTT PIPELINING msg/s" not in by_label


def test_an_rtt_only_run_shows_its_rtt_figures_and_dashes_elsewhere() -> None:
    rtt_only = history.entry(
        options={"rtt_only": True, "rtt_ms": 50.0},
        figures=None,
        rtt={"pipelined": {"messages_per_second": 148.0}, "baseline": {"messages_per_second": 76}},
        machine={"cpus": 2, "load_average": 3.2},
        commit=None,
        at=datetime(2026, 12, 6, 7, 5, tzinfo=UTC),
    )
    _, rows = history.table([run_line(150.0), rtt_only])
    by_label = {row[0]: row[1:] for row in rows}
    assert by_label["options"][1] == "rtt 50 ms"
    assert by_label["commit"][1] == "-"
    assert by_label["engine msg/s"] == ["150", "-"]
    assert by_label["RTT PIPELINING msg/s"] == ["-", "148"]


def test_bench_history_n_prints_the_table_without_running(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    runner = CliRunner()
    empty = runner.invoke(cli, ["bench", "--history", "3", "--history-file", str(path)])
    assert (empty.exit_code, empty.output.strip()) == (0, "no bench runs recorded yet")
    history.append(path, run_line(150.0))
    history.append(path, run_line(120.0))
    shown = runner.invoke(cli, ["bench", "--history", "3", "--history-file", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "run 2" in shown.output
    assert "120 -20% !" in shown.output
    as_json = runner.invoke(cli, ["bench", "--history", "1", "--history-file", str(path), "--json"])
    assert [r["figures"]["messages_per_second"] for r in json.loads(as_json.output)] == [120.0]
    path.write_text("not json\n")
    bad = runner.invoke(cli, ["bench", "--history", "1", "--history-file", str(path)])
    assert bad.exit_code != 0
    assert f"{path}:1" in bad.output


def event(seq: int, send: str, state: State, at: float) -> Event:
    reason = Reason.QUEUED if state is State.QUEUED else Reason.DELIVERED
    return Event(seq, send, "dist", at, state, reason)


def test_latency_starts_when_delivery_starts_not_when_queued_long_before() -> None:
    since = 1000.0
    events = [
        event(1, "early", State.QUEUED, 900.0),  # waited 100 s for the engine
        event(2, "late", State.QUEUED, 1002.0),  # queued while it ran
        event(3, "early", State.SENDING, 1000.1),
        event(4, "early", State.DELIVERED, 1000.5),
        event(5, "late", State.DELIVERED, 1002.25),
    ]
    queued_later: dict[str, float] = {}
    assert list(delivery_latencies(events[:2], since, queued_later)) == []
    assert queued_later == {"late": 1002.0}
    assert list(delivery_latencies(events[2:], since, queued_later)) == [0.5, 0.25]
    # nothing kept once delivered
    assert queued_later == {}


def test_the_api_figure_scales_with_the_run() -> None:
    assert api_recipients_for(60) == 1000
    assert api_recipients_for(5000) == 5000
    assert api_recipients_for(5001) == 6000
    assert api_recipients_for(1_000_000) == 100_000


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_is_written_on_a_terminal_only() -> None:
    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress.show("enqueued 1,000 of 5,000", stream)
        progress.show("delivering, 3 s", stream)
        progress.clear(stream)
    assert terminal.getvalue() == (
        "\r\x1b[Kbench: enqueued 1,000 of 5,000\r\x1b[Kbench: delivering, 3 s\r\x1b[K"
    )
    assert pipe.getvalue() == ""


def test_the_resident_set_is_read_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmRSS:\t  104448 kB\nThreads:\t3\n"
    assert resident_mb(status) == 102.0
    assert resident_mb("Name:\tpython\n") is None


def test_a_history_that_cannot_be_written_is_an_error_naming_the_option(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValidationError) as err:
        _record(
            tmp_path / "a-file" / "history.jsonl",
            dict(OPTIONS),
            None,
            None,
            {"cpus": 2, "load_average": 1.0},
            datetime(2026, 12, 6, tzinfo=UTC),
        )
    assert err.value.field == "history-file"
