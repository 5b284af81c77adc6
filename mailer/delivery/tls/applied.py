"""Which TLS policy a connection is made under: the configured level for
the destination (``encrypt`` / ``verify``) combined with the policy the
receiving domain publishes (MTA-STS), where configuration can only
tighten a published policy, never loosen it (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mailer.config import TLSPolicy
from mailer.delivery.tls.policy import Mode, STSPolicy

__all__ = ["Applied", "AppliedPolicy", "apply_policy"]


class Applied(StrEnum):
    """The names attempts, ``queue show``, the API and /metrics use."""

    ENCRYPT = "encrypt"
    VERIFY = "verify"
    MTA_STS_ENFORCE = "mta-sts enforce"
    MTA_STS_TESTING = "mta-sts testing"


@dataclass(frozen=True)
class AppliedPolicy:
    """``level``: how the certificate is checked; ``mx``: the patterns an
    MX host must match to be used at all (enforce); ``report``: patterns
    and certificate checks whose failures are only counted (testing);
    ``published``: the MTA-STS policy it came from (TLS reports name it)."""

    name: Applied
    level: TLSPolicy
    mx: tuple[str, ...] | None = None
    report: tuple[str, ...] | None = None
    published: STSPolicy | None = None

    @property
    def enforced(self) -> bool:
        return self.mx is not None


def apply_policy(configured: TLSPolicy, published: STSPolicy | None) -> AppliedPolicy:
    """The policy for one destination.

    An enforce policy always wins: its verified certificates and MX list
    are stricter than either configured level. Under a testing policy,
    ``verify`` configured still verifies; otherwise mail goes as under
    ``encrypt`` and policy failures are counted for reporting.
    """
    if published is not None and published.mode is Mode.ENFORCE:
        return AppliedPolicy(
            Applied.MTA_STS_ENFORCE, TLSPolicy.VERIFY, mx=published.mx, published=published
        )
    testing = published is not None and published.mode is Mode.TESTING
    if TLSPolicy(configured) is TLSPolicy.VERIFY:
        # a testing policy stays named: TLS reports are about it
        return AppliedPolicy(
            Applied.VERIFY, TLSPolicy.VERIFY, published=published if testing else None
        )
    if testing and published is not None:
        return AppliedPolicy(
            Applied.MTA_STS_TESTING, TLSPolicy.ENCRYPT, report=published.mx, published=published
        )
    return AppliedPolicy(Applied.ENCRYPT, TLSPolicy.ENCRYPT)
