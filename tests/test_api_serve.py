"""``mailer serve`` as a process: API and engine together, the --dev sink
and sample, and a graceful stop on SIGTERM. Everything on loopback."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailer.sink.runner import pick_port

MAILER = [sys.executable, "-c", "from mailer.cli import main; main()"]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}


class Process:
    """A child process whose output lines are read as they come."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
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
    arrived = [process.wait_for(r"→ .*(TLSv1\.[23]) \| dkim: d=\S+ s=\S+ pass") for _ in range(3)]
    assert all(m.group(1) for m in arrived)
    assert any("zählt" in line for line in process.seen)

    body = {
        "account": "beispiel",
        "sender": {"address": "umfragen@kunde.test", "name": "Kunde"},
        "subject": "Noch eine Frage",
        "text": "Hallo {{ name }}",
        "recipients": [{"email": "neu@beispiel.test", "name": "Neu"}],
    }
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert http.get("/healthz").status_code == 200
        assert http.post("/v1/distributions", json=body).status_code == 202
    process.wait_for(
        r"→ <neu@beispiel\.test> \"Noch eine Frage\" TLSv1\.[23] \| dkim: \S+ \S+ pass"
    )

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
    process = Process(
        [*MAILER, "serve", "--no-worker", "--listen", f"127.0.0.1:{port}"], tmp_path, clean_env()
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
