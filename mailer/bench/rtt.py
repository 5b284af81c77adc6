"""``mailer bench --rtt MS``: the engine where a round trip costs time.

A :class:`~mailer.bench.relay.DelayRelay` sits between the engine and the
sink and delays each direction by half the round trip. The same messages
are delivered twice, each time into a fresh store and a fresh sink: once
with the sink offering PIPELINING, once without it (the baseline). Each
run is set against the bound its limits allow: every connection the
limits permit busy all the time, each message costing the round trips of
its SMTP exchange (MAIL+RCPT+DATA, then the message: 2 with PIPELINING;
MAIL, RCPT, DATA, the message: 4 without), connection set-up and CPU
counted as nothing. The default of 4 connections per domain keeps that
bound below what one engine process's CPU can do on a shared 2-core
machine, so the figures show round trips and not the CPU.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mailer import loop as service_loop
from mailer.app import App
from mailer.bench.relay import delay_relay
from mailer.bench.runner import (
    OUR_DOMAIN,
    _deliver,
    _enqueue,
    _outcome,
    percentile,
    settled,
    sink_process,
    zone,
)
from mailer.config import Config, load_config
from mailer.dev.dnsserver import DNSServer
from mailer.message.keys import KeyStore
from mailer.reasons import State
from mailer.sink.runner import pick_port

__all__ = ["ROUND_TRIPS", "RTTReport", "RTTRun", "run_rtt_bench"]

# round trips per message on an open connection
ROUND_TRIPS = {True: 2, False: 4}


@dataclass(frozen=True)
class RTTRun:
    pipelining: bool
    messages: int
    connections: int
    seconds: float
    messages_per_second: float
    per_connection_per_second: float
    bound_messages_per_second: float
    of_bound: float
    # enqueue to delivered; everything is enqueued before the clock starts
    latency_p50_ms: float
    latency_p99_ms: float
    # one message on its connection: composing, signing, the SMTP exchange
    message_p50_ms: float
    message_p99_ms: float
    sink_received: int


@dataclass(frozen=True)
class RTTReport:
    rtt_ms: float
    domains: int
    connections_per_domain: int
    pipelined: RTTRun
    baseline: RTTRun
    # the machine's 1-minute load average before and after the runs
    load_before: float
    load_after: float

    @property
    def speedup(self) -> float:
        """Per-connection throughput with PIPELINING over without."""
        return round(
            self.pipelined.per_connection_per_second / self.baseline.per_connection_per_second, 2
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


def bound(connections: int, rtt: float, pipelining: bool) -> float:
    """Messages per second the limits allow at ``rtt`` seconds: every
    connection busy, each message its round trips long."""
    return connections / (ROUND_TRIPS[pipelining] * rtt)


async def _message_times(config: Config) -> list[float]:
    """Seconds each delivered send's attempt took on its connection."""
    async with App(config) as app:
        delivered: list[str] = []
        after = 0
        while page := await app.store.events(after=after, limit=5000):
            delivered += [
                e.send_id for e in page if e.state is State.DELIVERED and e.send_id is not None
            ]
            after = page[-1].seq
        return [
            attempt.finished_at - attempt.started_at
            for send_id in delivered
            for attempt in await app.store.attempts(send_id)
        ]


def _run(
    root: Path,
    *,
    rtt: float,
    messages: int,
    domains: int,
    connections: int,
    pipelining: bool,
    dns: str,
) -> RTTRun:
    root.mkdir()
    port = pick_port(("127.0.0.1",))
    with contextlib.ExitStack() as stack:
        received = stack.enter_context(sink_process(port, root / "sink.log", pipelining=pipelining))
        relay = stack.enter_context(delay_relay(("127.0.0.1", port), rtt))
        config = load_config(
            environ={},
            overrides={
                "hostname": "bench.test",
                "database": str(root / "bench.sqlite3"),
                "keys_dir": str(root.parent / "keys"),
                "dkim": {"domain": OUR_DOMAIN, "signing_threads": 2},
                "nameservers": [dns],
                "smtp_port": relay.port,
                "limits": {
                    "default": {"connections": connections, "messages_per_connection": 100_000}
                },
                "worker": {"max_in_flight": 4000, "poll_interval": 0.2},
            },
        )
        service_loop.run(_enqueue(config, messages, domains))
        delivery = _deliver(config, 1)
        seconds = delivery.seconds
        latencies = service_loop.run(_outcome(config, messages, since=delivery.started_at))
        durations = service_loop.run(_message_times(config))
        got = settled(received, messages)
    total = connections * domains
    rate = messages / seconds
    limit = bound(total, rtt, pipelining)
    return RTTRun(
        pipelining=pipelining,
        messages=messages,
        connections=total,
        seconds=round(seconds, 3),
        messages_per_second=round(rate, 1),
        per_connection_per_second=round(rate / total, 2),
        bound_messages_per_second=round(limit, 1),
        of_bound=round(rate / limit, 3),
        latency_p50_ms=round(statistics.median(latencies) * 1000, 1),
        latency_p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
        message_p50_ms=round(statistics.median(durations) * 1000, 1),
        message_p99_ms=round(percentile(durations, 0.99) * 1000, 1),
        sink_received=got,
    )


def run_rtt_bench(
    rtt_ms: float,
    messages: int,
    *,
    domains: int = 4,
    connections: int = 4,
    workdir: Path | None = None,
) -> RTTReport:
    """Deliver ``messages`` to ``domains`` domains over a relay adding
    ``rtt_ms`` of round trip, with ``connections`` per domain, with and
    without PIPELINING. Raises MailerError when a run does not deliver
    everything."""
    rtt = rtt_ms / 1000
    load_before = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        KeyStore(root / "keys").generate(OUR_DOMAIN, "bench")
        dns = stack.enter_context(DNSServer(zone(domains)))
        runs = {
            pipelining: _run(
                root / ("pipelined" if pipelining else "baseline"),
                rtt=rtt,
                messages=messages,
                domains=domains,
                connections=connections,
                pipelining=pipelining,
                dns=dns.address,
            )
            for pipelining in (True, False)
        }
    return RTTReport(
        rtt_ms,
        domains,
        connections,
        runs[True],
        runs[False],
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )
