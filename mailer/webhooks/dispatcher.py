"""Delivery of the event feed to webhook endpoints, in the worker process.

The dispatcher leases endpoints that are due and serves each in a task of
its own: fix the next batch in the store, check where the URL points
(every time: DNS can change), POST it signed to the checked address,
record the reply. A 2xx moves the cursor and the next batch follows at
once; a 410 disables the endpoint; anything else keeps the same batch
(and webhook-id) for a later try, after ``Retry-After`` or an exponential
backoff with jitter, until the endpoint has failed for ``max_age`` and is
disabled. A worker that dies leaves its endpoints to others when the lease
ends; the batch in flight is then sent again, with the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import time
from collections.abc import Callable

from mailer.config import Config
from mailer.dns import Resolver
from mailer.errors import DNSError, MailerError, ValidationError, WebhookFailed
from mailer.store.base import Store
from mailer.store.webhooks import Batch, Endpoint, Result, disabled_reason_name
from mailer.webhooks import policy, signing
from mailer.webhooks.guard import checked_address
from mailer.webhooks.metrics import WebhookMetrics
from mailer.webhooks.payload import build_batch
from mailer.webhooks.transport import PinnedClient, ssl_context

log = logging.getLogger(__name__)


class Dispatcher:
    """``run()`` until stopped (or, with ``drain``, until no endpoint has
    anything due)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        resolver: Resolver,
        *,
        owner: str,
        metrics: WebhookMetrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.webhooks
        self.store = store
        self.resolver = resolver
        self.owner = owner
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.allowed = policy.allow_networks(self.cfg.allow)
        self._context = ssl_context(self.cfg.cafile)
        self._clients: dict[str, PinnedClient] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._wake = asyncio.Event()
        self.delivered = 0  # events acknowledged with a 2xx

    def stop(self) -> None:
        """Lease no more endpoints; requests in progress finish."""
        self._stopping = True
        self._wake.set()

    async def run(self, *, drain: bool = False) -> None:
        try:
            while not self._stopping:
                capacity = self.cfg.concurrency - len(self._tasks)
                claimed: list[Endpoint] = []
                if capacity > 0:
                    claimed = await self.store.webhooks.claim(
                        self.owner, capacity, lease_seconds=self.cfg.lease_seconds, now=self.clock()
                    )
                for endpoint in claimed:
                    task = asyncio.create_task(self._serve(endpoint))
                    self._tasks[endpoint.id] = task
                    task.add_done_callback(functools.partial(self._done, endpoint.id))
                if claimed:
                    continue
                if drain and not self._tasks:
                    return
                self._wake.clear()
                # spread, so that workers polling one store do not move in step
                # (the first to look would always win the endpoint)
                pause = self.cfg.poll_interval * self.rng.uniform(0.5, 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            self._stopping = True
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            for client in self._clients.values():
                await client.close()
            self._clients.clear()

    def _done(self, endpoint_id: str, _: asyncio.Task[None]) -> None:
        task = self._tasks.pop(endpoint_id, None)
        self._wake.set()
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("webhook endpoint %s: %s", endpoint_id, task.exception())

    async def _serve(self, endpoint: Endpoint) -> None:
        """Send batches while they are acknowledged; then give the endpoint
        back, due when its next try is."""
        due = self.clock() + self.cfg.poll_interval
        try:
            while not self._stopping:
                batch = await self.store.webhooks.form_batch(
                    self.owner,
                    endpoint.id,
                    limit=self.cfg.batch_size,
                    build=build_batch,
                    now=self.clock(),
                )
                if batch is None:
                    # caught up: look again after a poll interval
                    due = self.clock() + self.cfg.poll_interval
                    break
                result = await self._attempt(endpoint, batch)
                held = await self.store.webhooks.record(
                    self.owner, result, lease_seconds=self.cfg.lease_seconds, now=self.clock()
                )
                if not held:
                    return
                self._count(result)
                if result.action == "retry":
                    assert result.next_attempt_at is not None
                    due = result.next_attempt_at
                    break
                if result.action == "disable":
                    return
                endpoint = dataclasses.replace(endpoint, failures=0, failing_since=None)
            else:
                due = self.clock()  # stopping: another worker may go on now
        except MailerError as exc:
            log.warning("webhook endpoint %s: %s", endpoint.id, exc)
            due = self.clock() + self.cfg.poll_interval
        await self.store.webhooks.release(self.owner, endpoint.id, due=due)

    async def _attempt(self, endpoint: Endpoint, batch: Batch) -> Result:
        """Send ``batch`` once and judge the reply."""
        now = self.clock()
        try:
            # the rules may have tightened since the URL was registered
            target = policy.parse_url(endpoint.url, allow_insecure=self.cfg.allow_insecure)
            address = await checked_address(self.resolver, target, self.allowed)
        except ValidationError as exc:
            if self.metrics is not None:
                self.metrics.refused.inc()
            return self._failed(endpoint, batch, None, 0.0, "", f"refused: {exc.reason}", None)
        except DNSError as exc:
            return self._failed(endpoint, batch, None, 0.0, "", f"dns: {exc}", None)
        client = await self._client(endpoint.id, str(address))
        stamp = int(now)
        headers = signing.headers(endpoint.signing_secrets(now), batch.id, stamp, batch.body)
        try:
            reply = await client.post(endpoint.url, headers, batch.body)
        except WebhookFailed as exc:
            return self._failed(endpoint, batch, None, self.clock() - now, "", str(exc), None)
        verdict = policy.verdict(reply.status)
        if verdict is policy.Verdict.ADVANCE:
            return Result(batch, "advance", reply.status, reply.latency, reply.excerpt)
        if verdict is policy.Verdict.DISABLE:
            return Result(
                batch,
                "disable",
                reply.status,
                reply.latency,
                reply.excerpt,
                disabled_reason=f"gone: the receiver answered {reply.status}",
            )
        return self._failed(
            endpoint,
            batch,
            reply.status,
            reply.latency,
            reply.excerpt,
            f"HTTP {reply.status}",
            reply.retry_after,
        )

    def _failed(
        self,
        endpoint: Endpoint,
        batch: Batch,
        status: int | None,
        latency: float,
        excerpt: str,
        error: str,
        retry_after: str | None,
    ) -> Result:
        """A retry, or past ``max_age`` of failing, the end of the endpoint."""
        now = self.clock()
        failing_since = endpoint.failing_since if endpoint.failing_since is not None else now
        if now - failing_since >= self.cfg.max_age:
            return Result(
                batch,
                "disable",
                status,
                latency,
                excerpt,
                error=error,
                disabled_reason=(
                    f"expired: failing for {int(now - failing_since)} s (last: {error})"
                ),
            )
        # honoured as asked, up to the endpoint's deadline (below)
        wait = policy.retry_after(retry_after, now=now, cap=self.cfg.max_age)
        if wait is None:
            wait = policy.backoff(
                endpoint.failures + 1,
                base=self.cfg.retry_base,
                max_delay=self.cfg.retry_max_delay,
                jitter=self.cfg.retry_jitter,
                rng=self.rng,
            )
        # never past the deadline: the last try comes at max_age
        wait = min(wait, max(failing_since + self.cfg.max_age - now, 0.0))
        return Result(
            batch, "retry", status, latency, excerpt, error=error, next_attempt_at=now + wait
        )

    async def _client(self, endpoint_id: str, address: str) -> PinnedClient:
        client = self._clients.get(endpoint_id)
        if client is not None and client.address == address:
            return client
        if client is not None:
            await client.close()
        client = PinnedClient(
            address,
            self._context,
            connect_timeout=self.cfg.connect_timeout,
            read_timeout=self.cfg.read_timeout,
        )
        self._clients[endpoint_id] = client
        return client

    def _count(self, result: Result) -> None:
        if result.action == "advance":
            self.delivered += result.batch.events
        if result.action == "disable":
            log.warning(
                "webhook endpoint %s disabled: %s",
                result.batch.endpoint_id,
                result.disabled_reason,
            )
        if self.metrics is None:
            return
        status = f"{result.status // 100}xx" if result.status is not None else "none"
        outcome = {"advance": "delivered", "retry": "failed", "disable": "disabled"}
        self.metrics.requests.labels(outcome[result.action], status).inc()
        self.metrics.latency.observe(result.latency)
        if result.action == "advance":
            self.metrics.events.inc(result.batch.events)
        elif result.action == "disable":
            self.metrics.disabled.labels(disabled_reason_name(result.disabled_reason)).inc()
