"""Webhook delivery by worker processes: a SIGKILL mid-batch loses nothing
and repeats only the batch in flight; two workers on PostgreSQL deliver one
endpoint's events without reordering."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from tests.backends import postgres_schema
from tests.conftest import SURVEY
from tests.kit import numbered
from tests.test_webhooks_delivery import (
    HOOK_HOST,
    Pushing,
    account_events,
    hook_config,
    until,
)
from tests.webhook_receiver import Receiver

LATER = dataclasses.replace(SURVEY, send_at=time.time() + 86400)  # events, no SMTP


def write_config(path: Path, database: Path, dns: DNSServer) -> Path:
    path.write_text(
        f'hostname = "mailer.test"\n'
        f'database = "{database}"\n'
        f'nameservers = ["{dns.address}"]\n'
        f'outbound_ip = "192.0.2.10"\n'
        f"[dkim]\n"
        f"required = false\n"
        f"[api]\n"
        f"unsubscribe = false\n"  # these sends need no one-click links
        f"[worker]\n"
        f"poll_interval = 0.1\n"
        f"[webhooks]\n"
        f"allow_insecure = true\n"
        f'allow = ["127.0.0.0/8"]\n'
        f"batch_size = 50\n"
        f"poll_interval = 0.05\n"
        f"connect_timeout = 1.0\n"
        f"read_timeout = 1.0\n"
        f"lease_seconds = 5.0\n"
        f"retry_base = 0.05\n"
        f"retry_max_delay = 0.2\n"
    )
    return path


def worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "--config", str(config), "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
    )


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_nothing_and_repeats_only_the_batch_in_flight(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    dns_server.set(HOOK_HOST, "A", ["127.0.0.1"], ttl=0)
    in_flight = threading.Event()
    kill_at = 4

    def answer(index: int) -> tuple[int, dict[str, str]]:
        if index == kill_at:
            in_flight.set()
            time.sleep(3)  # the worker dies while waiting for this reply
            return 500, {}
        return 200, {}

    receiver = Receiver(answer=answer).start()
    try:
        config = hook_config(tmp_path, dns_server, smtp_port, None)
        async with App(config) as app:
            created = await app.webhooks().add("acme", receiver.url(HOOK_HOST))
            await app.enqueue(LATER, numbered(500))
            expected = [e.seq for e in await account_events(app)]
        config_file = write_config(tmp_path / "mailer.toml", Path(config.database), dns_server)

        first = worker(config_file)
        assert await asyncio.to_thread(in_flight.wait, 60), first.communicate()[0].decode()
        first.send_signal(signal.SIGKILL)
        first.wait()

        second = worker(config_file)
        try:
            async with App(config) as app:

                async def caught_up() -> bool:
                    ep = await app.webhooks().get(created.endpoint.id, "acme")
                    return ep.cursor >= expected[-1]

                await until(caught_up, within=60)
        finally:
            second.send_signal(signal.SIGTERM)
            output, _ = second.communicate(timeout=30)
        assert second.returncode == 0, output.decode()
    finally:
        receiver.stop()

    requests = receiver.snapshot()
    events = receiver.verified_events(created.secret)
    assert [e["seq"] for e in events] == expected  # nothing missing, nothing twice
    repeated = [i for i, n in Counter(r.webhook_id for r in requests).items() if n > 1]
    assert repeated == [requests[kill_at].webhook_id]
    resent = [r for r in requests if r.webhook_id == repeated[0]]
    assert resent[0].body == resent[1].body


@pytest.mark.postgres
@pytest.mark.slow
async def test_two_workers_on_postgresql_keep_one_endpoints_order(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    dns_server.set(HOOK_HOST, "A", ["127.0.0.1"], ttl=0)
    receiver = Receiver().start()
    try:
        async with postgres_schema() as url:
            config = hook_config(tmp_path, dns_server, smtp_port, None, database=url, batch_size=7)
            async with App(config) as one, App(config) as two:
                created = await one.webhooks().add("acme", receiver.url(HOOK_HOST))
                async with Pushing(one, "worker-1") as d1, Pushing(two, "worker-2") as d2:
                    # waves, so that the endpoint is given up and claimed again
                    for wave in range(20):
                        app = one if wave % 2 else two
                        await app.enqueue(LATER, numbered(15))
                        await asyncio.sleep(0.15)
                    expected = [e.seq for e in await account_events(one)]

                    async def caught_up() -> bool:
                        ep = await one.webhooks().get(created.endpoint.id, "acme")
                        return ep.cursor >= expected[-1]

                    await until(caught_up, within=120)
                assert d1.delivered > 0
                assert d2.delivered > 0
    finally:
        receiver.stop()
    events = receiver.verified_events(created.secret)
    assert [e["seq"] for e in events] == expected
