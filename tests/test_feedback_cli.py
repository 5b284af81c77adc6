"""``mailer bounces parse|list|import``, ``mailer inbound`` at the door,
and what ``queue show`` says about where bounces go."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import cli
from mailer.cli.queue import bounce_route
from mailer.feedback.samples import SAMPLES


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.output


def test_parse_prints_one_json_object_per_file() -> None:
    code, out = invoke(
        "bounces",
        "parse",
        "--json",
        str(SAMPLES / "rfc3464-postfix.eml"),
        str(SAMPLES / "arf-yahoo.eml"),
        str(SAMPLES / "unknown-plain.eml"),
    )
    assert code == 0
    dsn, arf, unknown = json.loads(out)
    assert (dsn["kind"], dsn["send_id"]) == ("bounce", "0190abcdef0123456789ab000001")
    first = dsn["recipients"][0]
    assert set(first) >= {"address", "status", "reply_code", "action", "diagnostic", "reason"}
    assert (first["address"], first["status"], first["reason"]) == (
        "first.gone@example.com",
        "5.1.1",
        "mailbox-unknown",
    )
    assert (arf["kind"], arf["feedback_type"], arf["original_message_id"]) == (
        "complaint",
        "abuse",
        "<arf0001@mailer.test>",
    )
    assert arf["send_id"] == "arf0001"
    assert unknown["kind"] == "unknown"


def test_parse_without_json_prints_one_line_per_recipient() -> None:
    code, out = invoke("bounces", "parse", str(SAMPLES / "t-online-de.eml"))
    assert code == 0
    assert "bounce (t-online)" in out
    assert "erna.alt@t-online.example: failed 5.1.1 mailbox-unknown" in out


def test_import_stores_and_processes_a_mailbox_and_list_shows_the_unmatched(
    tmp_path: Path,
) -> None:
    box = mailbox.mbox(tmp_path / "bounces.mbox")
    for name in ("qmail.eml", "arf-microsoft.eml"):
        box.add((SAMPLES / name).read_bytes())
    box.flush()
    env = {"MAILER_DATABASE": str(tmp_path / "m.sqlite3")}
    code, out = invoke("bounces", "import", str(tmp_path / "bounces.mbox"), env=env)
    assert code == 0, out
    assert out.strip() == "2 imported, 2 processed; 2 unmatched in all"
    code, out = invoke("bounces", "list", "--unmatched", "--json", env=env)
    listed = json.loads(out)
    assert sorted(m["kind"] for m in listed) == ["bounce", "complaint"]
    assert all(m["send_id"] is None and m["problem"] == "no send matched" for m in listed)


def test_import_of_something_that_is_no_mailbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    env = {"MAILER_DATABASE": str(tmp_path / "m.sqlite3")}
    result = CliRunner().invoke(cli, ["bounces", "import", str(tmp_path / "dir")], env=env)
    assert result.exit_code == 1
    assert "source:" in result.output
    assert "no Maildir" in result.output


def test_inbound_needs_an_address() -> None:
    result = CliRunner().invoke(cli, ["inbound"], env={})
    assert result.exit_code == 2
    assert "inbound.listen" in result.output


def test_queue_show_says_where_bounces_go() -> None:
    assert bounce_route("spf=pass → customer sender").startswith("to the customer")
    assert bounce_route("spf=softfail → neutral sender").startswith("back to us")
    dkim = "dkim key for kunde.test → customer sender (DMARC alignment via DKIM)"
    assert bounce_route(dkim).startswith("back to us")


def test_check_domain_names_the_records_of_our_bounce_domain() -> None:
    from mailer.checkdomain import DomainReport
    from mailer.checkdomain.report import Check, Status
    from mailer.cli.check_domain import _our_envelope, return_path_records
    from mailer.config import load_config

    lines = return_path_records(load_config(environ={}), "de")
    assert lines[0].endswith("b+…@bounces.ntgt.de; our side publishes:")
    assert lines[2].strip() == 'bounces.ntgt.de. IN TXT "v=spf1 include:_spf.ntgt.de -all"'

    def report(envelope: str) -> DomainReport:
        details = {"address": "survey@kunde.test", "envelope_from": envelope}
        return DomainReport("kunde.test", "de", (Check("sender", Status.OK, "", details),))

    assert _our_envelope(report("survey@ntgt.de"))
    assert not _our_envelope(report("survey@kunde.test"))
