"""The sink's message store: a Maildir (stdlib :mod:`mailbox` reads it
back) that mutt, Thunderbird's import, ``mailbox.Maildir`` and friends
read. Messages are kept with ``\\n`` line ends, as Maildir tools expect,
under the trace header fields a delivering MTA adds.

Messages are delivered the Maildir way (written under ``tmp/``, synced,
renamed into ``new/``), a batch at a time: the sink takes messages faster
than one fsync after another allows (each waits for a journal commit, ~8 ms
on a busy disk), so a batch's files are synced side by side, and the file
system commits them together.
"""

from __future__ import annotations

import concurrent.futures
import mailbox
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

__all__ = ["MaildirStore"]


class MaildirStore:
    """Thread-safe adds, removals and clears on one Maildir, created on
    open; :meth:`close` ends the threads that sync its files."""

    def __init__(self, path: Path, *, sync_threads: int = 8) -> None:
        """Raises OSError when the directory cannot be created."""
        self.path = path
        self._threads = sync_threads
        self._sync = concurrent.futures.ThreadPoolExecutor(sync_threads, "maildir-fsync")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._box = mailbox.Maildir(path, create=True)
        self._lock = threading.Lock()
        # names unique on this host, with '/' and ':' escaped as maildir(5) asks
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    def add(self, trace: bytes, data: bytes) -> str:
        """Store ``trace`` (header fields, ``\\n`` line ends) above the
        message ``data``; return its Maildir key. Raises OSError."""
        [key] = self.add_many([(trace, data)])
        return key

    def add_many(self, messages: Sequence[tuple[bytes, bytes]]) -> list[str]:
        """:meth:`add` for each (trace, data), in order; every message is
        on disk (synced) when this returns. Raises OSError (then none of
        them is in ``new/``)."""
        keys = [f"{time.time():.6f}.{uuid.uuid4().hex}.{self._host}" for _ in messages]
        tmp, new = self.path / "tmp", self.path / "new"
        open_files: list[tuple[str, int]] = []
        try:
            for key, (trace, data) in zip(keys, messages, strict=True):
                fd = os.open(tmp / key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                open_files.append((key, fd))
                content = memoryview(trace + data.replace(b"\r\n", b"\n"))
                while content:
                    content = content[os.write(fd, content) :]
            # concurrent fsyncs share the file system's journal commits; a
            # few threads each syncing a share of the files do as well as
            # one thread per file, and hand out far fewer calls
            fds = [fd for _, fd in open_files]
            shares = [fds[i :: self._threads] for i in range(min(self._threads, len(fds)))]
            list(self._sync.map(_sync_all, shares))
        except OSError:
            for key, _ in open_files:
                (tmp / key).unlink(missing_ok=True)
            raise
        finally:
            for _, fd in open_files:
                os.close(fd)
        for key in keys:
            os.rename(tmp / key, new / key)
        # the renames themselves
        fd = os.open(new, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return keys

    def remove(self, key: str) -> None:
        """Remove one message; a key that is gone already is no error.
        Raises OSError."""
        with self._lock:
            self._box.discard(key)

    def close(self) -> None:
        """End the sync threads (adds after this raise RuntimeError)."""
        self._sync.shutdown(wait=True)

    def clear(self) -> None:
        """Remove every message. Raises OSError."""
        with self._lock:
            self._box.clear()


def _sync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)
