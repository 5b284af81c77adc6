"""A worker's TLS report counts (RFC 8460) between two outcome batches:
one per session, kept in memory by the connector and handed to the store
with the next outcome batch (mailer.store.tlsrpt). Counting is a
dictionary increment; the store sees one upsert per distinct line."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from mailer.delivery.tls.applied import AppliedPolicy
from mailer.delivery.tls.dane import presentation
from mailer.delivery.tls.policy import STSPolicy
from mailer.delivery.tls.results import DANE_RESULTS, PolicyType, ResultType, policy_type
from mailer.store.tlsrpt import TLSCount

__all__ = ["TLSCounter", "policy_lines", "utc_day"]


def utc_day(when: float) -> str:
    """The report day (UTC) of a moment: ``YYYY-MM-DD``."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d")


def policy_lines(policy: STSPolicy) -> tuple[str, ...]:
    """The policy file as the report's ``policy-string`` (RFC 8460 §4.4:
    the lines of the policy, in a canonical order)."""
    return (
        "version: STSv1",
        f"mode: {policy.mode.value}",
        *(f"mx: {mx}" for mx in policy.mx),
        f"max_age: {policy.max_age}",
    )


class TLSCounter:
    """Counts of one worker's sessions, keyed by everything a report line
    says. Not shared between tasks of different loops (one engine's)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[TLSCount, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def _base(
        self, domain: str, applied: AppliedPolicy, result: ResultType | None = None
    ) -> TLSCount | None:
        day = utc_day(self._clock())
        if applied.tlsa is not None:
            # DANE applied (RFC 8460 §4.4: the TLSA RRset as the policy)
            records = presentation(applied.tlsa)
            return TLSCount(day, domain, PolicyType.TLSA.value, records)
        if result in DANE_RESULTS:
            # the DANE policy failed before it could apply: an RRset with no
            # usable record (tlsa-invalid, named by its records) or a TLSA
            # lookup that failed (dnssec-invalid, no records to name)
            unusable = applied.unusable
            records = presentation(unusable) if unusable is not None else ()
            return TLSCount(day, domain, PolicyType.TLSA.value, records)
        published = applied.published
        if published is not None:
            # the domain's MTA-STS policy, also where configuration checks
            # more strictly than it asks (``verify`` under ``testing``)
            lines = policy_lines(published)
            return TLSCount(day, domain, PolicyType.STS.value, lines, published.mx)
        kind = policy_type(applied.name.value)
        if kind is None:
            return None
        return TLSCount(day, domain, kind.value)

    def _add(self, key: TLSCount) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1

    def success(self, domain: str, applied: AppliedPolicy) -> None:
        """A session that met the policy."""
        base = self._base(domain, applied)
        if base is not None:
            self._add(base)

    def failure(
        self,
        domain: str,
        applied: AppliedPolicy,
        result: ResultType,
        *,
        sending_ip: str,
        receiving_mx: str,
        receiving_ip: str | None,
        reason_code: str,
    ) -> None:
        """A session that failed the policy (under ``testing``: that would
        have failed it)."""
        base = self._base(domain, applied, result)
        if base is None:
            return
        self._add(
            TLSCount(
                base.day,
                base.domain,
                base.policy_type,
                base.policy_string,
                base.mx_host,
                result_type=result.value,
                sending_ip=sending_ip,
                receiving_mx=receiving_mx,
                receiving_ip=receiving_ip or "",
                reason_code=reason_code,
            )
        )

    def drain(self) -> list[TLSCount]:
        """The counts so far, which this counter then forgets."""
        counts, self._counts = self._counts, {}
        return [_with_count(key, n) for key, n in counts.items()]

    def restore(self, counts: Iterable[TLSCount]) -> None:
        """Take back drained counts whose write failed (they go with the
        next batch)."""
        for count in counts:
            key = _with_count(count, 1)
            self._counts[key] = self._counts.get(key, 0) + count.count


def _with_count(count: TLSCount, n: int) -> TLSCount:
    return TLSCount(
        count.day,
        count.domain,
        count.policy_type,
        count.policy_string,
        count.mx_host,
        count.result_type,
        count.sending_ip,
        count.receiving_mx,
        count.receiving_ip,
        count.reason_code,
        n,
    )
