"""The sink's message store: a Maildir (stdlib :mod:`mailbox`) that mutt,
Thunderbird's import, ``mailbox.Maildir`` and friends read. Messages are
kept with ``\\n`` line ends, as Maildir tools expect, under the trace
header fields a delivering MTA adds."""

from __future__ import annotations

import mailbox
import threading
from pathlib import Path

__all__ = ["MaildirStore"]


class MaildirStore:
    """Thread-safe adds, removals and clears on one Maildir, created on open."""

    def __init__(self, path: Path) -> None:
        """Raises OSError when the directory cannot be created."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._box = mailbox.Maildir(path, create=True)
        self._lock = threading.Lock()

    def add(self, trace: bytes, data: bytes) -> str:
        """Store ``trace`` (header fields, ``\\n`` line ends) above the
        message ``data``; return its Maildir key. Raises OSError."""
        with self._lock:
            return str(self._box.add(trace + data.replace(b"\r\n", b"\n")))

    def remove(self, key: str) -> None:
        """Remove one message; a key that is gone already is no error.
        Raises OSError."""
        with self._lock:
            self._box.discard(key)

    def clear(self) -> None:
        """Remove every message. Raises OSError."""
        with self._lock:
            self._box.clear()
