"""Sample returned messages, one or more per layout the parsers know,
written for this project from public descriptions of each format. The
parser tests and ``mailer bench`` read them."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent


def sample_bytes() -> list[bytes]:
    """Every sample, in name order."""
    return [path.read_bytes() for path in sorted(SAMPLES.glob("*.eml"))]
