"""The recipients CSV of ``mailer send``, as people really make it (pure).

- Encoding: UTF-8, with or without the BOM Excel writes ("CSV UTF-8"), else
  Windows-1252, as German Excel saves "CSV (Trennzeichen-getrennt)"; or the
  encoding given.
- Delimiter: ``,``, ``;`` or tab, whichever the header row uses most.
- Header names in any case: ``Email``, ``NAME``; a variable column matches
  the template's spelling of that name whatever its case.
- Each problem is reported by its CSV line (1 = the header row): a short
  row, an empty cell of a column a template uses, a repeated address (the
  first stays, the later ones are dropped with a note).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass, field

from mailer.enqueue import RecipientInput
from mailer.errors import ValidationError

DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class CsvProblem:
    """One row left out: its CSV line and why."""

    line: int
    reason: str


@dataclass
class CsvRecipients:
    """The rows to enqueue, the CSV line of each, and the rows left out."""

    recipients: list[RecipientInput] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[CsvProblem] = field(default_factory=list)
    duplicates: list[CsvProblem] = field(default_factory=list)
    encoding: str = "utf-8"
    delimiter: str = ","


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """The text of ``data`` and the encoding it was read with. Raises
    ValidationError("csv") when it is in neither UTF-8 nor Windows-1252 (or
    not in ``encoding``), or ``encoding`` is unknown."""
    if encoding is not None:
        try:
            return data.decode(encoding), encoding
        except LookupError as exc:
            raise ValidationError("encoding", f"unknown encoding {encoding!r}") from exc
        except UnicodeDecodeError as exc:
            raise ValidationError("csv", f"not {encoding} (byte {exc.start})") from exc
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError as exc:
        raise ValidationError(
            "csv", f"neither UTF-8 nor Windows-1252 (byte {exc.start}); give --encoding"
        ) from exc


def sniff_delimiter(text: str) -> str:
    """``,``, ``;`` or tab: the one the first non-empty line (the header)
    holds most of; ``,`` when it holds none."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_recipients(text: str, *, used: Collection[str] = ()) -> CsvRecipients:
    """Parse the CSV ``text``: columns ``email`` and ``name`` (any case),
    every other column a template variable. ``used``: the variable names
    the templates refer to (an empty cell there leaves the row out, and a
    column matches that spelling whatever its case).

    Raises ValidationError("csv", ...) for a file without an ``email``
    column in its header, or a header column that is no variable name.
    """
    delimiter = sniff_delimiter(text)
    out = CsvRecipients(delimiter=delimiter)
    rows = csv.reader(io.StringIO(text), delimiter=delimiter)
    header: list[str] | None = None
    by_lower = {name.lower(): name for name in used}
    columns: list[str] = []
    seen: dict[str, int] = {}
    end = 0
    for row in rows:
        # a quoted cell may span lines: name the line the row starts on
        line, end = end + 1, rows.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if header is None:
            header = cells
            columns = _columns(header, by_lower)
            continue
        if len(cells) < len(columns):
            out.problems.append(
                CsvProblem(line, f"{len(cells)} fields, the header has {len(columns)}")
            )
            continue
        if len(cells) > len(columns) and any(cells[len(columns) :]):
            out.problems.append(
                CsvProblem(line, f"{len(cells)} fields, the header has {len(columns)}")
            )
            continue
        values = dict(zip(columns, cells, strict=False))
        email = values.pop("email")
        name = values.pop("name", "")
        empty = sorted(c for c, v in values.items() if not v and c in by_lower.values())
        if not email:
            out.problems.append(CsvProblem(line, "email is empty"))
            continue
        if empty:
            out.problems.append(
                CsvProblem(line, f"empty {', '.join(empty)}, which the template uses")
            )
            continue
        key = email.lower()
        if key in seen:
            out.duplicates.append(
                CsvProblem(line, f"{email} is a repeat of line {seen[key]}; dropped")
            )
            continue
        seen[key] = line
        out.recipients.append(RecipientInput(email=email, name=name, variables=values))
        out.lines.append(line)
    if header is None:
        raise ValidationError("csv", "empty file: the header row must have an 'email' column")
    return out


def _columns(header: list[str], by_lower: dict[str, str]) -> list[str]:
    columns: list[str] = []
    for cell in header:
        lower = cell.lower()
        if lower in ("email", "e-mail"):
            columns.append("email")
        elif lower == "name":
            columns.append("name")
        elif lower in by_lower:
            columns.append(by_lower[lower])
        elif cell.isidentifier():
            columns.append(cell)
        else:
            raise ValidationError("csv", f"line 1: column {cell!r} is not a valid variable name")
    if "email" not in columns:
        raise ValidationError("csv", "line 1: the header row must have an 'email' column")
    if len(set(columns)) != len(columns):
        raise ValidationError("csv", "line 1: a column is named twice")
    return columns
