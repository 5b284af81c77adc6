"""The overview's chart of the last hour, drawn as SVG on the server
(pure): deliveries per minute as bars, the deferral rate as a line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.store.models import Throughput

__all__ = ["Chart", "chart_of", "deferral_rate"]

WIDTH = 720
HEIGHT = 200
PAD_LEFT = 44
PAD_BOTTOM = 24
PAD_TOP = 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    """Coordinates ready for the template; ``summary`` says it in words
    for a screen reader."""

    width: int
    height: int
    bars: tuple[Bar, ...]
    rate_points: str
    peak: int
    ticks: tuple[tuple[float, str], ...]
    baseline: float
    summary: str
    delivered: int
    deferred: int
    rate: float


def deferral_rate(minutes: Sequence[Throughput]) -> float:
    """Deferrals among all outcomes of ``minutes`` (0 with none)."""
    deferred = sum(m.deferred for m in minutes)
    total = sum(m.delivered + m.deferred + m.bounced + m.failed for m in minutes)
    return deferred / total if total else 0.0


def chart_of(minutes: Sequence[Throughput]) -> Chart:
    """The chart of ``minutes`` (oldest first, one entry a minute)."""
    count = max(len(minutes), 1)
    plot_w = WIDTH - PAD_LEFT
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = plot_w / count
    peak = max((m.delivered for m in minutes), default=0)
    scale = plot_h / peak if peak else 0.0
    baseline = float(PAD_TOP + plot_h)
    bars = []
    points = []
    for i, m in enumerate(minutes):
        x = PAD_LEFT + i * step
        h = m.delivered * scale
        at = datetime.fromtimestamp(m.minute, UTC).strftime("%H:%M")
        bars.append(Bar(x + 1, baseline - h, max(step - 2, 1), h, f"{at}: {m.delivered}"))
        rate = deferral_rate([m])
        points.append(f"{x + step / 2:.1f},{baseline - rate * plot_h:.1f}")
    ticks = []
    for i in range(0, len(minutes), 10):
        at = datetime.fromtimestamp(minutes[i].minute, UTC).strftime("%H:%M")
        ticks.append((PAD_LEFT + i * step, at))
    delivered = sum(m.delivered for m in minutes)
    deferred = sum(m.deferred for m in minutes)
    rate = deferral_rate(minutes)
    summary = (
        f"{delivered} delivered and {deferred} deferred in the last {len(minutes)} minutes; "
        f"deferral rate {rate:.1%}; busiest minute {peak} delivered"
    )
    return Chart(
        WIDTH,
        HEIGHT,
        tuple(bars),
        " ".join(points),
        peak,
        tuple(ticks),
        baseline,
        summary,
        delivered,
        deferred,
        rate,
    )
