"""The report of ``mailer check-domain``: its model, its stable JSON shape
and its human rendering (all pure).

JSON shape (documented in ``docs/check-domain.md``; keys are only ever
added, never renamed or removed)::

    {"domain": str, "region": str, "verdict": "ok" | "warning" | "action-needed",
     "summary": str,
     "checks": [{"name": "spf" | "sender" | "dkim" | "dmarc" | "tls"
                 (or the one "domain" check of a name that does not exist),
                 "status": "ok" | "warning" | "action-needed",
                 "summary": str, "details": {...}}],
     "fixes": [{"check": str, "status": str, "text": str,
                "record": {"name": str, "type": "TXT", "value": str} | null}]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "EXIT_ACTION_NEEDED",
    "EXIT_COULD_NOT_RUN",
    "EXIT_OK",
    "Check",
    "DomainReport",
    "Fix",
    "RecordFix",
    "Status",
    "error_json",
    "render_text",
    "worst",
]

EXIT_OK = 0
EXIT_ACTION_NEEDED = 1
EXIT_COULD_NOT_RUN = 2


class Status(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ACTION_NEEDED = "action-needed"

    @property
    def label(self) -> str:
        return self.value.replace("-", " ")

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.ACTION_NEEDED: 2}


def worst(statuses: Iterable[Status]) -> Status:
    """The most serious of ``statuses`` (OK for none)."""
    return max(statuses, key=lambda s: s.rank, default=Status.OK)


@dataclass(frozen=True)
class RecordFix:
    """A DNS record to publish (replacing what is at ``name`` for SPF/DMARC)."""

    name: str
    value: str
    type: str = "TXT"


@dataclass(frozen=True)
class Fix:
    """One concrete thing to do; ``record`` when it is publishing a record."""

    check: str
    status: Status
    text: str
    record: RecordFix | None = None


@dataclass(frozen=True)
class Check:
    """One line of the report. ``details`` holds JSON-ready values only."""

    name: str
    status: Status
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    fixes: tuple[Fix, ...] = ()


@dataclass(frozen=True)
class DomainReport:
    domain: str
    region: str
    checks: tuple[Check, ...]

    @property
    def verdict(self) -> Status:
        return worst(c.status for c in self.checks)

    @property
    def fixes(self) -> tuple[Fix, ...]:
        """Fixes of every check, what needs action first."""
        every = [f for c in self.checks for f in c.fixes]
        return tuple(sorted(every, key=lambda f: -f.status.rank))

    @property
    def exit_code(self) -> int:
        return EXIT_ACTION_NEEDED if self.verdict is Status.ACTION_NEEDED else EXIT_OK

    def check(self, name: str) -> Check:
        """The check called ``name``. Raises KeyError when there is none."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def summary(self) -> str:
        counts = {s: sum(1 for c in self.checks if c.status is s) for s in Status}
        if counts[Status.ACTION_NEEDED]:
            return f"{counts[Status.ACTION_NEEDED]} of {len(self.checks)} checks need action"
        if counts[Status.WARNING]:
            return f"{counts[Status.WARNING]} of {len(self.checks)} checks have warnings"
        return f"all {len(self.checks)} checks passed"

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape (see the module docstring)."""
        return {
            "domain": self.domain,
            "region": self.region,
            "verdict": self.verdict.value,
            "summary": self.summary,
            "checks": [
                {
                    "name": c.name,
                    "status": c.status.value,
                    "summary": c.summary,
                    "details": dict(c.details),
                }
                for c in self.checks
            ],
            "fixes": [_fix_json(f) for f in self.fixes],
        }


def _fix_json(fix: Fix) -> dict[str, Any]:
    record = None
    if fix.record is not None:
        record = {"name": fix.record.name, "type": fix.record.type, "value": fix.record.value}
    return {"check": fix.check, "status": fix.status.value, "text": fix.text, "record": record}


def error_json(domain: str, region: str, error: str) -> dict[str, Any]:
    """The JSON printed (exit 2) when the check could not run at all."""
    return {"domain": domain, "region": region, "verdict": "could-not-run", "error": error}


def render_text(report: DomainReport) -> list[str]:
    """Lines for a terminal: the title with the verdict, one line per
    check, then the fixes numbered."""
    title = f"{report.domain} (region {report.region}): {report.verdict.label.upper()}"
    lines = [f"{title} — {report.summary}"]
    width = max(len(s.label) for s in Status) + 2
    name_width = max((len(c.name) for c in report.checks), default=0)
    for c in report.checks:
        lines.append(
            f"  {('[' + c.status.label + ']'):<{width}} {c.name:<{name_width}}  {c.summary}"
        )
    lines.extend(_render_fixes(report.fixes))
    return lines


def _render_fixes(fixes: Sequence[Fix]) -> list[str]:
    if not fixes:
        return []
    lines = ["Fixes:"]
    for number, fix in enumerate(fixes, start=1):
        lines.append(f"  {number}. [{fix.check}] {fix.text}")
        if fix.record is not None:
            lines.append(
                f"     {fix.record.name}. IN {fix.record.type} {_quoted(fix.record.value)}"
            )
    return lines


def _quoted(value: str) -> str:
    """The value as zone-file character-strings; a long one (a DKIM key)
    split into strings of 255 bytes as DNS needs (RFC 1035 §3.3)."""
    pieces = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    quoted = ['"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in pieces]
    return quoted[0] if len(quoted) == 1 else "( " + " ".join(quoted) + " )"
