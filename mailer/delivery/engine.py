"""The worker loop: lease due sends, hand them to per-destination
connections, record every outcome.

Outcomes are written in batches; a crash between a server's 250 and the
batch write leaves those sends leased, and they are sent again when the
lease ends. That bounds duplicates after a crash by ``max_in_flight``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from mailer.config import Config
from mailer.delivery.connector import Connector, RouteFailure
from mailer.delivery.destination import Destination, SourceSlot
from mailer.delivery.retry import expired, next_due
from mailer.delivery.smtp import Session
from mailer.delivery.tls.applied import AppliedPolicy, apply_policy
from mailer.delivery.tls.policy import STSPolicy
from mailer.delivery.tls.sts import PolicySource
from mailer.dns import normalise_name
from mailer.errors import DeliveryError, DNSError, MailerError, SMTPReplyError, TemplateError
from mailer.logs import send_fields
from mailer.metrics import Metrics
from mailer.prepare import Prepared, Preparer
from mailer.reasons import Reason, State
from mailer.replycodes import classify
from mailer.store.base import QueueStore
from mailer.store.models import Attempt, Claimed, Outcome, Pruned, Send

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.05
# a helper loop that failed waits this long before its next try, doubling
# with each failure in a row up to the loop's own ceiling
LOOP_BACKOFF = 0.1


@dataclass
class Job:
    send: Send
    # the message, composed and signed while the one before it on the same
    # connection was on the wire (see Engine._prepare_ahead)
    prepared: asyncio.Task[Prepared] | None = None


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class Engine:
    """One worker. ``run()`` until stopped (or, with ``drain``, until
    nothing is due or in flight)."""

    def __init__(
        self,
        config: Config,
        store: QueueStore,
        connector: Connector,
        preparer: Preparer,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        policies: PolicySource | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.connector = connector
        self.preparer = preparer
        self.owner = owner or default_owner()
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = metrics
        # MTA-STS; not consulted when all mail goes to a relay (dev mode)
        self.policies = policies if config.relay is None else None
        self._pool = config.source_pool
        self._destinations: dict[str, Destination[Job]] = {}
        self._in_flight: dict[str, Job] = {}
        self._results: list[Outcome] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._ahead: set[asyncio.Task[Prepared]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.delivered = 0
        # unexpected errors the loops survived (also in the metric
        # mailer_worker_loop_errors_total)
        self.loop_errors = 0

    # lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        """Stop leasing; sends in an SMTP transaction finish, the rest are
        released when run() returns."""
        self._stopping = True
        self._wake.set()
        for dest in self._destinations.values():
            dest.arrived.set()

    async def run(self, *, drain: bool = False) -> None:
        helpers = [
            asyncio.create_task(self._flush_loop()),
            asyncio.create_task(self._renew_loop()),
            asyncio.create_task(self._prune_loop()),
        ]
        if self.policies is not None:
            interval = self.config.mta_sts.refresh_interval
            helpers.append(asyncio.create_task(self.policies.refresh_loop(interval)))
        try:
            await self._loop(drain)
        finally:
            # wakes connections waiting out their idle_timeout for more
            # sends: drained or stopping, none will come
            self.stop()
            await self._shutdown()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._flush()

    async def _loop(self, drain: bool) -> None:
        failures = 0
        while not self._stopping:
            try:
                done = await self._turn(drain)
            except Exception as exc:
                # a store that fails a claim or a summary for a while: try
                # again, pausing longer each time, rather than end the worker
                failures += 1
                self._loop_failed("claim", exc)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), _backoff(failures, LOOP_BACKOFF, ceiling=10.0)
                    )
                continue
            failures = 0
            if done:
                return

    async def _turn(self, drain: bool) -> bool:
        """One claim and, when nothing came, one wait; True once drained."""
        cfg = self.config.worker
        if not self._stopping:
            capacity = cfg.max_in_flight - len(self._in_flight)
            claimed: list[Claimed] = []
            # claim in chunks so that one worker does not lease the whole
            # queue while its destinations are slow
            if capacity >= max(1, min(cfg.max_in_flight // 4, 100)) or not self._in_flight:
                claimed = await self.store.claim(
                    self.owner, capacity, lease_seconds=cfg.lease_seconds, now=self.clock()
                )
            for item in claimed:
                self._dispatch(item)
            if claimed:
                return False
            self._wake.clear()
            timeout = cfg.poll_interval
            if not self._in_flight:
                try:
                    await self._flush()
                except Exception as exc:
                    # the outcomes are kept; the flush loop tries again
                    if not isinstance(exc, MailerError):
                        self._loop_failed("flush", exc)
                summary = await self.store.summary(now=self.clock())
                if drain and summary.due == 0 and summary.in_flight == 0:
                    return True
                if summary.next_due is not None:
                    timeout = min(timeout, max(summary.next_due - self.clock(), 0.01))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        return False

    async def _shutdown(self) -> None:
        # connection tasks see _stopping and end after their current message
        for dest in self._destinations.values():
            dest.queue.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # messages prepared ahead for sends that were then released
        for task in self._ahead:
            task.cancel()
        await asyncio.gather(*self._ahead, return_exceptions=True)
        await self._flush()
        leftover = list(self._in_flight)
        if leftover:
            await self.store.release(self.owner, leftover, now=self.clock())
            self._in_flight.clear()

    # dispatch ----------------------------------------------------------------

    def _dispatch(self, item: Claimed) -> None:
        send = item.send
        job = Job(send)
        self._in_flight[send.id] = job
        now = self.clock()
        if item.suppressed is not None:
            self._finish(job, State.SUPPRESSED, item.suppressed, detail="address is suppressed")
            return
        if send.attempts and expired(send.retry_from, now, self.config.retry):
            self._finish(job, State.FAILED, Reason.EXPIRED, detail="older than retry.max_age")
            return
        dest = self._destinations.get(send.domain)
        if dest is None:
            dest = Destination(
                send.domain,
                self.config.limits.for_domain(send.domain),
                sources=[SourceSlot(source) for source in self._pool],
            )
            self._destinations[send.domain] = dest
        if dest.throttled(now):
            self._finish(
                job,
                State.DEFERRED,
                Reason.THROTTLED,
                due_at=dest.throttled_until,
                detail="destination is throttled",
            )
            return
        dest.queue.append(job)
        dest.arrived.set()
        self._spawn(dest)

    def _spawn(self, dest: Destination[Job]) -> None:
        while dest.wants_connection() and not self._stopping:
            slot = dest.pick_source()
            dest.connections += 1
            if slot is not None:
                slot.connections += 1
            task = asyncio.create_task(self._connection(dest, slot))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # one connection ----------------------------------------------------------

    async def _connection(self, dest: Destination[Job], slot: SourceSlot | None) -> None:
        served = False
        try:
            served = await self._serve_destination(dest, slot)
        except MailerError as exc:
            log.exception("destination %s: %s", dest.domain, exc)
            self._defer_queue(dest, Reason.PROTOCOL, str(exc), attempt=True)
        except Exception as exc:
            # a fault of this worker, not of the destination: every send
            # waiting here goes back to the queue rather than staying leased
            # (and renewed) until the worker stops
            self._loop_failed("connection", exc)
            while dest.queue:
                self._internal(dest.queue.popleft(), exc)
        finally:
            dest.connections -= 1
            if slot is not None:
                slot.connections -= 1
            # a connection that could not be opened is not replaced at once:
            # the destination refuses more connections than those it has
            if served and dest.queue and not self._stopping:
                self._spawn(dest)

    async def _policy(self, domain: str) -> AppliedPolicy:
        """The TLS policy for a new connection to ``domain``: the configured
        level, tightened by the domain's MTA-STS policy (from memory on the
        hot path; see mailer.delivery.tls.sts). Raises StoreError."""
        published: STSPolicy | None = None
        if self.policies is not None:
            try:
                name = normalise_name(domain)
            except DNSError:
                name = None  # the route lookup reports it
            if name is not None:
                published = await self.policies.policy_for(name)
        return apply_policy(self.config.tls.for_domain(domain), published)

    async def _serve_destination(self, dest: Destination[Job], slot: SourceSlot | None) -> bool:
        """Deliver the destination's queue over one connection; False when
        no connection could be opened."""
        policy = await self._policy(dest.domain)
        try:
            session = await self.connector.connect(
                dest.domain, policy, slot.source if slot is not None else None
            )
        except DNSError as exc:
            if exc.temporary:
                self._defer_queue(dest, Reason.DNS, str(exc), attempt=True)
            else:
                self._bounce_queue(dest, Reason.DOMAIN_UNKNOWN, str(exc))
            return False
        except RouteFailure as exc:
            # other connections to this destination may still be working
            if dest.connections <= 1:
                self._defer_queue(
                    dest,
                    exc.reason,
                    exc.text,
                    attempt=True,
                    mx_host=exc.last_host,
                    # per host with DANE, so the failure's own where it has one
                    tls_policy=exc.policy or policy.label,
                )
            return False
        try:
            await self._send_on(dest, session, slot)
        finally:
            await session.close()
        return True

    async def _send_on(
        self, dest: Destination[Job], session: Session, slot: SourceSlot | None
    ) -> None:
        limit = dest.limits.messages_per_connection
        idle = self.config.worker.idle_timeout
        while session.messages_sent < limit and session.usable and not self._stopping:
            if not dest.queue:
                # keep the connection a moment for the next claimed batch
                dest.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dest.arrived.wait(), idle)
                if not dest.queue or self._stopping:
                    return
            job = dest.queue.popleft()
            delay = dest.rate_delay(self.clock(), slot)
            if delay:
                await asyncio.sleep(delay)
            # after the rate limit's wait, not before it: started while
            # connections still wait for their slots, the work ahead would
            # bunch up on the loop and make those slots late together
            self._prepare_ahead(dest)
            try:
                await self._deliver(dest, session, job)
            except Exception as exc:
                self._loop_failed("connection", exc)
                self._internal(job, exc)
                # the session's state after an unexpected error is unknown:
                # end it; the rest of the queue goes on a new connection
                return
            if dest.throttled(self.clock()):
                self._defer_queue(dest, Reason.THROTTLED, "destination is throttled")
                return

    def _prepare_ahead(self, dest: Destination[Job]) -> None:
        """Start composing and signing the destination's next send now, so
        that its connection does not wait for the CPU after each reply: at
        a round trip of tens of milliseconds that wait adds up, and the
        signing threads can work while the loop waits for the wire."""
        if not dest.queue or dest.queue[0].prepared is not None:
            return
        upcoming = dest.queue[0]
        task = asyncio.create_task(self.preparer.prepare(upcoming.send, now=self.clock()))
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)
        # a send released before its turn never awaits its message
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        upcoming.prepared = task

    async def _deliver(self, dest: Destination[Job], session: Session, job: Job) -> None:
        send = job.send
        started = self.clock()
        try:
            if job.prepared is not None:
                prepared = await job.prepared
            else:
                prepared = await self.preparer.prepare(send, now=started)
        except TemplateError as exc:
            # past its resource limits (or otherwise unrenderable for this
            # recipient): it would fail the same way on every try
            self._finish(job, State.FAILED, Reason.TEMPLATE, detail=f"template: {exc}")
            return
        except MailerError as exc:
            self._finish(job, State.FAILED, Reason.PROTOCOL, detail=f"cannot compose: {exc}")
            return

        def attempt(reason: Reason, code: int | None, enhanced: str | None, text: str) -> Attempt:
            return Attempt(
                started_at=started,
                finished_at=self.clock(),
                reason=reason,
                mx_host=session.host,
                address=session.address,
                tls_version=session.tls.version,
                tls_cipher=session.tls.cipher,
                code=code,
                enhanced=enhanced,
                text=text,
                tls_policy=session.policy,
            )

        try:
            reply = await session.send(
                prepared.mail_from, prepared.recipient, prepared.data, envid=prepared.envid
            )
        except SMTPReplyError as exc:
            code = exc.code or 0
            verdict = classify(code, exc.enhanced)
            record = attempt(verdict.reason, exc.code, exc.enhanced, exc.text)
            if verdict.throttle:
                dest.throttle(self.clock())
            if verdict.permanent:
                self._finish(
                    job,
                    State.BOUNCED,
                    verdict.reason,
                    attempt=record,
                    suppress=Reason.SUPPRESSED_BOUNCE if verdict.suppress else None,
                    identity=prepared.identity,
                )
            else:
                self._retry(job, verdict.reason, record, prepared.identity)
            return
        except DeliveryError as exc:
            self._retry(
                job,
                exc.reason,
                attempt(exc.reason, exc.code, exc.enhanced, exc.text),
                prepared.identity,
            )
            return
        dest.recovered()
        self.delivered += 1
        self._finish(
            job,
            State.DELIVERED,
            Reason.DELIVERED,
            attempt=attempt(Reason.DELIVERED, reply.code, reply.enhanced, reply.text),
            identity=prepared.identity,
        )

    # outcomes ----------------------------------------------------------------

    def _retry(
        self,
        job: Job,
        reason: Reason,
        record: Attempt | None,
        identity: str | None = None,
        *,
        due_at: float | None = None,
        detail: str | None = None,
    ) -> None:
        send = job.send
        now = self.clock()
        attempts = send.attempts + (1 if record else 0)
        due = due_at or next_due(attempts, send.retry_from, now, self.config.retry, self.rng)
        if due is None or expired(send.retry_from, due, self.config.retry):
            self._finish(
                job,
                State.FAILED,
                Reason.EXPIRED,
                attempt=record,
                identity=identity,
                detail=f"last reason: {reason.value}" + (f"; {detail}" if detail else ""),
            )
            return
        self._finish(
            job,
            State.DEFERRED,
            reason,
            due_at=due,
            attempt=record,
            identity=identity,
            detail=detail,
        )

    def _internal(self, job: Job, exc: BaseException) -> None:
        """``job`` met an unexpected error: deferred with reason ``internal``
        and the exception's type in the detail. The backoff grows as if an
        attempt had been made, so that a send that always fails this way
        does not spin, and ends expired at ``retry.max_age``."""
        if job.send.id not in self._in_flight:
            return  # its outcome was recorded before the error
        send = job.send
        now = self.clock()
        due = next_due(send.attempts + 1, send.retry_from, now, self.config.retry, self.rng)
        detail = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:500]
        self._retry(job, Reason.INTERNAL, None, due_at=due, detail=detail)

    def _loop_failed(self, loop: str, exc: BaseException) -> None:
        log.error("worker %s loop: unexpected %s", loop, type(exc).__name__, exc_info=exc)
        self.loop_errors += 1
        if self.metrics is not None:
            self.metrics.loop_errors.labels(loop=loop).inc()

    def _defer_queue(
        self,
        dest: Destination[Job],
        reason: Reason,
        text: str,
        *,
        attempt: bool = False,
        mx_host: str | None = None,
        tls_policy: str | None = None,
    ) -> None:
        """Every send waiting for this destination goes back to the queue:
        with an attempt when delivery was tried (connection, TLS, DNS), or
        without one when the destination is throttled."""
        now = self.clock()
        while dest.queue:
            job = dest.queue.popleft()
            if attempt:
                record = Attempt(
                    now, now, reason, mx_host=mx_host, text=text, tls_policy=tls_policy
                )
                self._retry(job, reason, record)
            else:
                self._retry(job, reason, None, due_at=dest.throttled_until)

    def _bounce_queue(self, dest: Destination[Job], reason: Reason, text: str) -> None:
        now = self.clock()
        while dest.queue:
            job = dest.queue.popleft()
            self._finish(job, State.BOUNCED, reason, attempt=Attempt(now, now, reason, text=text))

    def _finish(
        self,
        job: Job,
        state: State,
        reason: Reason,
        *,
        due_at: float | None = None,
        attempt: Attempt | None = None,
        suppress: Reason | None = None,
        identity: str | None = None,
        detail: str | None = None,
    ) -> None:
        self._in_flight.pop(job.send.id, None)
        if self.metrics is not None:
            self.metrics.finished(job.send, state, reason, attempt, now=self.clock())
        send = job.send
        if state is State.DEFERRED and due_at is not None:
            # an operator watches deferrals: each says when it comes back
            when = datetime.fromtimestamp(due_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            fields = send_fields(send.id, send.domain, state.value, reason.value, due_at)
            log.info(
                "deferred %s to %s (%s), next attempt %s UTC",
                send.id, send.domain, reason.value, when, extra=fields,
            )  # fmt: skip
        elif log.isEnabledFor(logging.DEBUG):
            # per-delivery lines: only asked for with -v
            fields = send_fields(send.id, send.domain, state.value, reason.value)
            log.debug(
                "%s %s to %s (%s)", state.value, send.id, send.domain, reason.value, extra=fields
            )
        self._results.append(
            Outcome(
                send_id=job.send.id,
                state=state,
                reason=reason,
                due_at=due_at,
                attempt=attempt,
                suppress=suppress,
                identity=identity,
                detail=detail,
            )
        )
        self._wake.set()

    async def _flush(self) -> None:
        """Raises StoreError with the batch kept for the next try."""
        counter = self.connector.tls_counter
        if not self._results and not (counter is not None and len(counter)):
            return
        batch, self._results = self._results, []
        # the TLS report counts of the sessions so far go in the same
        # transaction: a crash loses both, and the sends count again when
        # they are sent again
        counts = counter.drain() if counter is not None else []
        try:
            await self.store.complete(self.owner, batch, now=self.clock(), tls_counts=counts)
        except BaseException:
            # whatever went wrong, the outcomes are kept for the next try
            self._results = batch + self._results
            if counter is not None:
                counter.restore(counts)
            raise

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(_backoff(failures, FLUSH_INTERVAL, ceiling=5.0))
            try:
                await self._flush()
            except MailerError as exc:
                # a busy or briefly unreachable store: the outcomes stay in
                # memory (their sends stay leased) and go with the next try
                failures += 1
                log.warning("recording outcomes failed, will retry: %s", exc)
            except Exception as exc:
                failures += 1
                self._loop_failed("flush", exc)
            else:
                failures = 0

    async def prune(self) -> int:
        """Remove finished sends older than ``retention.days`` (with their
        attempts and events), webhook delivery log entries as old, and
        idempotency records past ``api.idempotency_ttl``, in batches of
        ``retention.batch``, one transaction each, until none is left.
        Returns how many sends went. Raises StoreError."""
        cfg = self.config.retention
        now = self.clock()
        before = now - cfg.days * 86400
        expired = now - self.config.api.idempotency_ttl
        total = Pruned(0, 0, 0)
        while not self._stopping:
            done = await self.store.prune(
                before=before, limit=cfg.batch, idempotency_before=expired
            )
            total += done
            if not done.full(cfg.batch):
                break
        if total.sends:
            log.info("pruned %d finished send(s) older than %g days", total.sends, cfg.days)
        if total.deliveries or total.idempotency:
            log.info(
                "pruned %d webhook delivery log entries and %d expired idempotency records",
                total.deliveries,
                total.idempotency,
            )
        return total.sends

    async def _prune_loop(self) -> None:
        while True:
            try:
                await self.prune()
            except MailerError as exc:
                # a busy store: the old sends wait for the next round
                log.warning("pruning finished sends failed, will retry: %s", exc)
            await asyncio.sleep(self.config.retention.interval)

    async def _renew_loop(self) -> None:
        """Sends wait in destination queues (rate limits, slow servers,
        connection limits) for longer than a lease may last; renewing the
        leases of everything still in flight keeps another worker from
        taking them while this one lives."""
        lease = self.config.worker.lease_seconds
        failures = 0
        while True:
            # after a failure, try again well before the leases run out
            await asyncio.sleep(
                lease / 3 if not failures else _backoff(failures, LOOP_BACKOFF, ceiling=lease / 6)
            )
            if not self._in_flight:
                failures = 0
                continue
            try:
                await self.store.renew(
                    self.owner, list(self._in_flight), lease_seconds=lease, now=self.clock()
                )
            except Exception as exc:
                failures += 1
                self._loop_failed("renew", exc)
            else:
                failures = 0


def _backoff(failures: int, base: float, *, ceiling: float) -> float:
    """The wait before a loop's next try: ``base`` while all is well,
    doubling with each failure in a row, never above ``ceiling``."""
    if failures <= 0:
        return base
    return float(min(base * 2.0 ** min(failures, 30), max(ceiling, base)))
