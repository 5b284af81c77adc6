"""``mailer bench --postfix``: the engine, the transport ceiling and
Postfix + OpenDKIM, side by side against one bench sink.

The machine drifts within a run (and is shared), so the three are
interleaved: each round delivers the engine's messages into a fresh
store, then the transport ceiling's, then Postfix's; the best of the
rounds of each kind are compared. The load average before and after is
reported with them. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mailer.bench.ceiling import CONNECTIONS, transport_ceiling
from mailer.bench.postfix import INJECT_LENGTH, INJECT_SESSIONS, PostfixRelay, find_tools
from mailer.bench.runner import (
    OUR_DOMAIN,
    _phase,
    bench_config,
    sample_message,
    sink_process,
    zone,
)
from mailer.dev.dnsserver import DNSServer
from mailer.errors import MailerError
from mailer.message.keys import KeyStore, dns_record_value
from mailer.sink.runner import pick_port

__all__ = ["Comparison", "Round", "run_comparison"]


@dataclass(frozen=True)
class Round:
    engine: float
    ceiling: float
    postfix: float
    # CPU milliseconds per message of every process involved (the engine's
    # or the ceiling's processes and the sink): what the rates would be
    # set by on an idle machine, much less moved by other work on it
    engine_cpu_ms: float = 0.0
    ceiling_cpu_ms: float = 0.0


@dataclass(frozen=True)
class Comparison:
    messages: int
    postfix_messages: int
    workers: int
    ceiling_connections: int
    postfix_sessions: int
    postfix_length: int
    rounds: tuple[Round, ...]
    load_before: float
    load_after: float

    @property
    def engine(self) -> float:
        return max(r.engine for r in self.rounds)

    @property
    def ceiling(self) -> float:
        return max(r.ceiling for r in self.rounds)

    @property
    def postfix(self) -> float:
        return max(r.postfix for r in self.rounds)

    @property
    def cpu_of_ceiling(self) -> float:
        """The ceiling's CPU per message over the engine's, the least of
        each: the engine's share of the ceiling by CPU alone."""
        return min(r.ceiling_cpu_ms for r in self.rounds) / min(
            r.engine_cpu_ms for r in self.rounds
        )

    @property
    def of_ceiling(self) -> float:
        """The best engine rate over the best ceiling."""
        return self.engine / self.ceiling

    @property
    def over_postfix(self) -> float:
        """The best engine rate over the best Postfix rate."""
        return self.engine / self.postfix

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "engine": self.engine,
            "ceiling": self.ceiling,
            "postfix": self.postfix,
            "of_ceiling": self.of_ceiling,
            "cpu_of_ceiling": self.cpu_of_ceiling,
            "over_postfix": self.over_postfix,
        }


def _child(token: str) -> int:
    """The process id of this process's child whose command line holds
    ``token`` as one argument. Raises MailerError when there is none."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if stat[stat.rindex(")") + 2 :].split()[1] == me and token.encode() in command:
            return int(entry.name)
    raise MailerError(f"bench: no child process runs with {token}")


def _cpu(pid: int) -> float:
    """CPU seconds the running process ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_comparison(
    messages: int,
    *,
    rounds: int = 3,
    postfix_messages: int = 3000,
    workers: int = 1,
    domains: int = 4,
) -> Comparison:
    """``rounds`` rounds of: ``messages`` through ``workers`` engine
    processes (SQLite store, DKIM RSA-2048, STARTTLS), the same number by
    the transport ceiling, and ``postfix_messages`` through Postfix +
    OpenDKIM, all to one sink. Raises MailerError when Postfix, smtp-source
    or OpenDKIM is not installed (before anything starts) or a run fails."""
    # before anything starts: a missing program fails at once
    tools = find_tools()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        keystore = KeyStore(root / "keys")
        keystore.generate(OUR_DOMAIN, "bench")
        [info] = keystore.list()
        [key] = keystore.load(OUR_DOMAIN)
        dns = stack.enter_context(DNSServer(zone(domains)))
        port = pick_port(("127.0.0.1",))
        sink_log = root / "sink.log"
        stack.enter_context(sink_process(port, sink_log))
        relay = stack.enter_context(
            PostfixRelay(
                port,
                domain=OUR_DOMAIN,
                selector=info.selector,
                key_pem=key.private_pem,
                key_record=dns_record_value(info),
                tools=tools,
            )
        )
        config = bench_config(root, dns, port, str(root / "unused.sqlite3"), workers)
        data = sample_message()
        load_before = os.getloadavg()[0]
        done: list[Round] = []
        # the bench sink is `mailer sink --no-checks` (runner.sink_process)
        sink = _child("--no-checks")
        for index in range(rounds):
            # CPU from each start signal on (not the processes' start-up),
            # and the sink's meanwhile
            engine_cpu: list[float] = []
            before = _cpu(sink)
            engine = _phase(
                stack,
                config,
                root / f"engine{index}",
                None,
                messages,
                domains,
                workers,
                cpu=engine_cpu,
            )
            engine_sink, before = _cpu(sink) - before, _cpu(sink)
            ceiling_cpu: list[float] = []
            ceiling = transport_ceiling(
                port, data, messages, processes=workers, domains=domains, cpu=ceiling_cpu
            )
            ceiling_sink = _cpu(sink) - before
            postfix = relay.run(sink_log, postfix_messages, recipient="respondent@d0.bench.test")
            done.append(
                Round(
                    engine,
                    ceiling,
                    postfix.messages_per_second,
                    engine_cpu_ms=(sum(engine_cpu) + engine_sink) * 1000 / messages,
                    ceiling_cpu_ms=(sum(ceiling_cpu) + ceiling_sink) * 1000 / messages,
                )
            )
        return Comparison(
            messages=messages,
            postfix_messages=postfix_messages,
            workers=workers,
            ceiling_connections=CONNECTIONS,
            postfix_sessions=INJECT_SESSIONS,
            postfix_length=INJECT_LENGTH,
            rounds=tuple(done),
            load_before=load_before,
            load_after=os.getloadavg()[0],
        )
