"""``mailer send`` takes CSV files as people make them: Excel's UTF-8 with
BOM, Windows-1252 from German Excel, ``;`` and tab delimiters, header names
in any case; refuses short rows and empty cells a template uses, by CSV
line; drops repeated addresses with a note; enqueues any number of rows in
batches; ``--strict`` enqueues nothing and exits 1 when a row is refused.
Real SQLite through the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from mailer.cli import cli
from mailer.cli.csvfile import decode, read_recipients, sniff_delimiter
from mailer.cli.send import _send
from mailer.config import load_config
from mailer.errors import ValidationError
from mailer.store.models import NewDistribution

HTML = "<p>Hallo {{ name }}, <a href='https://survey.test/s/{{ token }}'>Umfrage</a></p>"


def send(tmp_path: Path, csv: bytes, *extra: str) -> tuple[int, str]:
    (tmp_path / "invite.html").write_text(HTML)
    (tmp_path / "people.csv").write_bytes(csv)
    result = CliRunner().invoke(
        cli,
        [
            "send",
            "--from",
            "hr@acme.test",
            "--subject",
            "Umfrage",
            "--html",
            str(tmp_path / "invite.html"),
            "--csv",
            str(tmp_path / "people.csv"),
            *extra,
        ],
        env={"MAILER_DATABASE": str(tmp_path / "m.sqlite3")},
    )
    return result.exit_code, result.output


def queued(tmp_path: Path) -> list[dict[str, Any]]:
    result = CliRunner().invoke(
        cli,
        ["queue", "list", "--json", "--limit", "10000"],
        env={"MAILER_DATABASE": str(tmp_path / "m.sqlite3")},
    )
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.output)
    return rows


def test_excel_utf8_with_bom_semicolons_and_capital_headers(tmp_path: Path) -> None:
    csv = "\ufeffEmail;Name;Token\r\nanna@dest.test;Anna Müller;A1\r\n".encode()
    code, out = send(tmp_path, csv)
    assert code == 0, out
    [row] = queued(tmp_path)
    assert (row["recipient"], row["variables"]) == ("anna@dest.test", {"token": "A1"})


def test_windows_1252_from_german_excel_is_detected_or_named(tmp_path: Path) -> None:
    csv = "EMAIL;NAME;TOKEN\r\njurgen@dest.test;Jürgen Weiß;J1\r\n".encode("cp1252")
    code, out = send(tmp_path, csv, "--json")
    assert code == 0, out
    assert json.loads(out)["encoding"] == "windows-1252"
    [row] = queued(tmp_path)
    assert row["name"] == "Jürgen Weiß"
    assert decode("Weiß".encode("cp1252"), "cp1252") == ("Weiß", "cp1252")
    with pytest.raises(ValidationError) as err:
        decode(b"x", "no-such-codec")
    assert err.value.field == "encoding"


def test_tab_delimited(tmp_path: Path) -> None:
    code, out = send(tmp_path, b"email\tname\ttoken\nanna@dest.test\tAnna\tA1\n")
    assert code == 0, out
    assert [r["variables"] for r in queued(tmp_path)] == [{"token": "A1"}]
    assert sniff_delimiter("email;name\n") == ";"
    assert sniff_delimiter("email\n") == ","


def test_short_rows_and_empty_used_cells_are_refused_by_csv_line(tmp_path: Path) -> None:
    csv = (
        b"email,name,token\n"  # line 1
        b"anna@dest.test,Anna,A1\n"  # line 2
        b"bert@dest.test,Bert\n"  # line 3: short
        b"\n"  # line 4: blank, skipped
        b"carl@dest.test,Carl,\n"  # line 5: the survey link would be empty
        b"not-an-address,Dora,D1\n"  # line 6: refused by the service
    )
    code, out = send(tmp_path, csv)
    assert code == 0, out
    assert "accepted 1, rejected 3" in out
    assert "line 3: 2 fields, the header has 3" in out
    assert "line 5: empty token, which the template uses" in out
    assert "line 6: email:" in out
    assert [r["recipient"] for r in queued(tmp_path)] == ["anna@dest.test"]


def test_repeated_addresses_are_dropped_with_a_note(tmp_path: Path) -> None:
    csv = b"email,name,token\nanna@dest.test,Anna,A1\nANNA@dest.test,Anna,A2\n"
    code, out = send(tmp_path, csv)
    assert code == 0, out
    assert "duplicates dropped 1" in out
    assert "line 3: ANNA@dest.test is a repeat of line 2; dropped" in out
    assert [r["variables"]["token"] for r in queued(tmp_path)] == ["A1"]


def test_strict_enqueues_nothing_and_exits_1_when_a_row_is_refused(tmp_path: Path) -> None:
    csv = b"email,name,token\nanna@dest.test,Anna,A1\nnot-an-address,Bob,B1\n"
    code, out = send(tmp_path, csv, "--strict")
    assert code == 1
    assert "nothing enqueued" in out
    assert "line 3: email:" in out
    assert not (tmp_path / "m.sqlite3").exists() or queued(tmp_path) == []
    code, out = send(tmp_path, b"email,name,token\nanna@dest.test,Anna,A1\n", "--strict")
    assert code == 0, out


def test_more_rows_than_one_request_takes_are_enqueued_in_batches(tmp_path: Path) -> None:
    rows = "".join(f"p{i}@dest.test,P {i},t{i}\n" for i in range(10_050))
    code, out = send(tmp_path, f"email,name,token\n{rows}".encode(), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["accepted"] == 10_050
    assert len(data["distribution_ids"]) == 2


async def test_a_large_csv_shows_a_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    rows = "".join(f"p{i}@dest.test,P {i},t{i}\n" for i in range(10_050))
    csv_rows = read_recipients(f"email,name,token\n{rows}", used={"token"})
    dist = NewDistribution(
        account="default", sender_address="hr@acme.test", sender_name="", subject="Umfrage",
        html=HTML, text=None, unsubscribe_url=None,
    )  # fmt: skip
    shown = {}
    for terminal in (True, False):
        config = load_config(
            environ={}, overrides={"database": str(tmp_path / f"{terminal}.sqlite3")}
        )
        out = io.StringIO()
        console = Console(file=out, force_terminal=terminal, width=100)
        sent = await _send(config, dist, csv_rows, console)
        assert sent.accepted == 10_050
        shown[terminal] = out.getvalue()
    assert "enqueueing" in shown[True]
    assert "10050/10050" in shown[True]
    assert shown[False] == ""


def test_read_recipients_maps_columns_to_the_templates_spelling() -> None:
    parsed = read_recipients("E-Mail,FIRSTNAME\na@dest.test,Anna\n", used={"firstName"})
    assert [r.variables for r in parsed.recipients] == [{"firstName": "Anna"}]
    assert parsed.lines == [2]
    with pytest.raises(ValidationError, match="'email' column"):
        read_recipients("mail,name\nx,y\n")
