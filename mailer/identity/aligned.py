"""Which customer domains may keep their own ``From`` through DKIM
alignment: those for which we hold a key whose record DNS publishes.

Decided per domain when a message first needs it, and asked again after a
while, so that a DNS failure at start-up does not stop a worker, and a record
published (or withdrawn) later is seen without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mailer.errors import MailerError
from mailer.message.keys import SigningKey, TxtResolver, check_published

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Known:
    aligned: bool
    expires: float


class AlignedDomains:
    """``await aligned(domain)``: True when one of our keys for ``domain``
    is published as DNS has it now.

    An answer is kept ``refresh`` seconds. When DNS gives no answer, the
    last known answer stands (not aligned when there is none) and DNS is
    asked again after ``retry`` seconds.
    """

    def __init__(
        self,
        resolver: TxtResolver,
        keys: Mapping[str, Sequence[SigningKey]],
        *,
        refresh: float = 3600.0,
        retry: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._keys = {d.lower().rstrip("."): list(k) for d, k in keys.items()}
        self._refresh = refresh
        self._retry = retry
        self._clock = clock
        self._known: dict[str, _Known] = {}

    async def aligned(self, domain: str) -> bool:
        """Raises nothing: DNS trouble keeps the last answer."""
        domain = domain.lower().rstrip(".")
        keys = self._keys.get(domain)
        if not keys:
            return False
        now = self._clock()
        known = self._known.get(domain)
        if known is not None and known.expires > now:
            return known.aligned
        try:
            checks = [await check_published(self._resolver, key) for key in keys]
        except MailerError as exc:
            log.warning("DKIM alignment of %s undecided, asking again later: %s", domain, exc)
            previous = known.aligned if known is not None else False
            self._known[domain] = _Known(previous, now + self._retry)
            return previous
        aligned = any(check.ok for check in checks)
        self._known[domain] = _Known(aligned, now + self._refresh)
        return aligned
