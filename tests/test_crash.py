"""A worker process killed with SIGKILL in the middle of a distribution:
nothing is lost, duplicates are bounded by the in-flight limit."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.enqueue import RecipientInput
from mailer.reasons import State
from tests.conftest import OUR_DOMAIN, SURVEY, make_config

MESSAGES = 2000
IN_FLIGHT = 100


WORKER_SECRET = "worker-unsubscribe-secret-0123456789abcdef"


def write_config(path: Path, *, database: Path, dns: DNSServer, port: int, keys: Path) -> Path:
    path.write_text(
        f'hostname = "mailer.test"\n'
        f'database = "{database}"\n'
        f'keys_dir = "{keys}"\n'
        f'nameservers = ["{dns.address}"]\n'
        f"smtp_port = {port}\n"
        f'outbound_ip = "192.0.2.10"\n'
        f"[dkim]\n"
        f'domain = "{OUR_DOMAIN}"\n'
        f"[worker]\n"
        f"max_in_flight = {IN_FLIGHT}\n"
        f"lease_seconds = 3\n"
        f"poll_interval = 0.2\n"
        f"idle_timeout = 0.2\n"
        # what `mailer worker` needs for every message's one-click unsubscribe URL
        f"[api]\n"
        f'secret = "{WORKER_SECRET}"\n'
        f'public_url = "https://mailer.test"\n'
    )
    return path


def worker(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--config", str(config), "worker", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )


@pytest.mark.slow
async def test_sigkill_mid_run_loses_nothing_and_bounds_duplicates(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    sink = make_sink("127.0.0.2")
    config = make_config(tmp_path, dns_server, smtp_port, keys_dir)
    people = [
        RecipientInput(f"p{i}@dest.test", f"Person {i}", {"token": str(i)}) for i in range(MESSAGES)
    ]
    async with App(config) as app:
        await app.enqueue(SURVEY, people)
    config_file = write_config(
        tmp_path / "mailer.toml",
        database=Path(config.database),
        dns=dns_server,
        port=smtp_port,
        keys=keys_dir,
    )

    first = worker(config_file)
    deadline = time.monotonic() + 120
    while len(sink.messages) < MESSAGES // 3:
        assert first.poll() is None, first.communicate()[0].decode()
        assert time.monotonic() < deadline, "the worker delivered too little"
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = len(sink.messages)
    assert killed_at < MESSAGES, "the worker finished before it could be killed"

    second = worker(config_file, "--drain")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output.decode()

    async with App(config) as app:
        counts = await app.store.counts()
    assert counts == {State.DELIVERED: MESSAGES}
    ids = collections.Counter(m.message["Message-ID"] for m in sink.messages)
    assert len(ids) == MESSAGES
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= IN_FLIGHT
