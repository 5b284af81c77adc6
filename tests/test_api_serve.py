"""``mailer serve`` as a process: API and engine together, the --dev sink
and sample, and a graceful stop on SIGTERM. Everything on loopback."""

from __future__ import annotations

import email
import email.policy
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailer.cli.serve import dev_directory, dev_public_url, dev_secret
from mailer.sink.runner import pick_port

MAILER = [sys.executable, "-c", "from mailer.cli import main; main()"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}


class Process:
    """A child process whose output lines are read as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first line (from now on) matching ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}") from None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    api_port = pick_port(["127.0.0.1"])
    sink_port = pick_port(["127.0.0.1"])
    inbox_port = pick_port(["127.0.0.1"])
    process = Process(
        [
            *MAILER,
            "serve",
            "--dev",
            "--sample",
            "--listen",
            f"127.0.0.1:{api_port}",
            "--sink",
            f"127.0.0.1:{sink_port}",
            "--inbox",
            f"127.0.0.1:{inbox_port}",
        ],
        tmp_path,
        clean_env(),
    )
    try:
        yield process, f"http://127.0.0.1:{api_port}"
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_dev_serve_delivers_the_sample_to_its_sink_and_stops_on_sigterm(dev_server) -> None:
    process, url = dev_server
    process.wait_for(rf"^API on {re.escape(url)}")
    key = process.wait_for(r"^API key: (\S+)").group(1)
    process.wait_for(r"sample distribution \w+: 3 recipients queued")
    # the second sample: a customer domain without SPF, our envelope
    process.wait_for(r"sample distribution \w+: 4 recipients queued")
    arrived = [process.wait_for(r"→ .*(TLSv1\.[23]) \| dkim: d=\S+ s=\S+ pass") for _ in range(7)]
    assert all(m.group(1) for m in arrived)
    assert any("zählt" in line for line in process.seen)

    body = {
        "account": "beispiel",
        "sender": {"address": "umfragen@kunde.test", "name": "Kunde"},
        "subject": "Noch eine Frage",
        "text": "Hallo {{ name }}",
        "recipients": [{"email": "neu@beispiel.test", "name": "Neu"}],
    }
    # every sample message carries a one-click link that opens the dev API's
    # unsubscribe page (plain HTTP on loopback) in the sample's language
    maildir = process.cwd / "var" / "dev" / "Maildir" / "new"
    links = []
    for path in sorted(maildir.iterdir()):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        links.append(str(message["List-Unsubscribe"]).strip("<>"))
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert len(links) == 7
    assert all(link.startswith(f"{url}/u/") for link in links)
    # both samples are German, whichever arrived first
    with httpx.Client() as browser:
        pages = [browser.get(link) for link in links]
    for page in pages:
        assert page.status_code == 200
        assert '<html lang="de">' in page.text
        assert "Jetzt abmelden" in page.text
    assert stat.S_IMODE((process.cwd / "var" / "dev" / "unsubscribe.secret").stat().st_mode) == (
        0o600
    )

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/v1/distributions", json=body).status_code == 202
    process.wait_for(
        r"→ <neu@beispiel\.test> \"Noch eine Frage\" TLSv1\.[23] \| dkim: \S+ \S+ pass"
    )
    # the sink's inbox shows what arrived
    [inbox] = [line.split()[-1] for line in process.seen if line.startswith("inbox on ")]
    listed = httpx.get(f"{inbox}/messages").json()
    assert listed["count"] == 8
    assert all(m["spf"]["result"] == "pass" for m in listed["messages"])
    page = httpx.get(f"{inbox}/")
    assert "Noch eine Frage" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=30) == 0


def test_serve_without_config_keys_takes_the_keys_made_by_apikeys_create(
    tmp_path: Path,
) -> None:
    def mailer(*args: str) -> str:
        done = subprocess.run(
            [*MAILER, *args], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    mailer("accounts", "add", "acme")
    token = mailer("apikeys", "create", "--account", "acme").strip()
    port = pick_port(["127.0.0.1"])
    env = {
        **clean_env(),
        "MAILER_API__SECRET": "s" * 40,
        "MAILER_API__PUBLIC_URL": "https://mailer.example.test",
    }
    process = Process(
        [*MAILER, "serve", "--no-worker", "--listen", f"127.0.0.1:{port}"], tmp_path, env
    )
    try:
        process.wait_for(r"^API on ")
        body = {
            "sender": {"address": "umfragen@kunde.test", "name": "Kunde"},
            "subject": "Frage",
            "text": "Hallo",
            "recipients": [{"email": "neu@beispiel.test"}],
        }
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            mine = {"Authorization": f"Bearer {token}"}
            assert http.post("/v1/distributions", json=body, headers=mine).status_code == 202
            wrong = {"Authorization": "Bearer mk_not-a-key"}
            assert http.get("/v1/events", headers=wrong).status_code == 401
        assert any("apikeys create" in line for line in process.seen)
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=30) == 0
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def test_the_dev_secret_is_kept_across_restarts_so_old_links_work(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dev" / "unsubscribe.secret"
    first = dev_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert dev_secret(path) == first


def test_the_dev_files_live_beside_an_sqlite_store_and_under_var_for_postgresql() -> None:
    assert dev_directory("/srv/mailer/queue.sqlite3") == Path("/srv/mailer/dev")
    assert dev_directory("var/mailer.sqlite3") == Path("var/dev")
    # a URL names no directory: not "postgresql:/postgres@db:5432/dev"
    assert dev_directory("postgresql://postgres@db:5432/mailer") == Path("var/dev")


def test_dev_links_are_plain_http_where_the_dev_api_listens() -> None:
    assert dev_public_url("127.0.0.1", 8025) == "http://127.0.0.1:8025"
    assert dev_public_url("0.0.0.0", 8025) == "http://localhost:8025"
    assert dev_public_url("::1", 8025) == "http://localhost:8025"
