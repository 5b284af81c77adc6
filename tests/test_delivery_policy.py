"""Per-destination limits, throttling and TLS policy through the engine."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

from click.testing import CliRunner

from mailer.app import App
from mailer.cli import cli
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import Reason, State
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import numbered


async def test_messages_per_connection_limit_opens_new_connections(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        limits={"default": {"connections": 1, "messages_per_connection": 5}},
    )
    async with App(config) as app:
        await app.enqueue(SURVEY, numbered(20))
        await run_until_settled(app)
    assert len(mx1.messages) == 20
    assert mx1.connections == 4


async def test_rate_limit_spaces_messages_to_a_destination(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    config = make_config(
        tmp_path, dns_server, smtp_port, keys_dir, limits={"default": {"rate": 20}}
    )
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(6))
        await run_until_settled(app)
        starts = sorted([(await app.store.attempts(i))[0].started_at for i in result.send_ids])
    assert len(mx1.messages) == 6
    # each message is let go 1/20 s after the one before, whichever
    # connection; an attempt's start is stamped a moment after that, and
    # that moment varies with the machine's load: the six span at least
    # the five intervals (unlimited, they go within a few ms), and no two
    # come close together
    assert starts[-1] - starts[0] >= 5 * 0.05 - 0.02
    assert all(b - a >= 0.02 for a, b in itertools.pairwise(starts))


async def test_421_throttles_the_destination_and_defers_its_sends(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, keys_dir: Path, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    mx1.script("person0@*", "421 4.7.0 too many messages, slow down", times=1)
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        limits={"default": {"connections": 1}},
    )
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(5))
        engine = await app.engine()
        await engine.run(drain=True)
        first = await app.store.send(result.send_ids[0])
        others = [await app.store.send(i) for i in result.send_ids[1:]]
    assert (first.state, first.reason) == (State.DEFERRED, Reason.THROTTLED)
    assert first.last_code == 421
    # the rest waits for the throttle instead of hammering the destination
    assert all(s.state is State.DEFERRED and s.reason is Reason.THROTTLED for s in others)
    assert min(s.due_at for s in others) >= first.updated_at + 25
    assert len(mx1.messages) == 0


async def test_verify_policy_checks_the_certificate_against_the_mx_name(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    wrong = make_sink("127.0.0.2", hostname="somebody-else.test")
    right = make_sink("127.0.0.3", hostname="mx2.dest.test")
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        tls={"domains": {"dest.test": "verify"}, "cafile": str(certs.ca_path)},
    )
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(1))
        await run_until_settled(app)
        send = await app.store.send(result.send_ids[0])
        [attempt] = await app.store.attempts(send.id)
    assert send.state is State.DELIVERED
    assert attempt.mx_host == "mx2.dest.test"
    assert wrong.messages == []
    assert wrong.transactions == []
    assert len(right.messages) == 1


async def test_verify_policy_with_no_valid_certificate_defers_with_certificate_reason(
    tmp_path: Path,
    dns_server: DNSServer,
    smtp_port: int,
    keys_dir: Path,
    certs: TestCerts,
    make_sink,
) -> None:
    make_sink("127.0.0.2", hostname="somebody-else.test")
    make_sink("127.0.0.3", hostname="another.test")
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        keys_dir,
        tls={"policy": "verify", "cafile": str(certs.ca_path)},
        retry={"max_age": 1.0},
    )
    async with App(config) as app:
        result = await app.enqueue(SURVEY, numbered(1))
        await run_until_settled(app)
        attempts = await app.store.attempts(result.send_ids[0])
    assert attempts
    assert {a.reason for a in attempts} == {Reason.CERTIFICATE}


def test_send_command_enqueues_a_csv_and_queue_list_shows_it(tmp_path: Path) -> None:
    (tmp_path / "invite.html").write_text("<p>Hallo {{ name }}, Ihr Code: {{ code }}</p>")
    (tmp_path / "people.csv").write_text(
        "email,name,code\nanna@dest.test,Anna Müller,A1\nnot-an-address,Bob,B2\n"
    )
    env = {"MAILER_DATABASE": str(tmp_path / "m.sqlite3")}
    runner = CliRunner()
    sent = runner.invoke(
        cli,
        [
            "send",
            "--from",
            "hr@acme.test",
            "--name",
            "ACME",
            "--subject",
            "Umfrage für {{ name }}",
            "--html",
            str(tmp_path / "invite.html"),
            "--csv",
            str(tmp_path / "people.csv"),
        ],
        env=env,
    )
    assert sent.exit_code == 0, sent.output
    assert "accepted 1, rejected 1" in sent.output
    assert "line 3: email:" in sent.output
    listed = runner.invoke(cli, ["queue", "list", "--json"], env=env)
    [row] = json.loads(listed.output)
    assert (row["recipient"], row["state"], row["reason"]) == ("anna@dest.test", "queued", "queued")
    assert row["variables"] == {"code": "A1"}

    (tmp_path / "bad.html").write_text("<p>{{ missing }}</p>")
    bad = runner.invoke(
        cli,
        [
            "send",
            "--from",
            "hr@acme.test",
            "--subject",
            "x",
            "--html",
            str(tmp_path / "bad.html"),
            "--csv",
            str(tmp_path / "people.csv"),
        ],
        env=env,
    )
    assert bad.exit_code != 0
    assert "html" in bad.output
    assert "missing" in bad.output
    assert len(json.loads(runner.invoke(cli, ["queue", "list", "--json"], env=env).output)) == 1


async def test_sigterm_style_stop_releases_unsent_sends(app: App, make_sink) -> None:
    mx1 = make_sink("127.0.0.2")
    await app.enqueue(SURVEY, numbered(30))
    engine = await app.engine()
    task = asyncio.create_task(engine.run())
    await mx1.await_messages(1, 10)
    engine.stop()
    await task
    counts = await app.store.counts()
    assert State.SENDING not in counts
    assert counts.get(State.DELIVERED, 0) == len(mx1.messages)
    assert sum(counts.values()) == 30
