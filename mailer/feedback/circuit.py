"""The circuit breaker at work: judges accounts over the store's window
(mailer.feedback.breaker) and pauses those that trip.

An account is judged after every returned message that changed one of its
sends, and every ``interval`` seconds for every account with recently
finished sends (so bounces at SMTP time count too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailer.config import BreakerConfig
from mailer.errors import StoreError
from mailer.feedback.breaker import DAY, Judgement, Outcome, judge
from mailer.metrics import Metrics
from mailer.store.base import Store
from mailer.store.models import AccountPause

log = logging.getLogger(__name__)

__all__ = ["Breaker", "Standing"]


@dataclass(frozen=True, slots=True)
class Standing:
    """An account as the breaker sees it now: the judgement over its
    window, and its pause (None: never paused or released)."""

    account: str
    judgement: Judgement
    pause: AccountPause | None

    @property
    def paused(self) -> bool:
        return self.pause is not None


class Breaker:
    def __init__(
        self,
        store: Store,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = 60.0,
        on_pause: Callable[[str, Judgement], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.config = config
        self.clock = clock
        self.interval = interval
        self.on_pause = on_pause

    async def judgement(self, account: str) -> tuple[Judgement, bool]:
        """(the account's judgement now, whether it is paused already)."""
        now = self.clock()
        pause = next((p for p in await self.store.account_pauses() if p.account == account), None)
        released_at = pause.released_at if pause is not None else None
        since = now - self.config.window_days * DAY
        if released_at is not None:
            since = max(since, released_at)
        window = await self.store.account_window(
            account, since=since, limit=self.config.window_sends
        )
        outcomes = [Outcome(o.at, True, o.hard_bounce, o.complaint) for o in window]
        verdict = judge(outcomes, now=now, config=self.config, released_at=released_at)
        return verdict, pause is not None and pause.paused_at is not None

    async def standings(self, accounts: list[str] | None = None) -> list[Standing]:
        """Each of ``accounts`` (default: those with sends finished in the
        window, and those paused now) as the breaker sees it, by name. Reads
        the store, changes nothing."""
        pauses = {p.account: p for p in await self.store.account_pauses() if p.paused_at}
        if accounts is None:
            since = self.clock() - self.config.window_days * DAY
            accounts = [*await self.store.active_accounts(since=since), *pauses]
        found = []
        for account in sorted(set(accounts)):
            verdict, _ = await self.judgement(account)
            found.append(Standing(account, verdict, pauses.get(account)))
        return found

    async def check(self, account: str) -> Judgement:
        """Judge ``account`` and pause it when it trips (once)."""
        verdict, paused = await self.judgement(account)
        if verdict.trip and not paused:
            held = await self.store.pause_account(account, now=self.clock(), detail=verdict.why)
            log.warning("account %s paused (%s): %d sends held", account, verdict.why, held)
            if self.on_pause is not None:
                self.on_pause(account, verdict)
        return verdict

    async def sweep(self) -> None:
        """Judge every account with sends finished in the window; the
        aggregate goes to ``metrics``."""
        since = self.clock() - self.config.window_days * DAY
        sends = bounces = complaints = 0
        for account in await self.store.active_accounts(since=since):
            verdict = await self.check(account)
            sends += verdict.sends
            bounces += verdict.hard_bounces
            complaints += verdict.complaints
        if self.metrics is not None:
            paused = sum(1 for p in await self.store.account_pauses() if p.paused_at is not None)
            self.metrics.set_breaker(
                sends=sends, hard_bounces=bounces, complaints=complaints, paused=paused
            )

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; a store error
        is logged and the next sweep tries again."""
        while True:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning("circuit breaker sweep: %s", exc)
            await asyncio.sleep(self.interval)
