"""`mailer sink` on the command line: flag parsing, and the command run as
a subprocess on a free port, receiving from the real engine."""

from __future__ import annotations

import json
import mailbox
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.cli.sink import DEFAULT_MAILDIR, describe_faults, options_from_flags
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.errors import ValidationError
from mailer.reasons import State
from mailer.sink import BadCert, Faults, ReplyRule, SinkOptions
from mailer.sink.runner import pick_port
from tests.conftest import CUSTOMER_DOMAIN, OUR_DOMAIN, SURVEY, make_config, run_until_settled

# as on every delivering node: the service's one-click unsubscribe links
SERVICE_LINKS = {
    "secret": "sink-cli-unsubscribe-secret-0123456789",
    "public_url": "https://mailer.test",
}

MAILER = str(Path(sys.executable).with_name("mailer"))


def test_flags_become_options() -> None:
    options = options_from_flags(
        listen="127.0.0.2:2526",
        replies=["gone@*=550 5.1.1 no such user", "data:*@spam.test=554 5.7.1 spam"],
        tempfail_rate=0.25,
        seed=3,
        greylist=True,
        drop_after_data=2,
        slow_banner=1.0,
        bad_cert="wrong-name",
    )
    assert options == SinkOptions(
        host="127.0.0.2",
        port=2526,
        maildir=DEFAULT_MAILDIR,
        replies=(
            ReplyRule("gone@*", "550 5.1.1 no such user"),
            ReplyRule("*@spam.test", "554 5.7.1 spam", "data"),
        ),
        faults=Faults(
            tempfail_rate=0.25, seed=3, greylist=True, drop_after_data=2, slow_banner=1.0
        ),
        bad_cert=BadCert.WRONG_NAME,
    )
    assert describe_faults(options) == [
        "reply rcpt:gone@* → 550 5.1.1 no such user",
        "reply data:*@spam.test → 554 5.7.1 spam",
        "greylist",
        "tempfail 0.25 (seed 3)",
        "drop after DATA ×2",
        "banner after 1s",
        "wrong-name certificate",
    ]


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        ({"cert": Path("c.pem")}, "cert"),
        ({"listen": "2525"}, "listen"),
        ({"replies": ["gone@*"]}, "reply"),
        ({"no_starttls": True, "bad_cert": "expired"}, "no-starttls"),
    ],
)
def test_bad_flags_name_the_flag(flags: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        options_from_flags(**flags)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--reply", "gone@*=250 ok"], "--reply"),
        (["--no-starttls", "--bad-cert", "expired"], "--no-starttls"),
        (["--http", "nowhere"], "--http"),
        (["--tempfail-rate", "2"], "--tempfail-rate"),
        (["--slow-banner", "-1"], "--slow-banner"),
        (["--drop-after-data", "-1"], "--drop-after-data"),
    ],
)
def test_command_refuses_bad_flags_before_starting(args: list[str], flag: str) -> None:
    result = CliRunner().invoke(cli, ["sink", *args])
    assert result.exit_code == 2
    assert flag in result.output


class SinkProcess:
    """`mailer sink` in a subprocess; its stdout read line by line."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [MAILER, "sink", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self, timeout: float = 20.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"no line from mailer sink; stderr: {err}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def sink_env(dns_server: DNSServer, keys_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_NAMESERVERS": dns_server.address, "MAILER_KEYS_DIR": str(keys_dir)})
    return env


@pytest.fixture
def run_sink(sink_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    started: list[SinkProcess] = []

    def start(*args: str) -> SinkProcess:
        process = SinkProcess(list(args), sink_env, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
        process.proc.wait()
        for stream in (process.proc.stdout, process.proc.stderr):
            if stream is not None:
                stream.close()


async def test_sink_command_receives_engine_mail_and_serves_it_over_http(
    run_sink: Any, tmp_path: Path, dns_server: DNSServer, keys_dir: Path
) -> None:
    port, http_port = pick_port(["127.0.0.1"]), pick_port(["127.0.0.1"])
    maildir = tmp_path / "box"
    sink = run_sink(
        "--listen", f"127.0.0.1:{port}",
        "--maildir", str(maildir),
        "--http", f"127.0.0.1:{http_port}",
        "--json",
    )  # fmt: skip
    ready = json.loads(sink.line())
    assert ready["event"] == "listening"
    assert (ready["smtp"], ready["http"], ready["starttls"]) == (
        f"127.0.0.1:{port}",
        f"127.0.0.1:{http_port}",
        True,
    )
    # checking in worker processes, one per CPU, unless told otherwise
    assert ready["checking_processes"] == os.cpu_count()
    config = make_config(
        tmp_path, dns_server, port, keys_dir, relay=f"127.0.0.1:{port}", api=SERVICE_LINKS
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, [RecipientInput("anna@dest.test", "Anna", {"token": "t1"})])
        await run_until_settled(app)
        assert await app.store.counts() == {State.DELIVERED: 1}
    printed = json.loads(sink.line())
    assert printed["event"] == "message"
    assert printed["rcpt_tos"] == ["anna@dest.test"]
    assert printed["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert [
        (d["domain"], d["selector"], d["result"], d["key_source"]) for d in printed["dkim"]
    ] == [
        (CUSTOMER_DOMAIN, "cust1", "pass", "dns"),
        (OUR_DOMAIN, "rsa1", "pass", "dns"),
        (OUR_DOMAIN, "ed1", "pass", "dns"),
    ]
    assert printed["checks_ok"], printed["checks"]

    [(key, stored)] = list(mailbox.Maildir(maildir, create=False).items())
    assert key == printed["id"]
    # mailbox parses with the compat32 policy: encoded words stay encoded
    assert str(make_header(decode_header(stored["Subject"]))) == printed["subject"]

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        listing = (await client.get("/messages")).json()
        assert listing["count"] == 1
        assert listing["messages"][0] == printed
        one = (await client.get(f"/messages/{key}")).json()
        assert one["dkim"] == printed["dkim"]
        assert one["raw"].startswith("DKIM-Signature:")
        assert "Anna" in one["text"]
        assert ["List-Unsubscribe-Post", "List-Unsubscribe=One-Click"] in one["headers"]
        assert (await client.get("/messages/nope")).status_code == 404
        assert (await client.delete("/messages")).status_code == 204
        assert (await client.get("/messages")).json() == {"count": 0, "messages": []}
        page = await client.get("/")
        assert "No messages yet" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # an inbox left open in a browser does not keep the sink from stopping
        async with client.stream("GET", "/events") as events:
            assert (await anext(events.aiter_text())).startswith("retry:")
            assert sink.stop() == 0
    assert list(mailbox.Maildir(maildir, create=False).keys()) == []


async def test_sink_command_fault_flags_shape_what_the_engine_sees(
    run_sink: Any, tmp_path: Path, dns_server: DNSServer, keys_dir: Path
) -> None:
    port = pick_port(["127.0.0.1"])
    sink = run_sink(
        "--listen", f"127.0.0.1:{port}",
        "--greylist",
        "--reply", "gone@*=550 5.1.1 no such user",
    )  # fmt: skip
    assert "faults: reply rcpt:gone@* → 550 5.1.1 no such user; greylist" in sink.line()
    config = make_config(
        tmp_path, dns_server, port, keys_dir, relay=f"127.0.0.1:{port}", api=SERVICE_LINKS
    )
    recipients = [RecipientInput(f"{n}@dest.test", n, {"token": n}) for n in ("gone", "anna")]
    async with App(config) as app:
        await app.enqueue(SURVEY, recipients)
        await run_until_settled(app)
        assert await app.store.counts() == {State.BOUNCED: 1, State.DELIVERED: 1}
    lines = [sink.line() for _ in range(3)]
    refused = sorted(line.split(" ", 1)[1] for line in lines if "refused" in line)
    assert refused == [
        "<survey@netigate.se> → <anna@dest.test> refused at RCPT (greylist): "
        "451 4.7.1 greylisted, try again later (rehearsal)",
        "<survey@netigate.se> → <gone@dest.test> refused at RCPT (script): 550 5.1.1 no such user",
    ]
    [message] = [line for line in lines if "refused" not in line]
    assert "<survey@netigate.se> → <anna@dest.test> " in message
    assert (
        f"dkim: d={CUSTOMER_DOMAIN} s=cust1 pass (key: dns), "
        f"d={OUR_DOMAIN} s=rsa1 pass (key: dns), d={OUR_DOMAIN} s=ed1 pass (key: dns) | "
    ) in message
    assert "checks: date ok, message-id ok, list-unsubscribe ok, text-part ok, from ok" in message
    assert sink.stop() == 0


def test_sink_command_fails_clearly_when_the_port_is_taken(
    sink_env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [MAILER, "sink", "--listen", f"127.0.0.1:{port}"],
            env=sink_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot start the sink on 127.0.0.1:{port}" in result.stderr
