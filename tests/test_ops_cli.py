"""Operator commands end to end: the real engine on loopback DNS and
STARTTLS sinks, the real SQLite file, the CLI through click's runner (in a
thread: the CLI runs its own event loop)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from mailer.app import App
from mailer.cli import cli
from mailer.config import Config
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import Reason, State
from mailer.store.models import Attempt, Outcome, SendFilter
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import people

DOCS = Path(__file__).parent.parent / "docs" / "operations.md"


def config_file(config: Config, tmp_path: Path) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{config.database}"\n')
    return path


async def mailer(path: Path, *args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, cli, ["--config", str(path), *args])


async def ok(path: Path, *args: str) -> Result:
    result = await mailer(path, *args)
    assert result.exit_code == 0, result.output
    return result


async def story(app: App, send_id: str) -> tuple[Any, ...]:
    """What a replay must leave alone: the send, its attempts, its events."""
    return (
        await app.store.send(send_id),
        await app.store.attempts(send_id),
        await app.store.events(send_id=send_id, limit=1000),
    )


def documented_fields(section: str) -> set[str]:
    """The field names of the table under ``### {section}`` in
    docs/operations.md."""
    text = DOCS.read_text(encoding="utf-8")
    body = text.split(f"### {section}\n", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE))


def fields_of(data: dict[str, Any]) -> set[str]:
    names = set()
    for key, value in data.items():
        names.add(key)
        if isinstance(value, list):
            names.update(f"{key}[].{sub}" for item in value for sub in item)
    return names


def assert_fits_100_columns(text: str) -> None:
    assert text.strip()
    too_wide = [line for line in text.splitlines() if len(line) > 100]
    assert too_wide == []


async def test_replay_delivers_what_a_rejecting_sink_refused_and_nothing_else(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    dns_server.set("other.test", "MX", [(10, "mx.other.test")])
    dns_server.set("mx.other.test", "A", ["127.0.0.4"])
    mx1, mx2, other = make_sink("127.0.0.2"), make_sink("127.0.0.3"), make_sink("127.0.0.4")
    for sink in (mx1, mx2):
        sink.script("gone@dest.test", "550 5.1.1 No such user")
        sink.script("late*@dest.test", "451 4.3.0 Try again later")
        sink.script("*@dest.test", "550 5.7.1 Rejected by local policy")
    config = make_config(tmp_path, dns_server, smtp_port, retry={"max_age": 1.5})
    path = config_file(config, tmp_path)
    async with App(config) as app:
        blocked = await app.enqueue(SURVEY, people("anna", "bert", "cora"))
        late = await app.enqueue(SURVEY, people("late1", "late2"))
        gone = await app.enqueue(SURVEY, people("gone"))
        fine = await app.enqueue(SURVEY, people("otto", "olga", domain="other.test"))
        await run_until_settled(app)

        for send_id in blocked.send_ids:
            send = await app.store.send(send_id)
            assert (send.state, send.reason, send.last_enhanced) == (
                State.BOUNCED,
                Reason.POLICY_BLOCK,
                "5.7.1",
            )
        for send_id in late.send_ids:
            send = await app.store.send(send_id)
            assert (send.state, send.reason) == (State.FAILED, Reason.EXPIRED)
        [gone_id] = gone.send_ids
        assert (await app.store.send(gone_id)).reason is Reason.MAILBOX_UNKNOWN
        assert len(other.messages) == 2
        untouched = {i: await story(app, i) for i in [*fine.send_ids, gone_id]}
        refused = len(mx1.messages) + len(mx2.messages)
        assert refused == 0

        # the receiving side lifts its block
        for sink in (mx1, mx2):
            sink.clear_scripts()
        replayed = await ok(
            path,
            "replay",
            "--domain",
            "dest.test",
            "--reason",
            "policy-block",
            "--reason",
            "expired",
            "--note",
            "ticket 4711: block lifted",
        )
        assert "requeued 5 send(s)" in replayed.stdout
        assert "5/5" in replayed.stderr  # the progress bar, finished
        await run_until_settled(app)

        for send_id in [*blocked.send_ids, *late.send_ids]:
            send = await app.store.send(send_id)
            assert send.state is State.DELIVERED
            events = await app.store.events(send_id=send_id, limit=1000)
            [replay_event] = [e for e in events if e.reason is Reason.REPLAYED]
            assert replay_event.detail == "ticket 4711: block lifted"
            assert replay_event.state is State.QUEUED
        # attempts kept: the policy-blocked ones had one, then one more
        assert len(await app.store.attempts(blocked.send_ids[0])) == 2
        delivered_to = {r for m in mx1.messages + mx2.messages for r in m.rcpt_tos}
        assert delivered_to == {
            "anna@dest.test",
            "bert@dest.test",
            "cora@dest.test",
            "late1@dest.test",
            "late2@dest.test",
        }
        for send_id, before in untouched.items():
            assert await story(app, send_id) == before
        assert len(other.messages) == 2

        again = await ok(
            path, "replay", "--domain", "dest.test", "--reason", "policy-block", "--json"
        )
        counts = json.loads(again.stdout)
        assert (counts["matching"], counts["requeued"]) == (0, 0)


async def bounced_store(config: Config, count: int) -> list[str]:
    """``count`` sends to dest.test bounced with policy-block (recorded at
    t=1001, in 1970), one of them to an address on the account's
    suppression list; no engine needed."""
    async with App(config) as app:
        result = await app.enqueue(SURVEY, people(*(f"p{i}" for i in range(count))))
        store = app.store
        claimed = await store.claim("w", count, lease_seconds=60, now=time.time())
        attempt = Attempt(1000.0, 1000.1, Reason.POLICY_BLOCK, code=550, enhanced="5.7.1")
        await store.complete(
            "w",
            [
                Outcome(c.send.id, State.BOUNCED, Reason.POLICY_BLOCK, attempt=attempt)
                for c in claimed
            ],
            now=1001.0,
        )
        await store.suppress("acme", "p0@dest.test", Reason.SUPPRESSED_BOUNCE, now=1001.0)
        return result.send_ids


def dump(database: str) -> tuple[str, str]:
    """The logical dump and the file's hash (the store is closed, so its WAL
    was checkpointed into the file)."""
    conn = sqlite3.connect(database)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    return text, hashlib.sha256(Path(database).read_bytes()).hexdigest()


async def test_replay_dry_run_leaves_the_store_byte_for_byte_unchanged(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    ids = await bounced_store(config, 4)
    path = config_file(config, tmp_path)
    before = dump(config.database)
    for extra in ((), ("--include-suppressed",)):
        result = await ok(
            path, "replay", "--domain", "dest.test", "--dry-run", "--note", "x", *extra
        )
        assert "nothing was changed" in result.stdout
        assert ids[1] in result.stdout  # the sample
        assert dump(config.database) == before
    plain = await ok(path, "replay", "--domain", "dest.test", "--dry-run", "--json")
    assert json.loads(plain.stdout)["replayable"] == 3  # p0 is suppressed
    assert dump(config.database) == before


async def test_replay_with_include_suppressed_removes_the_entry_and_says_so(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    ids = await bounced_store(config, 2)
    path = config_file(config, tmp_path)
    first = await ok(path, "replay", "--domain", "dest.test")
    assert "requeued 1 send(s)" in first.stdout
    assert "skipped 1" in first.stdout
    second = await ok(path, "replay", "--domain", "dest.test", "--include-suppressed")
    assert "requeued 1 send(s)" in second.stdout
    assert "removed 1 account suppression entry" in second.stdout
    async with App(config) as app:
        assert await app.store.suppressions("acme") == []
        assert (await app.store.send(ids[0])).state is State.QUEUED


async def test_replay_refuses_to_run_without_a_filter_or_on_other_states(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    await bounced_store(config, 1)
    path = config_file(config, tmp_path)
    bare = await mailer(path, "replay")
    assert bare.exit_code == 2
    assert "--all" in bare.output
    delivered = await mailer(path, "replay", "--state", "delivered")
    assert delivered.exit_code == 2
    everything = await ok(path, "replay", "--all", "--dry-run", "--json")
    assert json.loads(everything.stdout)["matching"] == 1


async def test_a_held_domain_gets_no_connection_until_released(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    mx1, mx2 = make_sink("127.0.0.2"), make_sink("127.0.0.3")
    config = make_config(tmp_path, dns_server, smtp_port)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        held = await ok(path, "hold", "dest.test", "--note", "customer maintenance")
        assert "held domain dest.test" in held.stdout
        result = await app.enqueue(SURVEY, people("anna", "bert", "cora"))
        engine = await app.engine()
        await engine.run(drain=True)  # nothing is due: it returns at once
        assert await app.store.counts() == {State.HELD: 3}
        assert (mx1.connections, mx2.connections) == (0, 0)

        listed = json.loads((await ok(path, "queue", "list", "--state", "held", "--json")).stdout)
        assert {row["id"] for row in listed} == set(result.send_ids)
        stats = json.loads((await ok(path, "stats", "--json")).stdout)
        assert stats["counts"]["held"] == 3
        assert [(h["kind"], h["value"], h["note"]) for h in stats["holds"]] == [
            ("domain", "dest.test", "customer maintenance")
        ]
        table = (await ok(path, "queue", "list")).stdout
        assert "holds: domain dest.test" in table

        released = await ok(path, "release", "dest.test")
        assert "3 send(s) queued" in released.stdout
        await run_until_settled(app)
        assert await app.store.counts() == {State.DELIVERED: 3}
        assert len(mx1.messages) == 3
        events = await app.store.events(send_id=result.send_ids[0])
        assert [(e.state, e.reason) for e in events][:3] == [
            (State.QUEUED, Reason.QUEUED),
            (State.HELD, Reason.HELD),
            (State.QUEUED, Reason.RELEASED),
        ]
        assert (await ok(path, "hold")).stdout.strip() == "no holds"
        unknown = await mailer(path, "release", "dest.test")
        assert unknown.exit_code == 1
        assert "not found" in unknown.output


async def test_hold_of_a_distribution_holds_only_its_sends(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        paused = await app.enqueue(SURVEY, people("anna", "bert"))
        other = await app.enqueue(SURVEY, people("cora"))
    result = await ok(path, "hold", "--distribution", paused.distribution_id)
    assert "2 waiting send(s) now held" in result.stdout
    async with App(config) as app:
        assert await app.store.counts(paused.distribution_id) == {State.HELD: 2}
        assert await app.store.counts(other.distribution_id) == {State.QUEUED: 1}
    both = await mailer(path, "hold", "dest.test", "--distribution", paused.distribution_id)
    assert both.exit_code == 2
    await ok(path, "release", "--distribution", paused.distribution_id)


async def test_queue_list_filters_and_pages(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    ids = await bounced_store(config, 5)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        queued = await app.enqueue(SURVEY, people("new", domain="other.test"))

    async def listed(*args: str) -> list[str]:
        rows = json.loads((await ok(path, "queue", "list", "--json", *args)).stdout)
        return [row["id"] for row in rows]

    assert await listed("--domain", "other.test") == queued.send_ids
    assert await listed("--state", "bounced", "--reason", "policy-block") == ids
    assert await listed("--reason", "mailbox-unknown") == []
    # the bounces were recorded at t=1001 (1970), the new send just now
    assert await listed("--until", "1971-01-01") == ids
    assert await listed("--since", "1h") == queued.send_ids
    first = await listed("--limit", "2")
    rest = await listed("--after", first[-1])
    assert first + rest == [*ids, *queued.send_ids]
    page = (await ok(path, "queue", "list", "--limit", "2")).stdout
    assert f"more: add --after {ids[1]}" in page
    bad = await mailer(path, "queue", "list", "--since", "yesterday-ish")
    assert bad.exit_code == 1
    assert "since" in bad.output


async def test_json_outputs_carry_exactly_the_documented_fields(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    await bounced_store(config, 3)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        waiting = await app.enqueue(SURVEY, people("slow", domain="slow.test"))
        [claimed] = await app.store.claim("w", 10, lease_seconds=60, now=time.time())
        attempt = Attempt(2000.0, 2000.0, Reason.TLS_UNAVAILABLE, text="no STARTTLS")
        deferred = Outcome(
            claimed.send.id, State.DEFERRED, Reason.TLS_UNAVAILABLE, due_at=9e9, attempt=attempt
        )
        await app.store.complete("w", [deferred], now=2000.0)
        assert claimed.send.id == waiting.send_ids[0]
    await ok(path, "hold", "example.test", "--note", "n")

    rows = json.loads((await ok(path, "queue", "list", "--json")).stdout)
    assert len(rows) == 4
    for row in rows:
        assert set(row) == documented_fields("`queue list --json` fields")

    stats = json.loads((await ok(path, "stats", "--json", "--minutes", "5")).stdout)
    assert fields_of(stats) == documented_fields("`stats --json` fields")
    assert set(stats["counts"]) == {s.value for s in State}
    assert stats["counts"]["bounced"] == 3
    assert stats["failure_reasons"] == [{"state": "bounced", "reason": "policy-block", "count": 3}]
    assert stats["deferring"] == [{"domain": "slow.test", "reason": "tls-unavailable", "count": 1}]
    assert len(stats["throughput"]) == 5


async def test_tables_fit_100_columns(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    config = make_config(tmp_path, dns_server, smtp_port)
    long_name = "a.very.long.local.part.of.a.respondent.address.that.goes.on.and"  # 64, the most
    ids = await bounced_store(config, 2)
    async with App(config) as app:
        await app.enqueue(SURVEY, people(long_name, domain="sub.subsidiary.example.test"))
        await app.store.suppress(
            "",
            f"{long_name}@sub.subsidiary.example.test",
            Reason.SUPPRESSED_UNSUBSCRIBE,
            now=1.0,
            detail="x" * 150,
        )
    path = config_file(config, tmp_path)
    await ok(path, "hold", "sub.subsidiary.example.test", "--note", "a long note " * 20)
    for args in (
        ("queue", "list"),
        ("queue", "show", ids[0]),
        ("stats",),
        ("hold",),
        ("suppress", "list"),
        ("replay", "--all", "--dry-run"),
    ):
        assert_fits_100_columns((await ok(path, *args)).stdout)


async def test_queue_show_tells_the_whole_story(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    mx1 = make_sink("127.0.0.2")
    make_sink("127.0.0.3")
    mx1.script("anna@dest.test", "550 5.1.1 User unknown", times=1)
    config = make_config(tmp_path, dns_server, smtp_port)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        result = await app.enqueue(SURVEY, people("anna"))
        await run_until_settled(app)
    [send_id] = result.send_ids
    shown = (await ok(path, "queue", "show", send_id)).stdout
    for expected in (
        "bounced (mailbox-unknown)",
        "550 5.1.1 User unknown",
        "mx mx1.dest.test [127.0.0.2], TLSv1.",
        "tls policy encrypt",
        "identity: spf=",
        "suppressed on the account acme: suppressed-bounce",
        "Umfrage",
    ):
        assert expected in shown, expected
    data = json.loads((await ok(path, "queue", "show", send_id, "--json")).stdout)
    [attempt] = data["attempts"]
    assert (attempt["number"], attempt["mx_host"], attempt["address"], attempt["code"]) == (
        1,
        "mx1.dest.test",
        "127.0.0.2",
        550,
    )
    assert attempt["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert attempt["tls_cipher"]
    assert attempt["tls_policy"] == "encrypt"
    assert [e["state"] for e in data["events"]] == ["queued", "sending", "bounced"]
    assert data["suppressions"][0]["global"] is False
    assert data["distribution"]["account"] == "acme"
    missing = await mailer(path, "queue", "show", "nope")
    assert missing.exit_code == 1
    assert "send nope not found" in missing.output


async def test_suppress_add_list_remove_per_account_and_global(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{tmp_path / "db.sqlite3"}"\n')
    await ok(
        path,
        "suppress",
        "add",
        "Anna@Dest.test",
        "bert@dest.test",
        "--account",
        "acme",
        "--reason",
        "suppressed-unsubscribe",
        "--note",
        "phoned in",
    )
    await ok(path, "suppress", "add", "trap@dest.test", "--global")
    rows = json.loads((await ok(path, "suppress", "list", "--json")).stdout)
    assert {(r["account"], r["address"], r["reason"]) for r in rows} == {
        ("acme", "anna@dest.test", "suppressed-unsubscribe"),
        ("acme", "bert@dest.test", "suppressed-unsubscribe"),
        ("", "trap@dest.test", "suppressed-bounce"),
    }
    only_global = json.loads((await ok(path, "suppress", "list", "--global", "--json")).stdout)
    assert [r["address"] for r in only_global] == ["trap@dest.test"]
    removed = await ok(
        path, "suppress", "remove", "anna@dest.test", "nobody@dest.test", "--account", "acme"
    )
    assert "removed 1 of 2" in removed.stdout
    unscoped = await mailer(path, "suppress", "add", "x@dest.test")
    assert unscoped.exit_code == 2
    bad = await mailer(path, "suppress", "add", "not an address", "--global")
    assert bad.exit_code == 1


async def test_suppress_import_is_all_or_nothing_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{tmp_path / "db.sqlite3"}"\n')
    bad = tmp_path / "bad.csv"
    bad.write_text("address,reason\na@dest.test,\nb@dest.test,suppressed-bounce\nnot-an-address\n")
    result = await mailer(path, "suppress", "import", str(bad), "--account", "acme")
    assert result.exit_code == 1
    assert "line 4" in result.output
    assert not (tmp_path / "db.sqlite3").exists()  # refused before anything was opened
    good = tmp_path / "good.csv"
    good.write_text("a@dest.test\nb@dest.test,suppressed-unsubscribe\nc@dest.test,,globex\n")
    imported = await ok(path, "suppress", "import", str(good), "--account", "acme")
    assert "imported 3" in imported.stdout
    rows = json.loads((await ok(path, "suppress", "list", "--json")).stdout)
    assert {(r["account"], r["address"], r["reason"]) for r in rows} == {
        ("acme", "a@dest.test", "suppressed-bounce"),
        ("acme", "b@dest.test", "suppressed-unsubscribe"),
        ("globex", "c@dest.test", "suppressed-bounce"),
    }


async def test_stats_shows_failures_destinations_and_throughput(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    make_sink("127.0.0.2").script("anna@dest.test", "550 5.7.1 Policy")
    make_sink("127.0.0.3")
    config = make_config(tmp_path, dns_server, smtp_port)
    path = config_file(config, tmp_path)
    async with App(config) as app:
        await app.enqueue(SURVEY, people("anna", "bert", "cora"))
        await run_until_settled(app)
        delivered = await app.store.list_sends(SendFilter(states=(State.DELIVERED,)))
    assert len(delivered) == 2
    text = (await ok(path, "stats")).stdout
    assert "policy-block" in text
    assert "delivered 2 in 15 min" in text
    data = json.loads((await ok(path, "stats", "--json")).stdout)
    assert sum(t["delivered"] for t in data["throughput"]) == 2
    assert sum(t["bounced"] for t in data["throughput"]) == 1
    assert data["throughput"][-1]["minute"] <= data["generated_at"]


async def test_suppress_add_keeps_an_earlier_unsubscribe_and_its_note_unless_replace(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mailer.toml"
    path.write_text(f'database = "{tmp_path / "db.sqlite3"}"\n')
    args = ("suppress", "add", "anna@dest.test", "--account", "acme")
    await ok(path, *args, "--reason", "suppressed-unsubscribe", "--note", "phoned in")
    kept = await ok(path, *args, "--note", "bounced in the old system")
    assert "suppressed 0 of 1" in kept.stdout
    assert "stronger reason" in kept.stdout
    [row] = json.loads((await ok(path, "suppress", "list", "--json")).stdout)
    assert (row["reason"], row["detail"]) == ("suppressed-unsubscribe", "phoned in")
    await ok(path, *args, "--note", "operator said so", "--replace")
    [row] = json.loads((await ok(path, "suppress", "list", "--json")).stdout)
    assert (row["reason"], row["detail"]) == ("suppressed-bounce", "operator said so")
