"""MTA-STS for the delivery engine (RFC 8461 §5): which policy applies to
a destination now, fetched when the TXT id changes, cached in the store
for every worker, refreshed in the background before it expires, and
never downgraded by a failed fetch or a vanished TXT record.

    policy_for(domain)
      ├─ answered in memory within the recheck interval (the hot path)
      ├─ TXT _mta-sts.<domain>      (discovery)
      ├─ store: the shared cached policy, its id and expiry
      └─ on a new id or no valid cached policy: HTTPS fetch and parse
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailer.delivery.tls.cache import Known, MemoryCache, from_cached, to_cached
from mailer.delivery.tls.discovery import discover
from mailer.delivery.tls.fetch import PolicyFetcher
from mailer.delivery.tls.policy import Mode, STSPolicy, parse_policy
from mailer.dns import Resolver
from mailer.errors import PolicyError, StoreError
from mailer.store.base import Store
from mailer.store.models import CachedPolicy

__all__ = ["FetchFailure", "PolicySource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchFailure:
    """A policy that could not be fetched or parsed; kept for reporting."""

    domain: str
    field: str
    reason: str
    at: float


class PolicySource:
    """One per worker. ``recheck`` bounds how long an answer is reused
    before DNS is asked again for the TXT id (the resolver's own cache
    still holds the record for its TTL).

    ``on_failure`` is called for every failed fetch or parse (metrics).
    """

    def __init__(
        self,
        store: Store,
        resolver: Resolver,
        fetcher: PolicyFetcher,
        *,
        recheck: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[FetchFailure], None] | None = None,
    ) -> None:
        self._store = store
        self._resolver = resolver
        self._fetcher = fetcher
        self._recheck = recheck
        self._clock = clock
        self._on_failure = on_failure
        self._memory = MemoryCache()
        self._inflight: dict[str, asyncio.Task[Known]] = {}
        self.failures: list[FetchFailure] = []

    async def policy_for(self, domain: str) -> STSPolicy | None:
        """The policy that applies to mail for ``domain`` (ASCII form) now,
        None when none does. Never raises for DNS, HTTP or policy trouble
        (they leave a valid cached policy in force); raises StoreError when
        the store cannot be read."""
        now = self._clock()
        known = self._memory.fresh(domain, now)
        if known is None:
            task = self._inflight.get(domain)
            loop = asyncio.get_running_loop()
            if task is None or task.get_loop() is not loop:
                task = loop.create_task(self._learn(domain))
                self._inflight[domain] = task
                task.add_done_callback(functools.partial(self._landed, domain))
            # shield: one connection giving up must not cancel the others' answer
            known = await asyncio.shield(task)
        return known.policy_at(now)

    def _landed(self, domain: str, task: asyncio.Task[Known]) -> None:
        if self._inflight.get(domain) is task:
            del self._inflight[domain]
        if not task.cancelled():
            task.exception()  # marks it retrieved; the awaiting callers get it

    async def _learn(self, domain: str) -> Known:
        now = self._clock()
        found = await discover(self._resolver, domain)
        last = self._memory.last(domain)
        # the same id as this worker last saw, still valid: nothing to fetch
        if (
            last is not None
            and found.policy_id is not None
            and last.policy_id == found.policy_id
            and (last.policy is None or now < last.expires_at)
        ):
            return self._keep(domain, last.policy, last.policy_id, last.expires_at, now)
        cached = await self._store.sts_policy(domain)
        valid = cached if cached is not None and now < cached.expires_at else None
        if found.policy_id is None:
            # no record (or DNS failed): a cached policy stays in force
            # until its max_age; that is what stops a downgrade (§5.1)
            return self._known_from(domain, valid, now)
        if valid is not None and valid.policy_id == found.policy_id:
            return self._known_from(domain, valid, now)
        return await self._fetch(domain, found.policy_id, valid, now)

    async def _fetch(
        self, domain: str, policy_id: str, valid: CachedPolicy | None, now: float
    ) -> Known:
        try:
            policy = parse_policy(await self._fetcher.fetch(domain))
        except PolicyError as exc:
            self._failed(FetchFailure(domain, exc.field, exc.reason, now))
            return self._known_from(domain, valid, now)
        if policy.mode is Mode.NONE:
            # §5: "none" withdraws the policy
            await self._store.drop_sts_policy(domain)
            return self._keep(domain, None, policy_id, now, now)
        await self._store.put_sts_policy(to_cached(domain, policy_id, policy, now))
        return self._keep(domain, policy, policy_id, now + policy.max_age, now)

    def _known_from(self, domain: str, cached: CachedPolicy | None, now: float) -> Known:
        if cached is None:
            return self._keep(domain, None, None, now, now)
        return self._keep(domain, from_cached(cached), cached.policy_id, cached.expires_at, now)

    def _keep(
        self,
        domain: str,
        policy: STSPolicy | None,
        policy_id: str | None,
        expires_at: float,
        now: float,
    ) -> Known:
        checked_until = now + self._recheck
        if policy is not None:
            checked_until = min(checked_until, expires_at)
        known = Known(policy, policy_id, expires_at, checked_until)
        self._memory.remember(domain, known)
        return known

    def _failed(self, failure: FetchFailure) -> None:
        log.warning("mta-sts %s: %s: %s", failure.domain, failure.field, failure.reason)
        self.failures = [*self.failures[-99:], failure]
        if self._on_failure is not None:
            self._on_failure(failure)

    async def refresh_due(self, *, limit: int = 100) -> int:
        """Refetch the cached policies three quarters through their max_age
        whose domain still publishes a record (§5.1: refresh before
        expiry); drop the expired ones whose domain publishes none.
        Returns how many were refreshed. Raises StoreError."""
        now = self._clock()
        refreshed = 0
        for cached in await self._store.sts_policies_due(now=now, limit=limit):
            found = await discover(self._resolver, cached.domain)
            if found.policy_id is None:
                if found.failed is None and now >= cached.expires_at:
                    await self._store.drop_sts_policy(cached.domain)
                continue
            valid = cached if now < cached.expires_at else None
            known = await self._fetch(cached.domain, found.policy_id, valid, now)
            if known.policy is None and valid is None:
                # expired, and no new policy to be had: gone, so that it
                # does not come up as due at every round
                await self._store.drop_sts_policy(cached.domain)
            elif known.expires_at > cached.expires_at or known.policy is None:
                refreshed += 1
        return refreshed

    async def refresh_loop(self, interval: float) -> None:
        """``refresh_due`` every ``interval`` seconds until cancelled; a
        store that fails is tried again at the next round."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_due()
            except StoreError as exc:
                log.warning("refreshing MTA-STS policies failed, will retry: %s", exc)

    async def aclose(self) -> None:
        await self._fetcher.aclose()
