"""`mailer bench --postfix` and the transport ceiling: the configuration the
Postfix comparison runs under, the sink log it reads, a clear failure
without Postfix, and (where Debian's postfix and opendkim are installed;
not in CI) the comparison itself on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.bench import postfix
from mailer.bench.ceiling import _share, transport_ceiling
from mailer.bench.compare import run_comparison
from mailer.bench.runner import sample_message, settled, sink_process
from mailer.cli import cli
from mailer.errors import MailerError
from mailer.sink.runner import pick_port


def test_postfix_relays_to_the_sink_over_required_tls_and_never_unsigned(
    tmp_path: Path,
) -> None:
    text = postfix.main_cf(tmp_path, listen=2600, sink=2525, milter=8891)
    settings = dict(
        line.split(" = ", 1) for line in text.splitlines() if " = " in line and line[0] != "#"
    )
    assert settings["relayhost"] == "[127.0.0.1]:2525"
    assert settings["smtp_tls_security_level"] == "encrypt"
    assert settings["smtpd_milters"] == settings["non_smtpd_milters"] == "inet:127.0.0.1:8891"
    assert settings["milter_default_action"] == "tempfail"
    assert settings["inet_interfaces"] == "127.0.0.1"
    assert settings["queue_directory"] == str(tmp_path / "spool")


def test_opendkim_signs_rsa_relaxed_relaxed_as_the_given_selector(tmp_path: Path) -> None:
    text = postfix.opendkim_conf(
        tmp_path, port=8891, domain="bench.test", selector="bench", key=tmp_path / "k"
    )
    lines = set(text.splitlines())
    assert {
        "Mode s",
        "Domain bench.test",
        "Selector bench",
        "Canonicalization relaxed/relaxed",
        "SignatureAlgorithm rsa-sha256",
        "Socket inet:8891@127.0.0.1",
    } <= lines


def test_arrivals_are_read_from_the_sink_log_for_one_sender(tmp_path: Path) -> None:
    log = tmp_path / "sink.log"
    log.write_text(
        "listening on 127.0.0.1:2525\n"
        "1.500 127.0.0.1:5 TLSv1.3 from=<postfix-bench@bench.test> to=<a@b> bytes=9\n"
        "1.600 127.0.0.1:6 TLSv1.3 from=<other@bench.test> to=<a@b> bytes=9\n"
        "2.250 127.0.0.1:7 plain from=<postfix-bench@bench.test> to=<a@b> bytes=9\n"
    )
    assert postfix.sink_arrivals(log, "postfix-bench@bench.test") == [
        (1.5, "TLSv1.3"),
        (2.25, "plain"),
    ]


def test_without_postfix_the_comparison_fails_naming_the_packages(tmp_path: Path) -> None:
    with pytest.raises(MailerError) as missing:
        postfix.find_tools(str(tmp_path))
    assert "needs postfix, which is not installed" in str(missing.value)
    assert "opendkim" in str(missing.value)


def test_bench_postfix_without_postfix_exits_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postfix, "SBIN", "")
    result = CliRunner().invoke(cli, ["bench", "--postfix", "--messages", "10"])
    assert result.exit_code == 1
    assert "needs postfix, which is not installed" in result.output


def test_connections_and_messages_are_shared_out_evenly() -> None:
    assert _share(10, 4) == [3, 3, 2, 2]
    assert _share(2, 4) == [1, 1, 0, 0]
    assert sum(_share(3000, 32)) == 3000


def test_the_transport_ceiling_delivers_every_message_over_tls(tmp_path: Path) -> None:
    port = pick_port(("127.0.0.1",))
    log = tmp_path / "sink.log"
    with sink_process(port, log) as received:
        assert transport_ceiling(port, sample_message(), 40, processes=2, connections=4) > 0
        assert settled(received, 40) == 40
    lines = [line for line in log.read_text().splitlines() if "from=<" in line]
    assert len(lines) == 40
    assert not any(" plain " in line for line in lines)


def test_the_comparison_runs_engine_ceiling_and_postfix_side_by_side() -> None:
    try:
        postfix.find_tools()
    except MailerError as exc:
        # `make system-deps` installs them; CI must run the comparison
        if os.environ.get("CI"):
            pytest.fail(f"needs Debian's postfix and opendkim: {exc}")
        pytest.skip(f"needs Debian's postfix and opendkim: {exc}")
    report = run_comparison(40, rounds=1, postfix_messages=20, workers=1, domains=2)
    [only] = report.rounds
    assert only.engine > 0
    assert only.ceiling > 0
    assert only.postfix > 0
    # the engine signs, composes and records: more CPU a message than plain sending
    assert only.engine_cpu_ms > only.ceiling_cpu_ms > 0
    assert report.cpu_of_ceiling == pytest.approx(only.ceiling_cpu_ms / only.engine_cpu_ms)
    assert report.of_ceiling == pytest.approx(only.engine / only.ceiling)
    assert report.over_postfix == pytest.approx(only.engine / only.postfix)
