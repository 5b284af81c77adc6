"""The SQLite store's files on disk: they hold recipients' addresses and
variables, so only their owner may read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mailer.store.models import NewDistribution, NewSend
from mailer.store.sqlite.store import SQLiteStore

DIST = NewDistribution(
    account="acme",
    sender_address="hr@acme.test",
    sender_name="HR",
    subject="Survey",
    html=None,
    text="Hello",
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_database_and_its_wal_files_are_created_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "var" / "mailer.sqlite3"
    old = os.umask(0o022)  # the usual umask would make them 0644
    try:
        async with SQLiteStore(path) as store:
            await store.enqueue(DIST, [NewSend("ann@example.test")], hostname="h", now=1.0)
            # mode() raises when a file is missing
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert (mode(path), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
    finally:
        os.umask(old)
    assert mode(path.parent) == 0o700


async def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    async with SQLiteStore(path):
        pass
    path.chmod(0o640)  # an operator's choice, e.g. a group that reads stats
    async with SQLiteStore(path) as store:
        await store.enqueue(DIST, [NewSend("ann@example.test")], hostname="h", now=1.0)
    assert mode(path) == 0o640
