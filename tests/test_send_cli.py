"""``mailer send --dry-run``: the first message rendered through the real
identity decision (loopback DNS) and composition; nothing enqueued."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.config import load_config
from mailer.dev.dnsserver import DNSServer

CSV = (
    "email,name,token\n"
    "anna@dest.test,Anna Ä,t-anna\n"
    "not-an-address,Bert,t-bert\n"
    "cora@dest.test,Cora,t-cora\n"
)
HTML = "<p>Hallo {{ name }}, <a href='https://survey.test/s/{{ token }}'>zur Umfrage</a></p>"


def files(tmp_path: Path, dns_server: DNSServer) -> list[str]:
    config = tmp_path / "mailer.toml"
    config.write_text(
        f'database = "{tmp_path / "mailer.sqlite3"}"\n'
        f'hostname = "mailer.test"\n'
        f'outbound_ip = "192.0.2.10"\n'
        f'keys_dir = "{tmp_path / "no-keys"}"\n'
        f'nameservers = ["{dns_server.address}"]\n'
        "[dkim]\n"
        'domain = "mailer.test"\n'
        "required = false\n"
    )
    (tmp_path / "invite.html").write_text(HTML)
    (tmp_path / "respondents.csv").write_text(CSV)
    return [
        "--config", str(config), "send", "--from", "hr@acme.test", "--name", "ACME HR",
        "--subject", "Umfrage für {{ name }}", "--html", str(tmp_path / "invite.html"),
        "--csv", str(tmp_path / "respondents.csv"),
    ]  # fmt: skip


def test_dry_run_prints_the_first_message_and_enqueues_nothing(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    dns_server.set("acme.test", "TXT", ["v=spf1 ip4:192.0.2.10 -all"])
    argv = files(tmp_path, dns_server)
    result = CliRunner().invoke(cli, [*argv, "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("dry run: nothing enqueued; would accept 2, reject 1\n")
    assert "  recipient 1: recipients[1].email:" in out
    assert "identity: spf=pass → customer sender" in out
    assert "envelope: MAIL FROM:<hr@acme.test> RCPT TO:<anna@dest.test>" in out
    assert "Subject: Umfrage für Anna Ä" in out
    assert "From: ACME HR <hr@acme.test>" in out
    assert "Message-ID: <dry-run@mailer.test>" in out
    html = out.split("--- text/html part\n", 1)[1]
    assert "https://survey.test/s/t-anna" in html
    text = out.split("--- text/plain part\n", 1)[1].split("--- text/html part", 1)[0]
    assert "Hallo Anna Ä" in text
    assert "t-cora" not in out

    async def counts() -> dict[object, int]:
        async with App(load_config(argv[1])) as app:
            return dict(await app.store.counts())

    assert asyncio.run(counts()) == {}


def test_dry_run_shows_the_neutral_sender_when_spf_does_not_allow_us(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    dns_server.set("acme.test", "TXT", ["v=spf1 -all"])
    result = CliRunner().invoke(cli, [*files(tmp_path, dns_server), "--dry-run"])
    assert result.exit_code == 0, result.output
    [identity] = [line for line in result.stdout.splitlines() if line.startswith("identity: ")]
    assert identity == "identity: spf=fail → neutral sender"
    assert "Reply-To: hr@acme.test" in result.stdout
    assert "From: ACME HR <hr@acme.test>" not in result.stdout


def test_dry_run_with_a_bad_template_is_an_error_naming_the_field(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    argv = files(tmp_path, dns_server)
    (tmp_path / "invite.html").write_text("<p>{{ missing_variable }}</p>")
    result = CliRunner().invoke(cli, [*argv, "--dry-run"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "html" in result.output


EXAMPLES = Path(__file__).parent.parent / "examples"


def test_the_readme_send_example_works_with_the_shipped_files(
    tmp_path: Path, dns_server: DNSServer
) -> None:
    argv = files(tmp_path, dns_server)
    argv[argv.index("--html") + 1] = str(EXAMPLES / "invite.html")
    argv[argv.index("--csv") + 1] = str(EXAMPLES / "respondents.csv")
    result = CliRunner().invoke(cli, [*argv, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would accept 3, reject 0" in result.stdout
    assert "Subject: Umfrage für Anna Müller" in result.stdout
    assert "https://survey.example/s/t-7f3a91" in result.stdout
    # with the service's unsubscribe links configured, the template uses them
    config = Path(argv[1])
    config.write_text(
        config.read_text()
        + '[api]\nsecret = "a-secret-of-thirty-two-characters!"\n'
        + 'public_url = "https://mailer.example"\n'
    )
    linked = CliRunner().invoke(cli, [*argv, "--dry-run"])
    assert linked.exit_code == 0, linked.output
    assert "https://mailer.example/u/" in linked.stdout.split("--- text/html part", 1)[1]
