"""Which TLS policy a connection is made under: the configured level for
the destination (``encrypt`` / ``verify``) combined with the policy the
receiving domain publishes (MTA-STS), where configuration can only
tighten a published policy, never loosen it; then, per MX host, DANE
(RFC 7672) over both (pure)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from mailer.config import TLSPolicy
from mailer.delivery.tls.dane import TLSASet
from mailer.delivery.tls.policy import Mode, STSPolicy
from mailer.delivery.tls.results import ResultType
from mailer.delivery.tls.tlsa import DaneLookup, DaneStatus

__all__ = ["Applied", "AppliedPolicy", "apply_dane", "apply_policy"]


class Applied(StrEnum):
    """The names attempts, ``queue show``, the API and /metrics use."""

    ENCRYPT = "encrypt"
    VERIFY = "verify"
    MTA_STS_ENFORCE = "mta-sts enforce"
    MTA_STS_TESTING = "mta-sts testing"
    DANE = "dane"


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
    # DANE: the usable TLSA records the certificate must match
    tlsa: TLSASet | None = None
    # why DANE did not apply to a host where it was looked for
    dane: DaneStatus | None = None
    # a secure TLSA RRset with no usable record: not matched against, but
    # the policy TLS reports name (type ``tlsa``, ``tlsa-invalid``)
    unusable: TLSASet | None = None
    # the RFC 8460 result type of a session under this policy that was
    # not authenticated as published (usable by TLS reporting)
    result: ResultType | None = None
    published: STSPolicy | None = None

    @property
    def enforced(self) -> bool:
        return self.mx is not None

    @property
    def label(self) -> str:
        """What an attempt records: the name, and what DANE found when it
        was looked for and did not apply (``encrypt (dane: no AD bit)``)."""
        if self.dane is None:
            return self.name.value
        return f"{self.name.value} (dane: {self.dane.value})"


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


def apply_dane(base: AppliedPolicy, found: DaneLookup) -> AppliedPolicy:
    """The policy for one MX host, given what its TLSA lookup found.

    Usable records win over MTA-STS and the configured level: the
    certificate is checked against them and nothing else (DANE-EE ignores
    names and dates). Records that are all unusable leave TLS without
    DANE authentication (RFC 7672 §2.2), and without the AD bit DANE is
    not applied; both are said in the label. No records: ``base``.
    """
    if found.status is DaneStatus.USABLE and found.tlsa is not None:
        return AppliedPolicy(Applied.DANE, TLSPolicy.ENCRYPT, tlsa=found.tlsa)
    if found.status is DaneStatus.UNUSABLE:
        return replace(base, dane=found.status, result=ResultType.TLSA_INVALID, unusable=found.tlsa)
    if found.status is DaneStatus.INSECURE:
        return replace(base, dane=found.status)
    return base
