"""The line ``mailer bench`` keeps on stderr while it runs: which phase, and
how far. Only on a terminal; a log or a pipe gets nothing, so the figures
on stdout stay the only output there."""

from __future__ import annotations

import sys
from typing import TextIO

# carriage return, then erase to the end of the line: the next phase's
# text replaces the last one in place
_REWRITE = "\r\x1b[K"


def _terminal(stream: TextIO | None) -> TextIO | None:
    out = sys.stderr if stream is None else stream
    return out if out.isatty() else None


def show(text: str, stream: TextIO | None = None) -> None:
    """Replace the progress line with ``text`` (stderr unless ``stream``)."""
    out = _terminal(stream)
    if out is not None:
        out.write(f"{_REWRITE}bench: {text}")
        out.flush()


def clear(stream: TextIO | None = None) -> None:
    """Erase the progress line, so that what follows starts clean."""
    out = _terminal(stream)
    if out is not None:
        out.write(_REWRITE)
        out.flush()
