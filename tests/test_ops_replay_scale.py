"""Replaying 100,000 failed sends: batches with a progress bar, and memory
that stays a few tens of MB above the idle process.

The replay runs in a child process of its own so that its peak RSS is its
own (this test process carries every earlier test's peak). The child loads
the CLI, resets its peak-RSS mark, notes its RSS (idle), replays, and
reports its peak RSS (Linux /proc: VmRSS, VmHWM).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from mailer.store.sqlite.store import SQLiteStore

SENDS = 100_000
SUPPRESSED = 100  # addresses on the account's list: skipped, not requeued
MAX_GROWTH_MIB = 50

CHILD = r"""
import json, sys
from mailer.cli import cli  # everything a replay imports, loaded before measuring

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # KiB
    raise RuntimeError(key)

# the peak (VmHWM) starts again here, so it is the replay's own peak and not
# the imports' transient one
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
idle = status("VmRSS")
try:
    cli.main(sys.argv[1:], prog_name="mailer", standalone_mode=False)
finally:
    print(json.dumps({"idle_kib": idle, "peak_kib": status("VmHWM")}), file=sys.stderr)
"""


def failed_sends(count: int) -> Iterator[tuple[object, ...]]:
    for i in range(count):
        address = f"respondent{i}@dest{i % 50}.test"
        yield (
            f"s{i:09d}",
            "d1",
            "acme",
            address,
            address,
            f"dest{i % 50}.test",
            f"Respondent {i}",
            json.dumps({"token": f"t{i}"}),
            f"<s{i:09d}@mailer.test>",
            "failed",
            "expired",
            1000.0,
            3,
            1000.0,
            2000.0 + i,
            "451 4.3.0 try later",
        )


def build_store(path: Path) -> None:
    """The schema through the store, then rows straight in with SQL: the
    fastest way to 100,000 failed sends."""

    async def migrate() -> None:
        async with SQLiteStore(path):
            pass

    asyncio.run(migrate())
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO distributions (id, account, sender_address, sender_name, subject, "
            "html, text, created_at) VALUES ('d1', 'acme', 'hr@acme.test', 'ACME', 'Survey', "
            "'<p>hi</p>', NULL, 1000.0)"
        )
        conn.executemany(
            "INSERT INTO sends (id, distribution_id, account, recipient, rcpt_key, domain, name, "
            "variables, message_id, state, reason, due_at, attempts, created_at, updated_at, "
            "last_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            failed_sends(SENDS),
        )
        conn.executemany(
            "INSERT INTO suppressions (account, address, reason, created_at) "
            "VALUES ('acme', ?, 'suppressed-bounce', 1500.0)",
            ((f"respondent{i}@dest{i % 50}.test",) for i in range(0, SENDS, SENDS // SUPPRESSED)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_replay_of_100000_failed_sends_runs_in_batches_with_flat_memory(tmp_path: Path) -> None:
    database = tmp_path / "big.sqlite3"
    build_store(database)
    config = tmp_path / "mailer.toml"
    config.write_text(f'database = "{database}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            "--config",
            str(config),
            "replay",
            "--reason",
            "expired",
            "--note",
            "mass replay",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    replayed = SENDS - SUPPRESSED
    assert f"requeued {replayed} send(s)" in child.stdout
    assert f"skipped {SUPPRESSED} whose address is on a suppression list" in child.stdout
    assert f"{replayed}/{replayed}" in child.stderr  # the progress bar, complete
    memory = json.loads(child.stderr.strip().splitlines()[-1])
    idle, peak = memory["idle_kib"] / 1024, memory["peak_kib"] / 1024
    print(
        f"\nreplay of {SENDS:,} failed sends: idle {idle:.1f} MiB, peak {peak:.1f} MiB, "
        f"growth {peak - idle:.1f} MiB"
    )

    conn = sqlite3.connect(database)
    try:
        states = dict(conn.execute("SELECT state, count(*) FROM sends GROUP BY state").fetchall())
        events = conn.execute(
            "SELECT count(*), count(DISTINCT send_id) FROM events "
            "WHERE reason = 'replayed' AND detail = 'mass replay'"
        ).fetchone()
        kept = conn.execute("SELECT min(attempts), max(attempts) FROM sends").fetchone()
    finally:
        conn.close()
    assert states == {"queued": replayed, "failed": SUPPRESSED}
    assert events == (replayed, replayed)
    assert kept == (3, 3)
    assert peak - idle < MAX_GROWTH_MIB
