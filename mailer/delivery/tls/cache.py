"""The worker's view of the MTA-STS policy cache: the store holds the
policies every worker shares (with their id and max_age); this keeps the
last answer per domain in memory for a short recheck interval, so that
opening a connection costs a dictionary lookup, not a store read or a DNS
question, and a message never costs a fetch or a parse."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mailer.delivery.tls.policy import Mode, STSPolicy
from mailer.store.models import CachedPolicy

__all__ = ["Known", "MemoryCache", "from_cached", "to_cached"]


@dataclass(frozen=True)
class Known:
    """What this worker last learnt of a domain: its policy (None: none
    applies), the TXT id it was seen with, until when the policy is valid,
    and until when the answer is reused without asking DNS again."""

    policy: STSPolicy | None
    policy_id: str | None
    expires_at: float
    checked_until: float

    def policy_at(self, now: float) -> STSPolicy | None:
        return self.policy if self.policy is not None and now < self.expires_at else None


def from_cached(row: CachedPolicy) -> STSPolicy:
    return STSPolicy(Mode(row.mode), row.mx, row.max_age)


def to_cached(domain: str, policy_id: str, policy: STSPolicy, now: float) -> CachedPolicy:
    return CachedPolicy(
        domain=domain,
        policy_id=policy_id,
        mode=policy.mode.value,
        mx=policy.mx,
        max_age=policy.max_age,
        fetched_at=now,
        expires_at=now + policy.max_age,
    )


class MemoryCache:
    """LRU-bounded; one per worker (owned by its policy source, never a
    module global)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = max(size, 1)
        self._known: OrderedDict[str, Known] = OrderedDict()

    def fresh(self, domain: str, now: float) -> Known | None:
        known = self._known.get(domain)
        if known is None or now >= known.checked_until:
            return None
        self._known.move_to_end(domain)
        return known

    def last(self, domain: str) -> Known | None:
        return self._known.get(domain)

    def remember(self, domain: str, known: Known) -> None:
        self._known[domain] = known
        self._known.move_to_end(domain)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
