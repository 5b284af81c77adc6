"""``mailer webhooks add|list|test|replay|rotate|remove`` against a
config file, a loopback receiver and the loopback DNS server."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from standardwebhooks.webhooks import Webhook

from mailer.cli import cli, register_commands
from mailer.dev.dnsserver import DNSServer
from tests.test_webhooks_delivery import HOOK_HOST
from tests.webhook_receiver import Receiver

register_commands()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def config_file(tmp_path: Path, dns: DNSServer) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(
        f'database = "{tmp_path / "mailer.sqlite3"}"\n'
        f'nameservers = ["{dns.address}"]\n'
        f"[dkim]\nrequired = false\n"
        f'[webhooks]\nallow_insecure = true\nallow = ["127.0.0.0/8"]\n'
    )
    return path


async def mailer(path: Path, *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, cli, ["--config", str(path), *args])


async def test_webhooks_from_the_command_line(
    tmp_path: Path, dns_server: DNSServer, receiver: Receiver
) -> None:
    dns_server.set(HOOK_HOST, "A", ["127.0.0.1"], ttl=0)
    dns_server.set("inside.test", "A", ["10.0.0.1"], ttl=0)
    path = config_file(tmp_path, dns_server)

    refused = await mailer(path, "webhooks", "add", "https://inside.test/", "--account", "acme")
    assert refused.exit_code == 1
    assert "url: inside.test resolves to 10.0.0.1, a private address" in refused.output

    added = await mailer(
        path, "webhooks", "add", receiver.url(HOOK_HOST), "--account", "acme",
        "--event", "send.delivered",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    hook_id = re.search(r"webhook (\w+) for account acme", added.output)[1]  # type: ignore[index]
    secret = re.search(r"secret: (whsec_\S+)", added.output)[1]  # type: ignore[index]

    listed = await mailer(path, "webhooks", "list", "--json")
    [entry] = json.loads(listed.output)
    assert (entry["id"], entry["event_types"], entry["enabled"]) == (
        hook_id,
        ["send.delivered"],
        True,
    )

    tested = await mailer(path, "webhooks", "test", hook_id)
    assert tested.exit_code == 0, tested.output
    assert tested.output.startswith("HTTP 204")
    [request] = receiver.snapshot()
    Webhook(secret).verify(request.body, request.headers)

    receiver.answer = lambda i: (500, {})
    failing = await mailer(path, "webhooks", "test", hook_id)
    assert failing.exit_code == 1
    assert failing.output.startswith("HTTP 500")

    replayed = await mailer(path, "webhooks", "replay", hook_id, "--from", "0")
    assert replayed.exit_code == 0, replayed.output
    rotated = await mailer(path, "webhooks", "rotate", hook_id)
    assert re.search(r"secret: whsec_\S+", rotated.output)

    removed = await mailer(path, "webhooks", "remove", hook_id)
    assert removed.exit_code == 0
    assert (await mailer(path, "webhooks", "list")).output.strip() == "no webhook endpoints"
    missing = await mailer(path, "webhooks", "remove", hook_id)
    assert missing.exit_code == 1
    assert "not found" in missing.output
