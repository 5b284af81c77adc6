"""The history of ``mailer bench`` runs: one JSON line per run (its date,
the commit measured, the machine's yardsticks, the options, every figure),
appended after each run, and the last N runs side by side as a table
(``mailer bench --history N``), so that a regression shows against the
runs before it. Figures of different machines or loads differ: the RSA
rate of one core and the load average are in the table to tell them apart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.errors import ValidationError

DEFAULT_PATH = Path("var/bench-history.jsonl")

Entry = dict[str, Any]


def commit_of(directory: Path) -> str | None:
    """The checkout's commit (``-dirty`` with uncommitted changes) of the
    code in ``directory``; None outside a git checkout or without git."""
    try:
        found = subprocess.run(
            ["git", "-C", str(directory), "describe", "--always", "--dirty", "--abbrev=10"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (found.stdout.strip() or None) if found.returncode == 0 else None


def machine() -> dict[str, Any]:
    """What the figures depend on besides the code: CPUs, the load average
    when the run began, the Python and the host."""
    return {
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def entry(
    *,
    options: Mapping[str, Any],
    figures: Mapping[str, Any] | None,
    rtt: Mapping[str, Any] | None,
    machine: Mapping[str, Any],
    commit: str | None,
    at: datetime,
) -> Entry:
    """One run's line (pure). The RSA rate of one core is the machine's
    yardstick; it is copied next to the machine's other facts."""
    facts = dict(machine)
    if figures is not None:
        facts["rsa_operations_per_second"] = figures.get("rsa_operations_per_second")
    return {
        "date": at.astimezone(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": facts,
        "options": dict(options),
        "figures": None if figures is None else dict(figures),
        "rtt": None if rtt is None else dict(rtt),
    }


def append(path: Path, line: Entry) -> None:
    """Add ``line`` to the history at ``path`` (made with its folder when
    missing), flushed to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


def parse(text: str, source: str = "history") -> list[Entry]:
    """The entries of a history file's text (pure); blank lines skipped.
    Raises ValidationError naming the line of one that is not a run."""
    found: list[Entry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise ValidationError(f"{source}:{number}", f"not JSON: {exc}") from exc
        if not isinstance(value, dict) or not isinstance(value.get("date"), str):
            raise ValidationError(f"{source}:{number}", "not a bench run (no date)")
        found.append(value)
    return found


def last(path: Path, count: int) -> list[Entry]:
    """The last ``count`` runs in ``path``, oldest first; none when there
    is no file yet. Raises ValidationError for a file that cannot be read
    or a line that is not a run."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError("history", f"cannot read {path}: {exc}") from exc
    return parse(text, str(path))[-count:]


def _figure(entry: Entry, key: str) -> float | None:
    figures = entry.get("figures") or {}
    value = figures.get(key)
    return float(value) if isinstance(value, int | float) else None


def _rtt(entry: Entry, run: str, key: str) -> float | None:
    value = ((entry.get("rtt") or {}).get(run) or {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def _options(entry: Entry) -> str:
    options = entry.get("options") or {}
    parts = []
    if not options.get("rtt_only"):
        parts.append(f"{options.get('messages', '?')} msg")
        parts.append(f"{options.get('workers', '?')} proc")
        parts.append(str(options.get("store", "?")))
    if options.get("mta_sts"):
        parts.append("mta-sts")
    if options.get("rtt_ms") is not None:
        parts.append(f"rtt {options['rtt_ms']:g} ms")
    return ", ".join(parts)


def _per_kilo_rsa(entry: Entry) -> float | None:
    rate, rsa = _figure(entry, "messages_per_second"), _figure(entry, "rsa_operations_per_second")
    return rate / rsa * 1000 if rate is not None and rsa else None


@dataclass(frozen=True)
class Row:
    label: str
    value: Callable[[Entry], float | None]
    # the digits shown, and whether a rise is the good direction (for the
    # change against the run before); a yardstick of the machine is shown
    # changing but is no better or worse
    digits: int = 0
    higher_is_better: bool = True
    judged: bool = True


ROWS = (
    Row(
        "RSA-2048 op/s, one core",
        lambda e: _figure(e, "rsa_operations_per_second"),
        judged=False,
    ),
    Row("engine msg/s", lambda e: _figure(e, "messages_per_second")),
    Row("  per 1,000 RSA op/s", _per_kilo_rsa, digits=1),
    Row("naive baseline msg/s", lambda e: _figure(e, "baseline_messages_per_second")),
    Row("ratio to baseline", lambda e: _figure(e, "ratio"), digits=1),
    Row("latency p50 ms", lambda e: _figure(e, "latency_p50_ms"), higher_is_better=False),
    Row("latency p99 ms", lambda e: _figure(e, "latency_p99_ms"), higher_is_better=False),
    Row("peak RSS MB", lambda e: _figure(e, "peak_rss_mb"), higher_is_better=False),
    Row("DKIM signatures/s", lambda e: _figure(e, "dkim_signatures_per_second")),
    Row("API recipients/s", lambda e: _figure(e, "api_recipients_per_second")),
    Row("bounces parsed/s", lambda e: _figure(e, "bounces_parsed_per_second")),
    Row("inbound msg/s", lambda e: _figure(e, "inbound_accepted_per_second")),
    Row("sink checks msg/s", lambda e: _figure(e, "sink_checks_per_second")),
    Row("sink checks alone msg/s", lambda e: _figure(e, "sink_checks_in_process_per_second")),
    Row("webhook events/s", lambda e: _figure(e, "webhook_events_per_second")),
    Row("MTA-STS msg/s", lambda e: _figure(e, "mta_sts_messages_per_second") or None),
    Row("RTT PIPELINING msg/s", lambda e: _rtt(e, "pipelined", "messages_per_second")),
    Row("RTT without msg/s", lambda e: _rtt(e, "baseline", "messages_per_second")),
)


def _cell(value: float | None, before: float | None, row: Row) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{row.digits}f}"
    if before:
        change = (value - before) / before
        # a change of less than 1 % is noise on any machine
        if abs(change) >= 0.01:
            worse = row.judged and (change < 0 if row.higher_is_better else change > 0)
            text += f" {change:+.0%}{' !' if worse else ''}"
    return text


def table(entries: list[Entry]) -> tuple[list[str], list[list[str]]]:
    """The runs side by side (pure): a header (one column per run, oldest
    first) and rows of a label and one cell per run. A figure carries its
    change against the run to its left; `!` marks a change for the worse.
    Rows no run has are left out."""
    header = ["", *(f"run {index + 1}" for index in range(len(entries)))]
    rows: list[list[str]] = [
        ["date (UTC)", *(str(e.get("date", "?"))[:16].replace("T", " ") for e in entries)],
        ["commit", *(str(e.get("commit") or "-") for e in entries)],
        ["options", *(_options(e) for e in entries)],
        [
            "CPUs, load average",
            *(
                f"{(e.get('machine') or {}).get('cpus', '?')}, "
                f"{(e.get('machine') or {}).get('load_average', '?')}"
                for e in entries
            ),
        ],
    ]
    for row in ROWS:
        values = [row.value(e) for e in entries]
        if all(value is None for value in values):
            continue
        cells = [
            _cell(value, values[index - 1] if index else None, row)
            for index, value in enumerate(values)
        ]
        rows.append([row.label, *cells])
    return header, rows
