"""Prometheus metrics of one process and the ``/metrics`` endpoint of
``mailer worker``.

Every :class:`Metrics` owns its own ``CollectorRegistry`` (never the
library's global default one), so two apps in one process, or two tests,
never share counters. Counters count what this process did; the queue depth
is read from the store at every scrape, so it is the same whichever worker
is asked.

Labels are bounded: ``state`` and ``reason`` come from fixed vocabularies,
and ``destination`` is one of a configured set of large providers
(``metrics.destinations``) or ``other``. The process's own metrics
(``process_*``: CPU, memory, open files; ``python_info``) are exported too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Self

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mailer.config import LARGE_PROVIDERS
from mailer.errors import MailerError
from mailer.reasons import Reason, State
from mailer.store.base import FeedStore
from mailer.store.models import Attempt, Send
from mailer.store.rules import UNFINISHED_STATES

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE", "OTHER", "TLS_REASONS", "Metrics", "MetricsServer", "destination_label"]

#: The ``destination`` of every recipient domain not configured by name.
OTHER = "other"

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Attempt reasons that mean the destination's TLS was the trouble.
TLS_REASONS = frozenset(
    {
        Reason.TLS_UNAVAILABLE,
        Reason.TLS_HANDSHAKE,
        Reason.CERTIFICATE,
        Reason.MTA_STS_MISMATCH,
        Reason.DANE,
    }
)

# Enqueue to 250: from seconds (a warm queue) to the retry horizon (days).
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 5 * 86400.0)
ATTEMPT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def destination_label(domain: str, named: frozenset[str]) -> str:
    """The ``destination`` label of a recipient domain: itself when it is
    one of ``named``, else ``other`` (pure)."""
    return domain if domain in named else OTHER


class Metrics:
    """The service's metrics (names in docs/operations.md)."""

    def __init__(self, *, destinations: Iterable[str] = LARGE_PROVIDERS) -> None:
        self.registry = CollectorRegistry()
        self.destinations = frozenset(destinations)
        # process_* (CPU seconds, resident memory, open fds, start time) and
        # python_info, on this registry rather than the library's global one
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.sends = Counter(
            "mailer_sends",
            "Outcomes recorded by this process, by state and reason.",
            ["state", "reason"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "mailer_attempts",
            "Delivery attempts made by this process, by the reason of their result.",
            ["reason"],
            registry=self.registry,
        )
        self.tls_failures = Counter(
            "mailer_tls_failures",
            "Attempts that failed on TLS (no STARTTLS, handshake, certificate), "
            "by destination (a configured large provider, or other).",
            ["destination", "reason"],
            registry=self.registry,
        )
        self.tls_policy_attempts = Counter(
            "mailer_tls_policy_attempts",
            "Delivery attempts by the TLS policy they were made under (encrypt, verify, "
            "mta-sts enforce, mta-sts testing, dane; what DANE found where it did not "
            "apply follows in brackets) and the reason of their result.",
            ["policy", "reason"],
            registry=self.registry,
        )
        self.mta_sts_testing_failures = Counter(
            "mailer_mta_sts_testing_failures",
            "What an MTA-STS policy in testing mode would have refused (delivered anyway), "
            "by recipient domain and reason (certificate, mta-sts-mismatch).",
            ["destination", "reason"],
            registry=self.registry,
        )
        self.mta_sts_fetch_failures = Counter(
            "mailer_mta_sts_fetch_failures",
            "MTA-STS policies that could not be fetched or parsed, by recipient domain and "
            "the field or step at fault.",
            ["destination", "field"],
            registry=self.registry,
        )
        self.tls_reports = Counter(
            "mailer_tls_reports",
            "Daily TLS reports (RFC 8460) this process finished, by state (sent, no-record, "
            "failed) or left due again (retry).",
            ["state"],
            registry=self.registry,
        )
        self.tls_report_deliveries = Counter(
            "mailer_tls_report_deliveries",
            "TLS reports handed to one rua URI, by scheme (https, mailto) and result (ok, failed).",
            ["scheme", "result"],
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "mailer_delivery_latency_seconds",
            "From enqueue to the receiving server's acceptance, retries included.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.attempt_duration = Histogram(
            "mailer_attempt_duration_seconds",
            "Duration of one delivery attempt (the SMTP transaction).",
            buckets=ATTEMPT_BUCKETS,
            registry=self.registry,
        )
        self.loop_errors = Counter(
            "mailer_worker_loop_errors",
            "Unexpected errors survived by a worker's loops (renew, flush, connection), by loop.",
            ["loop"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mailer_queue_depth",
            "Sends not yet finished (queued, held, sending, deferred) by state, "
            "read from the store at scrape time.",
            ["state"],
            registry=self.registry,
        )

        # the circuit breaker's last sweep (mailer.feedback.circuit), over all
        # accounts together: no per-account labels
        self.breaker_rate = Gauge(
            "mailer_feedback_rate",
            "Hard-bounce and complaint rates over the breaker windows of all accounts.",
            ["kind"],
            registry=self.registry,
        )
        self.accounts_paused = Gauge(
            "mailer_accounts_paused",
            "Accounts whose unsent mail the circuit breaker holds.",
            registry=self.registry,
        )

    def set_breaker(self, *, sends: int, hard_bounces: int, complaints: int, paused: int) -> None:
        """The aggregate of one breaker sweep. Raises nothing."""
        self.breaker_rate.labels(kind="hard-bounce").set(hard_bounces / sends if sends else 0.0)
        self.breaker_rate.labels(kind="complaint").set(complaints / sends if sends else 0.0)
        self.accounts_paused.set(paused)

    def finished(
        self, send: Send, state: State, reason: Reason, attempt: Attempt | None, *, now: float
    ) -> None:
        """Count one outcome (and its attempt) of ``send``. Raises nothing."""
        self.sends.labels(state=state.value, reason=reason.value).inc()
        if state is State.DELIVERED:
            self.delivery_latency.observe(max(now - send.created_at, 0.0))
        if attempt is None:
            return
        self.attempts.labels(reason=attempt.reason.value).inc()
        if attempt.tls_policy is not None:
            self.tls_policy_attempts.labels(
                policy=attempt.tls_policy, reason=attempt.reason.value
            ).inc()
        self.attempt_duration.observe(max(attempt.finished_at - attempt.started_at, 0.0))
        if attempt.reason in TLS_REASONS:
            destination = destination_label(send.domain, self.destinations)
            self.tls_failures.labels(destination=destination, reason=attempt.reason.value).inc()

    def tls_report(self, state: str) -> None:
        """One TLS report this process finished (sent, no-record, failed)
        or left due again (retry). Raises nothing."""
        self.tls_reports.labels(state=state).inc()

    def tls_report_delivery(self, scheme: str, *, ok: bool) -> None:
        """One TLS report handed to one ``rua`` URI. Raises nothing."""
        self.tls_report_deliveries.labels(scheme=scheme, result="ok" if ok else "failed").inc()

    def mta_sts_testing_failure(self, domain: str, reason: Reason) -> None:
        self.mta_sts_testing_failures.labels(destination=domain, reason=reason.value).inc()

    def mta_sts_fetch_failure(self, domain: str, field: str) -> None:
        self.mta_sts_fetch_failures.labels(destination=domain, field=field).inc()

    def set_queue(self, counts: Mapping[State, int]) -> None:
        """Every unfinished state gets a value, 0 included, so that a
        drained queue shows as 0 rather than as a stale number. Finished
        sends are not queue depth (and counting them grows with history)."""
        for state in UNFINISHED_STATES:
            self.queue_depth.labels(state=state.value).set(counts.get(state, 0))

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    async def scrape(self, store: FeedStore) -> bytes:
        """Read the queue depth from ``store``, then render. Raises
        StoreError when the store cannot be read."""
        self.set_queue(await store.queue_depth())
        return self.render()


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 on ``host:port`` (port 0: any free
    port, see ``.port`` once started); one request per connection."""

    def __init__(self, metrics: Metrics, store: FeedStore, host: str, port: int) -> None:
        self.metrics = metrics
        self.store = store
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            status, body, ctype = await self._respond(head)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that went away or never finished its request
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, head: bytes) -> tuple[str, bytes, str]:
        method, path = parse_request_line(head)
        text = "text/plain; charset=utf-8"
        if path.partition("?")[0] != "/metrics":
            return "404 Not Found", b"not found: try /metrics\n", text
        if method != "GET":
            return "405 Method Not Allowed", b"GET only\n", text
        try:
            return "200 OK", await self.metrics.scrape(self.store), CONTENT_TYPE
        except MailerError as exc:
            log.warning("metrics scrape: %s", exc)
            return "503 Service Unavailable", f"{exc}\n".encode(), text


def parse_request_line(head: bytes) -> tuple[str, str]:
    """Method and target of an HTTP request head (pure); an unreadable
    request line gives ``("", "")``. Raises nothing."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return "", ""
    return parts[0], parts[1]
