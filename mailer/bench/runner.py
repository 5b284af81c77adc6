"""``mailer bench``: end-to-end throughput on loopback.

A loopback DNS server serves a few test domains whose MX is 127.0.0.1; a
sink runs in a separate process; N messages are enqueued into a fresh
store and one engine delivers them over STARTTLS. In the same run, a naive
baseline sends messages with the standard library's smtplib, one
connection and one STARTTLS per message, to the same sink, and the ratio
between the two is reported. With ``mta_sts``, every bench domain then
publishes an MTA-STS enforce policy (served over HTTPS on loopback by a
test CA that also issued the sink's certificate) and the same messages are
delivered again under it: its rate beside the ``encrypt`` rate of the same
run shows what policies cost once cached. With ``dane``, the DNS server
stands in for a validating resolver (the AD bit on every answer), the MX
host publishes a TLSA 3 1 1 record of the sink's certificate, and the same
messages go again with ``dnssec = "trust-ad"``, under DANE. Nothing leaves
the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import queue
import resource
import secrets
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mailer import loop as service_loop
from mailer.app import App
from mailer.bench import progress
from mailer.bench.api import api_enqueue_rate
from mailer.bench.ceiling import CONNECTIONS, transport_ceiling
from mailer.bench.feedback import bounces_parsed_per_second, inbound_accepted_per_second
from mailer.bench.hooks import receiver_process, webhook_rate
from mailer.config import Config, load_config
from mailer.delivery.tls.dane import association, tlsa_name
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dev.policyhost import PolicyHost, Reply, policy_text
from mailer.enqueue import MAX_RECIPIENTS, RecipientInput
from mailer.errors import ConfigError, MailerError
from mailer.message.addresses import parse_address
from mailer.message.compose import build_message
from mailer.message.keys import KeyStore, SigningKey, dns_record_value
from mailer.message.signing import Signer, digest_signer, naive_sign
from mailer.message.templates import Content, compile_content, render
from mailer.reasons import State
from mailer.sink.options import SinkOptions
from mailer.sink.runner import pick_port
from mailer.sink.server import DevSink
from mailer.store.models import Event, NewDistribution, SendFilter

HTML = """<html><body>
<p>Hallo {{ name }},</p>
<p>wir möchten gerne wissen, wie zufrieden Sie mit unserem Service sind. Die Umfrage
dauert nur fünf Minuten und hilft uns, besser zu werden.</p>
<p><a href="https://survey.bench.test/s/{{ token }}">Zur Umfrage</a></p>
<p>Vielen Dank für Ihre Unterstützung!<br>Ihr Kundenservice-Team</p>
</body></html>
"""
SUBJECT = "Ihre Meinung zählt, {{ name }}: kurze Umfrage"
SENDER = "umfragen@customer.bench.test"
OUR_DOMAIN = "bench.test"


@dataclass(frozen=True)
class BenchReport:
    messages: int
    domains: int
    workers: int
    store: str
    enqueue_seconds: float
    deliver_seconds: float
    messages_per_second: float
    latency_p50_ms: float
    latency_p99_ms: float
    # each engine process's own high-water mark (VmHWM), start-up included
    peak_rss_mb: float
    peak_rss_mb_per_engine: tuple[float, ...]
    sink_received: int
    baseline_messages: int
    baseline_messages_per_second: float
    ratio: float
    dkim_signatures_per_second: float
    rsa_operations_per_second: float
    dkimpy_signatures_per_second: float
    api_recipients: int
    api_recipients_per_second: float
    bounce_samples: int
    bounces_parsed_per_second: float
    inbound_messages: int
    inbound_accepted_per_second: float
    sink_checked_messages: int
    sink_checks_per_second: float
    # worker processes checking (as `mailer sink` runs); the rate with
    # none, the checks in the sink's own process, beside it
    sink_check_processes: int
    # the STARTTLS connections they came over (the engine's in the bench)
    sink_connections: int
    sink_checks_in_process_per_second: float
    webhook_events: int
    webhook_events_received: int
    webhook_events_per_second: float
    # the same messages again, every domain under an MTA-STS enforce policy
    # (0 when not measured), and that rate over the encrypt rate
    mta_sts_messages_per_second: float = 0.0
    mta_sts_ratio: float = 0.0
    # the same messages again under DANE (TLSA on every MX), and its ratio
    dane_messages_per_second: float = 0.0
    dane_ratio: float = 0.0
    # every run of the alternation, in order: DANE, and encrypt beside it
    dane_runs: tuple[float, ...] = ()
    dane_encrypt_runs: tuple[float, ...] = ()
    # one message per connection (every message a TLS session), with TLS
    # report counting off and on (0 when not measured), and on over off
    tlsrpt_off_messages_per_second: float = 0.0
    tlsrpt_on_messages_per_second: float = 0.0
    tlsrpt_ratio: float = 0.0
    # the naive baseline's caps: it stops at whichever comes first
    baseline_cap_messages: int = 0
    baseline_cap_seconds: float = 0.0
    # each engine process's RSS once started, before the first send (0
    # where /proc is not there): the peak above less this is the drain's
    startup_rss_mb_per_engine: tuple[float, ...] = ()
    # plain aiosmtplib to the same sink, unsigned, no store (the transport
    # ceiling, mailer.bench.ceiling), and the engine's rate over it
    ceiling_connections: int = 0
    ceiling_messages_per_second: float = 0.0
    ceiling_ratio: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def zone(domains: int) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {"mx.bench.test": {"A": ["127.0.0.1"]}}
    for index in range(domains):
        records[f"d{index}.bench.test"] = {"MX": [(10, "mx.bench.test")]}
    return records


MX_HOST = "mx.bench.test"
# delivery runs of each kind (encrypt, MTA-STS enforce) with --mta-sts
STS_ROUNDS = 3


def policy_zone(domains: int) -> dict[str, dict[str, Any]]:
    """The MTA-STS records of every bench domain: the TXT id and the
    policy host (on 127.0.0.1)."""
    records: dict[str, dict[str, Any]] = {}
    for index in range(domains):
        records[f"_mta-sts.d{index}.bench.test"] = {"TXT": ["v=STSv1; id=bench1;"]}
        records[f"mta-sts.d{index}.bench.test"] = {"A": ["127.0.0.1"]}
    return records


def tlsa_zone(port: int, certificate: Path) -> dict[str, dict[str, Any]]:
    """The MX host's TLSA record: DANE-EE, SPKI, SHA-256 of the sink's
    certificate (the first in ``certificate``, a PEM chain)."""
    leaf = x509.load_pem_x509_certificates(certificate.read_bytes())[0]
    data = association(leaf.public_bytes(Encoding.DER), 1, 1)
    return {tlsa_name(MX_HOST, port): {"TLSA": [f"3 1 1 {data.hex()}"]}}


def recipients(messages: int, domains: int, start: int = 0) -> list[RecipientInput]:
    return [
        RecipientInput(
            f"respondent{i}@d{i % domains}.bench.test",
            f"Befragte Person {i}",
            {"token": f"{i:08d}"},
        )
        for i in range(start, start + messages)
    ]


def recipient_batches(messages: int, domains: int) -> Iterator[list[RecipientInput]]:
    """The bench's recipients in batches of at most MAX_RECIPIENTS (what
    one request may carry), made one batch at a time."""
    for start in range(0, messages, MAX_RECIPIENTS):
        yield recipients(min(MAX_RECIPIENTS, messages - start), domains, start)


@contextlib.contextmanager
def sink_process(
    port: int, log: Path, cert: tuple[Path, Path] | None = None, *, pipelining: bool = True
) -> Iterator[Callable[[], int]]:
    """The sink in its own process (presenting ``cert`` when given, offering
    PIPELINING unless told not to); yields a function counting what it got."""
    command = [sys.executable, "-m", "mailer", "sink", "--no-checks"]
    command += ["--listen", f"127.0.0.1:{port}"]
    if cert is not None:
        command += ["--hostname", MX_HOST, "--cert", str(cert[0]), "--key", str(cert[1])]
    if not pipelining:
        command.append("--no-pipelining")
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise MailerError(f"the sink did not start: {log.read_text()}")
            time.sleep(0.05)

        def received() -> int:
            # line by line: a long run's log need not fit in memory
            with log.open(encoding="utf-8", errors="replace") as lines:
                return sum(1 for line in lines if " from=<" in line)

        yield received
    finally:
        proc.terminate()
        proc.wait(10)


def settled(count: Callable[[], int], expected: int, timeout: float = 5.0) -> int:
    """``count()`` once it reaches ``expected`` or stops at less for
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value = count()
    while value < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        value = count()
    return value


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def delivery_latencies(
    events: Iterable[Event], since: float, queued_later: dict[str, float]
) -> Iterator[float]:
    """Seconds from each send's start to its delivery (pure), where the
    start is when it was queued or ``since`` (the wall-clock time the
    engines were told to start), whichever is later: a send waiting for the
    engine to start is not the engine's latency. ``queued_later`` carries
    the sends queued after ``since`` from one page of events to the next;
    only those are remembered (none when all are enqueued first), so a
    million-message run holds a list of floats, not a map of every send."""
    for event in events:
        if event.send_id is None:
            continue  # an account's event (a webhook endpoint disabled)
        if event.state is State.QUEUED and event.at > since:
            queued_later[event.send_id] = event.at
        elif event.state is State.DELIVERED:
            yield event.at - queued_later.pop(event.send_id, since)


async def _latencies(app: App, since: float) -> list[float]:
    queued_later: dict[str, float] = {}
    latencies: list[float] = []
    after = 0
    while page := await app.store.events(after=after, limit=5000):
        latencies.extend(delivery_latencies(page, since, queued_later))
        after = page[-1].seq
    return latencies


def api_recipients_for(messages: int) -> int:
    """The API figure's recipients by default: as many as the run's
    messages in whole distributions of 1,000, at least one distribution and
    at most 100 (beyond that the rate no longer changes, the run only gets
    longer)."""
    return min(100_000, max(1000, -(-messages // 1000) * 1000))


def sample_message() -> bytes:
    compiled = compile_content(Content(subject=SUBJECT, html=HTML, text=None))
    [item] = recipients(1, 1)
    rendered = render(compiled, {**item.variables, "name": item.name, "email": item.email})
    return build_message(
        rendered,
        from_=parse_address("from", SENDER, "Kundenservice"),
        to=parse_address("to", item.email, item.name),
        reply_to=None,
        message_id="<sample@bench.test>",
        date=datetime.now(UTC),
        list_unsubscribe=["https://survey.bench.test/u/1"],
    )


def sink_check_rate(
    dns: DNSServer, signer: Signer, root: Path, count: int, *, processes: int | None = None
) -> float:
    """Messages per second through the dev sink's full-check path (DKIM
    verification against the loopback DNS, the header checks, the Maildir)
    as `mailer sink` runs it: ``processes`` checking processes (default:
    one per CPU), the messages coming over STARTTLS from a sending process
    of their own (the ceiling's client) on as many connections as the
    engine delivers over in the bench (:data:`CONNECTIONS`): the sink has
    to keep up with the engine. Measured from the first message sent until
    the last one is checked and stored."""
    data = signer.sign(sample_message())
    options = SinkOptions(
        maildir=root / "Maildir",
        backlog=count + 1,
        check_processes=(os.cpu_count() or 1) if processes is None else processes,
    )
    with DevSink(options, nameservers=[dns.address]) as sink:
        sending = count / transport_ceiling(sink.port, data, count, connections=CONNECTIONS)
        start = time.perf_counter()
        sink.wait_idle(timeout=max(60.0, count / 10))
        return count / (sending + time.perf_counter() - start)


def signatures_per_second(
    sign: Callable[[bytes], bytes], seconds: float = 2.0, *, data: bytes | None = None
) -> float:
    """Signatures of a typical invitation (or of ``data``) per second of CPU
    time (one core)."""
    message = sample_message() if data is None else data
    count = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        sign(message)
        count += 1
    return count / (time.process_time() - start)


def naive_baseline(
    port: int, messages: int, domains: int, seconds: float, keys: list[SigningKey]
) -> tuple[int, float]:
    """smtplib, one connection and STARTTLS per message, same templates and
    composition as the engine, signed with plain dkimpy. Stops after
    ``messages`` or ``seconds``."""
    compiled = compile_content(Content(subject=SUBJECT, html=HTML, text=None))
    sender = parse_address("from", SENDER, "Kundenservice")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    sent = 0
    start = time.perf_counter()
    for item in recipients(messages, domains):
        rendered = render(compiled, {**item.variables, "name": item.name, "email": item.email})
        data = build_message(
            rendered,
            from_=sender,
            to=parse_address("to", item.email, item.name),
            reply_to=None,
            message_id=f"<naive{sent}@bench.test>",
            date=datetime.now(UTC),
        )
        data = naive_sign(data, keys)
        with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as smtp:
            smtp.starttls(context=context)
            smtp.sendmail(SENDER, [item.email], data)
        sent += 1
        if time.perf_counter() - start > seconds:
            break
    return sent, sent / (time.perf_counter() - start)


async def _enqueue(config: Config, messages: int, domains: int) -> float:
    async with App(config) as app:
        dist = NewDistribution(
            account="bench",
            sender_address=SENDER,
            sender_name="Kundenservice",
            subject=SUBJECT,
            html=HTML,
            text=None,
            unsubscribe_url="https://survey.bench.test/u/{{ token }}",
        )
        start = time.perf_counter()
        done = 0
        for batch in recipient_batches(messages, domains):
            await app.enqueue(dist, batch)
            done += len(batch)
            progress.show(f"enqueued {done:,} of {messages:,}")
        return time.perf_counter() - start


def _engine_process(config: Config, owner: str, ready: Any, go: Any, done: Any) -> None:
    """One engine process of the bench, as ``mailer worker --drain`` runs it:
    it builds its engine, says it is ready, waits for the start and drains
    the queue with the others."""

    async def work() -> None:
        async with App(config) as app:
            engine = await app.engine(owner=owner)
            service_loop.settle_heap()
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            started.append(time.process_time())
            await engine.run(drain=True)

    started: list[float] = []
    service_loop.run(work())
    # the peak RSS, and the CPU (all threads) from the start signal on
    done.put((own_peak_kb(), time.process_time() - started[0]))


def own_peak_kb() -> int:
    """This process's peak resident set (KiB) since it started its program.
    Not ru_maxrss where /proc is there: in a spawned process that is at
    least the parent's resident set when it forked, which for the bench is
    the process that enqueued everything."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    peak = resident_mb(status, "VmHWM")
    if peak is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak * 1024)


def resident_mb(status: str, field: str = "VmRSS") -> float | None:
    """The resident set (MB) in the text of a /proc/PID/status (pure):
    ``VmRSS`` now, ``VmHWM`` its peak."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == field and value.split():
            return int(value.split()[0]) / 1024
    return None


def _resident_mb(pid: int | None) -> float:
    # Linux only; elsewhere the start-up figure is left out (0)
    try:
        return resident_mb(Path(f"/proc/{pid}/status").read_text()) or 0.0
    except OSError:
        return 0.0


class Delivery(NamedTuple):
    seconds: float
    # each engine process's peak RSS (MB), and its RSS once started
    peak_mb: list[float]
    started_at: float
    startup_mb: list[float]


def _deliver(config: Config, workers: int, *, cpu: list[float] | None = None) -> Delivery:
    """Seconds from the start signal until ``workers`` engine processes have
    drained the queue, the peak RSS (MB) of each and their RSS when ready,
    and the wall-clock time of the start signal (where latencies begin);
    with ``cpu``, each one's CPU seconds from the start signal are appended
    to it. Start-up (imports, keys, connections to the store) is not timed: it is
    not throughput."""
    context = multiprocessing.get_context("spawn")
    go, done = context.Event(), context.Queue()
    ready = [context.Event() for _ in range(workers)]
    processes = [
        context.Process(
            target=_engine_process, args=(config, f"bench-{i}", ready[i], go, done), daemon=True
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for event, process in zip(ready, processes, strict=True):
            while not event.wait(0.1):
                if not process.is_alive():
                    raise MailerError(f"bench: an engine process exited ({process.exitcode})")
        startup_mb = [_resident_mb(process.pid) for process in processes]
        started_at = time.time()
        start = time.perf_counter()
        go.set()
        # each process reports once drained; read before joining, as a
        # process that has put on a queue may not end until it is read
        peaks: list[int] = []
        while len(peaks) < workers:
            try:
                peak, busy = done.get(timeout=0.5)
                peaks.append(peak)
                if cpu is not None:
                    cpu.append(busy)
            except queue.Empty:
                progress.show(f"delivering, {time.perf_counter() - start:.0f} s")
                failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
                if failed:
                    raise MailerError(f"bench: engine processes exited with {failed}") from None
        seconds = time.perf_counter() - start
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    return Delivery(seconds, [peak / 1024 for peak in peaks], started_at, startup_mb)


async def _outcome(
    config: Config, messages: int, *, since: float, tls_policy: str | None = None
) -> list[float]:
    """The latencies from ``since`` (see _latencies). Raises MailerError
    unless every message was delivered (and, with ``tls_policy``, the first
    one under that policy)."""
    async with App(config) as app:
        counts = await app.store.counts()
        if counts.get(State.DELIVERED, 0) != messages:
            raise MailerError(f"bench: not everything was delivered: {counts}")
        if tls_policy is not None:
            [first] = await app.store.list_sends(SendFilter(), limit=1)
            applied = {a.tls_policy for a in await app.store.attempts(first.id)}
            if applied != {tls_policy}:
                raise MailerError(f"bench: delivered under {applied}, not {tls_policy}")
        return await _latencies(app, since)


@contextlib.contextmanager
def bench_database(root: Path, postgres: str | None) -> Iterator[str]:
    """The bench's store: an SQLite file under ``root``, or with a
    ``postgres`` URL a scratch schema there, dropped afterwards. Raises
    MailerError (StoreError, ConfigError) when PostgreSQL cannot be used."""
    if postgres is None:
        yield str(root / "bench.sqlite3")
        return
    try:
        from mailer.store.postgres.store import create_schema, drop_schema
    except ImportError as exc:
        raise ConfigError("database", f"PostgreSQL needs the postgres extra: {exc}") from exc
    schema = f"mailer_bench_{secrets.token_hex(4)}"
    url = service_loop.run(create_schema(postgres, schema))
    try:
        yield url
    finally:
        service_loop.run(drop_schema(postgres, schema))


async def _prime_policies(config: Config, domains: int) -> None:
    """Fetch every domain's policy into the store, untimed: the bench
    measures delivery with policies cached, as they are in steady state
    (a policy is fetched once per id and max_age, not per message). Raises
    MailerError when a domain has no policy."""
    async with App(config) as app:
        try:
            for index in range(domains):
                if await app.policies().policy_for(f"d{index}.bench.test") is None:
                    raise MailerError(f"bench: no MTA-STS policy for d{index}.bench.test")
        finally:
            await app.policies().aclose()


def _phase(
    stack: contextlib.ExitStack,
    config: Config,
    root: Path,
    postgres: str | None,
    messages: int,
    domains: int,
    workers: int,
    *,
    cpu: list[float] | None = None,
) -> float:
    """Enqueue and deliver ``messages`` into a fresh store under ``root``
    with ``config``; the delivery rate (and, with ``cpu``, each engine
    process's CPU seconds appended to it). With MTA-STS configured, checks
    that the policy applied was enforce. Raises MailerError."""
    root.mkdir()
    phase = config.model_copy(
        update={"database": stack.enter_context(bench_database(root, postgres))}
    )
    service_loop.run(_enqueue(phase, messages, domains))
    enforced = phase.mta_sts.test_cafile is not None
    if enforced:
        service_loop.run(_prime_policies(phase, domains))
    delivery = _deliver(phase, workers, cpu=cpu)
    expected = "mta-sts enforce" if enforced else "encrypt"
    if phase.dnssec == "trust-ad":
        expected = "dane"
    service_loop.run(_outcome(phase, messages, since=delivery.started_at, tls_policy=expected))
    service_loop.run(_check_tls_counts(phase))
    return messages / delivery.seconds


async def _check_tls_counts(config: Config) -> None:
    """Raises MailerError when TLS report counting is on and counted no
    session, or off and counted some: the comparison would be void."""
    async with App(config) as app:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        sessions = sum(c.count for c in await app.store.tlsrpt.counts(day))
    if config.tlsrpt.count != (sessions > 0):
        raise MailerError(
            f"bench: TLS report counting is {config.tlsrpt.count}, {sessions} counted"
        )


def _counting_rates(
    stack: contextlib.ExitStack,
    config: Config,
    root: Path,
    postgres: str | None,
    messages: int,
    domains: int,
    workers: int,
) -> tuple[float, float]:
    """The delivery rate with TLS report counting off and on, one message
    per connection so that every message is a counted session (the most
    counting can cost). Off and on alternate, STS_ROUNDS of each, and the
    best of each kind is compared: the machine drifts within a run."""
    limits = config.limits.default.model_copy(update={"messages_per_connection": 1})
    sessions = config.model_copy(
        update={"limits": config.limits.model_copy(update={"default": limits})}
    )
    kinds = {
        False: sessions.model_copy(
            update={"tlsrpt": config.tlsrpt.model_copy(update={"count": False})}
        ),
        True: sessions.model_copy(
            update={"tlsrpt": config.tlsrpt.model_copy(update={"count": True})}
        ),
    }
    rates: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(STS_ROUNDS):
        for counting, phase in kinds.items():
            where = root / f"tlsrpt-{'on' if counting else 'off'}{round_}"
            rates[counting].append(
                _phase(stack, phase, where, postgres, messages, domains, workers)
            )
    return max(rates[False]), max(rates[True])


def bench_config(root: Path, dns: DNSServer, port: int, database: str, workers: int) -> Config:
    """The engine's settings in the bench: the sink on ``port``, the
    loopback DNS, the keys under ``root``; the same connections and leases
    in all, shared by the ``workers`` processes. With one process per core,
    each signs on its own loop's thread: signing threads would only wait
    for that process's GIL."""
    return load_config(
        environ={},
        overrides={
            "hostname": "bench.test",
            "database": database,
            "keys_dir": str(root / "keys"),
            "dkim": {"domain": OUR_DOMAIN, "signing_threads": 0 if workers > 1 else 2},
            "nameservers": [dns.address],
            "smtp_port": port,
            "limits": {
                "default": {
                    "connections": max(1, 8 // workers),
                    "messages_per_connection": 1000,
                }
            },
            "worker": {"max_in_flight": max(100, 2000 // workers), "poll_interval": 0.2},
        },
    )


def run_bench(
    messages: int,
    *,
    domains: int = 4,
    baseline_messages: int = 1000,
    baseline_seconds: float = 20.0,
    workdir: Path | None = None,
    postgres: str | None = None,
    api_recipients: int = 20_000,
    workers: int = 1,
    mta_sts: bool = False,
    dane: bool = False,
    tlsrpt: bool = False,
) -> BenchReport:
    """With ``postgres`` (a postgresql:// URL) the queue lives in a scratch
    schema of that database instead of an SQLite file. The engine runs as
    ``workers`` processes (``mailer worker``), as on a host with one per
    core. With ``mta_sts`` the delivery is measured a second time with an
    enforce policy on every domain, and with ``dane`` under DANE. With
    ``tlsrpt`` it is measured with one message per connection, TLS report
    counting off and on."""
    with contextlib.ExitStack() as stack:
        stack.callback(progress.clear)
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        keystore = KeyStore(root / "keys")
        keystore.generate(OUR_DOMAIN, "bench")
        keys = keystore.load(OUR_DOMAIN)
        signer = Signer({OUR_DOMAIN: keys}, our_domain=OUR_DOMAIN)
        dns = stack.enter_context(DNSServer(zone(domains)))
        # the key the dev sink verifies against
        for info in keystore.list():
            dns.set(f"{info.selector}._domainkey.{info.domain}", "TXT", [dns_record_value(info)])
        port = pick_port(("127.0.0.1",))
        certs = stack.enter_context(TestCerts())
        cert = certs.issue([MX_HOST]) if mta_sts or dane else None
        received = stack.enter_context(sink_process(port, root / "sink.log", cert))
        config = bench_config(
            root, dns, port, stack.enter_context(bench_database(root, postgres)), workers
        )
        enqueue_seconds = service_loop.run(_enqueue(config, messages, domains))
        delivery = _deliver(config, workers)
        deliver_seconds, engine_rss_mb = delivery.seconds, delivery.peak_mb
        progress.show("reading the delivery events")
        latencies = service_loop.run(_outcome(config, messages, since=delivery.started_at))
        # the sink writes its lines a few times a second
        engine_received = settled(received, messages)
        ceiling = transport_ceiling(
            port, sample_message(), messages, processes=workers, domains=domains
        )
        sts_rate = 0.0
        if mta_sts:
            host = stack.enter_context(
                PolicyHost(certs, [f"mta-sts.d{i}.bench.test" for i in range(domains)])
            )
            for index in range(domains):
                host.serve(f"d{index}.bench.test", Reply(policy_text("enforce", [MX_HOST])))
            sts_config = config.model_copy(
                update={
                    "tls": config.tls.model_copy(update={"cafile": certs.ca_path}),
                    "mta_sts": config.mta_sts.model_copy(
                        update={"test_port": host.port, "test_cafile": certs.ca_path}
                    ),
                }
            )
            # The box drifts within a run (and other work shares it): after
            # the main encrypt run, enforce and encrypt alternate, and the
            # best of STS_ROUNDS of each kind is compared.
            sts_rates: list[float] = []
            for round_ in range(STS_ROUNDS):
                progress.show(f"MTA-STS round {round_ + 1} of {STS_ROUNDS}")
                dns.update(policy_zone(domains))
                sts_rates.append(
                    _phase(
                        stack,
                        sts_config,
                        root / f"sts{round_}",
                        postgres,
                        messages,
                        domains,
                        workers,
                    )
                )
                if round_ < STS_ROUNDS - 1:
                    for index in range(domains):
                        dns.remove(f"_mta-sts.d{index}.bench.test")
                    again = _phase(
                        stack,
                        config,
                        root / f"encrypt{round_ + 1}",
                        postgres,
                        messages,
                        domains,
                        workers,
                    )
                    deliver_seconds = min(deliver_seconds, messages / again)
            sts_rate = max(sts_rates)
        dane_rate = 0.0
        dane_rates: list[float] = []
        dane_encrypt_rates: list[float] = []
        if dane and cert is not None:
            # AD on every answer; the encrypt runs do not trust it
            dns.secure()
            dns.update(tlsa_zone(port, cert[0]))
            dane_config = config.model_copy(update={"dnssec": "trust-ad"})
            # alternated with encrypt runs, which goes first changing each
            # round (the machine drifts, and a second run in a row sees a
            # warmer page cache); best of each
            for round_ in range(STS_ROUNDS):
                kinds = [("dane", dane_config), ("encrypt", config)]
                for kind, phase_config in kinds if round_ % 2 == 0 else kinds[::-1]:
                    rate_ = _phase(
                        stack,
                        phase_config,
                        root / f"{kind}-dane{round_}",
                        postgres,
                        messages,
                        domains,
                        workers,
                    )
                    (dane_rates if kind == "dane" else dane_encrypt_rates).append(rate_)
            deliver_seconds = min(deliver_seconds, messages / max(dane_encrypt_rates))
            dane_rate = max(dane_rates)
        counting_rates = (0.0, 0.0)
        if tlsrpt:
            counting_rates = _counting_rates(
                stack, config, root, postgres, messages, domains, workers
            )
        progress.show(f"naive baseline (up to {baseline_messages:,} messages)")
        baseline_sent, baseline_rate = naive_baseline(
            port, baseline_messages, domains, baseline_seconds, keys
        )
        rate = messages / deliver_seconds
        sink_checked = min(messages, 2000)
        progress.show("the sink's checks")
        check_processes = os.cpu_count() or 1
        sink_rate = sink_check_rate(
            dns, signer, root / "sink-pool", sink_checked, processes=check_processes
        )
        sink_alone_rate = sink_check_rate(
            dns, signer, root / "sink-alone", sink_checked, processes=0
        )
        hook_port = pick_port(("127.0.0.1",))
        progress.show("webhooks")
        with receiver_process(hook_port) as hook_events:
            hooks = service_loop.run(webhook_rate(config, hook_port, "bench", hook_events))
        api_root = root / "api"
        api_root.mkdir()
        progress.show(f"the API, {api_recipients:,} recipients")
        api_rate = service_loop.run(
            api_enqueue_rate(
                api_root,
                api_recipients,
                html=HTML,
                subject=SUBJECT,
                database=stack.enter_context(bench_database(api_root, postgres)),
            )
        )
        progress.show("bounce parsing and inbound")
        samples, parse_rate = bounces_parsed_per_second()
        inbound_root = root / "inbound"
        inbound_root.mkdir()
        # as many returned messages as sent, within bounds that keep a
        # short run short and a long one meaningful
        inbound_messages = min(max(messages, 100), 2000)
        inbound_rate = inbound_accepted_per_second(inbound_root, inbound_messages)
        progress.show("the signing yardsticks")
        return BenchReport(
            messages=messages,
            domains=domains,
            workers=workers,
            store="sqlite" if postgres is None else "postgres",
            enqueue_seconds=round(enqueue_seconds, 3),
            deliver_seconds=round(deliver_seconds, 3),
            messages_per_second=round(rate, 1),
            latency_p50_ms=round(statistics.median(latencies) * 1000, 1),
            latency_p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
            peak_rss_mb=round(max(engine_rss_mb), 1),
            peak_rss_mb_per_engine=tuple(round(mb, 1) for mb in engine_rss_mb),
            startup_rss_mb_per_engine=tuple(round(mb, 1) for mb in delivery.startup_mb),
            sink_received=engine_received,
            baseline_messages=baseline_sent,
            baseline_messages_per_second=round(baseline_rate, 1),
            ratio=round(rate / baseline_rate, 2),
            dkim_signatures_per_second=round(signatures_per_second(signer.sign), 1),
            # the RSA-2048 private-key operation alone: the ceiling of the above
            rsa_operations_per_second=round(
                signatures_per_second(
                    digest_signer(next(k for k in keys if k.algorithm == "rsa")),
                    data=hashlib.sha256(b"bench").digest(),
                ),
                1,
            ),
            dkimpy_signatures_per_second=round(
                signatures_per_second(lambda m: naive_sign(m, keys)), 1
            ),
            api_recipients=api_recipients,
            api_recipients_per_second=round(api_rate, 1),
            bounce_samples=samples,
            bounces_parsed_per_second=round(parse_rate, 1),
            inbound_messages=inbound_messages,
            inbound_accepted_per_second=round(inbound_rate, 1),
            sink_checked_messages=sink_checked,
            sink_checks_per_second=round(sink_rate, 1),
            sink_check_processes=check_processes,
            sink_connections=CONNECTIONS,
            sink_checks_in_process_per_second=round(sink_alone_rate, 1),
            mta_sts_messages_per_second=round(sts_rate, 1),
            mta_sts_ratio=round(sts_rate / rate, 3),
            dane_messages_per_second=round(dane_rate, 1),
            dane_ratio=round(dane_rate / rate, 3),
            dane_runs=tuple(round(r, 1) for r in dane_rates),
            dane_encrypt_runs=tuple(round(r, 1) for r in dane_encrypt_rates),
            tlsrpt_off_messages_per_second=round(counting_rates[0], 1),
            tlsrpt_on_messages_per_second=round(counting_rates[1], 1),
            tlsrpt_ratio=round(counting_rates[1] / counting_rates[0], 3) if tlsrpt else 0.0,
            ceiling_connections=CONNECTIONS,
            ceiling_messages_per_second=round(ceiling, 1),
            ceiling_ratio=round(rate / ceiling, 3),
            webhook_events=hooks.events,
            webhook_events_received=hooks.received,
            webhook_events_per_second=round(hooks.per_second, 1),
            baseline_cap_messages=baseline_messages,
            baseline_cap_seconds=baseline_seconds,
        )
