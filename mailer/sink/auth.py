"""SPF and DMARC as a receiver would judge a message the sink accepted.

SPF is evaluated for the envelope sender and the *sending node's
configured public IP* (``outbound_ip``), not for the peer address: on
loopback the peer is always 127.0.0.1, which says nothing about what a
receiver would decide. DMARC (RFC 7489) is the alignment of the From
domain with a passing DKIM ``d=`` or a passing SPF domain (relaxed or
strict as the published record asks), and the policy that record
publishes.

The verdicts are pure functions (:func:`aligned`, :func:`dmarc_verdict`);
:class:`Authenticator` does the DNS lookups.
"""

from __future__ import annotations

import email.message
from collections.abc import Sequence
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailer.dns import Resolver
from mailer.errors import DNSError, ValidationError
from mailer.identity.check_host import check_host
from mailer.message.keys import TxtResolver, parse_dkim_record
from mailer.sink.verify import DkimResult

__all__ = [
    "Authenticator",
    "DmarcPolicy",
    "DmarcVerdict",
    "SpfVerdict",
    "aligned",
    "dmarc_verdict",
    "from_domain",
    "parse_dmarc_policy",
]


@dataclass(frozen=True)
class SpfVerdict:
    """check_host() for ``domain`` (the envelope sender's) and ``ip``."""

    result: str  # RFC 7208 words: pass, fail, softfail, neutral, none, …
    domain: str
    ip: str | None
    mechanism: str | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.result == "pass"


@dataclass(frozen=True)
class DmarcPolicy:
    """A published DMARC record: where it was found and what it asks."""

    name: str
    policy: str  # none | quarantine | reject
    adkim: str  # r | s
    aspf: str


@dataclass(frozen=True)
class DmarcVerdict:
    """``result`` is pass (aligned through DKIM or SPF), fail, or none (no
    From domain to align with)."""

    result: str
    from_domain: str
    dkim_aligned: bool
    spf_aligned: bool
    policy: DmarcPolicy | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.result == "pass"


def from_domain(msg: email.message.EmailMessage) -> str:
    """The lower-cased domain of the single From mailbox, or "" when there
    is not exactly one (the header checks say why)."""
    try:
        header = msg["From"]
        addresses = list(getattr(header, "addresses", ()))
    except (ValueError, TypeError, IndexError, AttributeError):
        return ""
    if len(addresses) != 1:
        return ""
    return str(addresses[0].domain or "").lower().rstrip(".")


def aligned(psl: PublicSuffixList, one: str, other: str, mode: str) -> bool:
    """Whether two domains align (RFC 7489 §3.1): equal in strict mode
    (``s``), of one organisational domain in relaxed mode (``r``)."""
    one, other = one.lower().rstrip("."), other.lower().rstrip(".")
    if not one or not other:
        return False
    if mode == "s":
        return one == other
    return _organisational(psl, one) == _organisational(psl, other)


def _organisational(psl: PublicSuffixList, domain: str) -> str:
    found = psl.privatesuffix(domain)
    return found if isinstance(found, str) else domain


def parse_dmarc_policy(name: str, text: str) -> DmarcPolicy:
    """A ``v=DMARC1`` record's p=, adkim= and aspf= (defaults r and r).

    Raises ValidationError("dmarc") for a record that is not DMARC1 or
    whose p= is missing or unknown.
    """
    try:
        tags = parse_dkim_record(text)  # the same tag=value grammar
    except ValidationError as exc:
        raise ValidationError("dmarc", f"{name}: {exc.reason}") from exc
    if tags.get("v") != "DMARC1":
        raise ValidationError("dmarc", f"{name}: not a v=DMARC1 record")
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        raise ValidationError("dmarc", f"{name}: p={policy!r} is not none/quarantine/reject")
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcPolicy(name, policy, "s" if adkim == "s" else "r", "s" if aspf == "s" else "r")


def dmarc_verdict(
    psl: PublicSuffixList,
    author_domain: str,
    dkim: Sequence[DkimResult],
    spf: SpfVerdict,
    policy: DmarcPolicy | None,
    lookup_detail: str = "",
) -> DmarcVerdict:
    """Alignment of ``author_domain`` (From) with a passing DKIM signature's
    ``d=`` or a passing SPF domain, in the modes ``policy`` asks."""
    if not author_domain:
        return DmarcVerdict("none", "", False, False, policy, "no single From domain")
    adkim = policy.adkim if policy else "r"
    aspf = policy.aspf if policy else "r"
    by_dkim = [r.domain for r in dkim if r.ok and aligned(psl, r.domain, author_domain, adkim)]
    spf_aligned = spf.ok and aligned(psl, spf.domain, author_domain, aspf)
    parts = []
    if by_dkim:
        parts.append(f"DKIM d={by_dkim[0]} aligned")
    if spf_aligned:
        parts.append(f"SPF {spf.domain} aligned")
    if not parts:
        parts.append("neither a passing DKIM d= nor a passing SPF domain aligns with From")
    if policy is not None:
        parts.append(f"policy p={policy.policy} at {policy.name}")
    else:
        parts.append(lookup_detail or f"no DMARC record for {author_domain}")
    result = "pass" if by_dkim or spf_aligned else "fail"
    return DmarcVerdict(result, author_domain, bool(by_dkim), spf_aligned, policy, "; ".join(parts))


class Authenticator:
    """SPF and DMARC for messages, over ``resolver`` (None: no DNS, so
    SPF is temperror and no DMARC record is found) as seen from
    ``sender_ip`` (None: SPF is not evaluated)."""

    def __init__(
        self,
        resolver: Resolver | None,
        sender_ip: str | None,
        records: TxtResolver | None = None,
    ) -> None:
        self._resolver = resolver
        # DMARC policies come from ``records`` when given (a TxtRecords
        # shared with the DKIM verifier), else straight from the resolver
        self._records: TxtResolver | None = records or resolver
        self._ip = sender_ip
        # reads the list the package ships (no network); once per sink
        self._psl = PublicSuffixList()

    async def spf(self, mail_from: str) -> SpfVerdict:
        """check_host() for the envelope sender; never raises."""
        domain = mail_from.rpartition("@")[2].lower()
        if self._ip is None:
            return SpfVerdict("none", domain, None, None, "no sending IP configured")
        if self._resolver is None:
            return SpfVerdict("temperror", domain, self._ip, None, "the sink has no DNS")
        if not domain:
            return SpfVerdict("none", "", self._ip, None, "null sender: no domain to check")
        outcome = await check_host(self._resolver, self._ip, domain, mail_from, time_limit=10.0)
        return SpfVerdict(
            str(outcome.result), domain, self._ip, outcome.mechanism, outcome.explanation
        )

    async def dmarc(
        self, msg: email.message.EmailMessage, dkim: Sequence[DkimResult], spf: SpfVerdict
    ) -> DmarcVerdict:
        """The DMARC verdict; never raises (a failed lookup is in ``detail``)."""
        author = from_domain(msg)
        policy, why = (None, "") if not author else await self._policy(author)
        return dmarc_verdict(self._psl, author, dkim, spf, policy, why)

    async def _policy(self, domain: str) -> tuple[DmarcPolicy | None, str]:
        if self._records is None:
            return None, "the sink has no DNS"
        names = [f"_dmarc.{domain}"]
        organisational = _organisational(self._psl, domain)
        if organisational != domain:
            names.append(f"_dmarc.{organisational}")
        for name in names:
            try:
                answer = await self._records.txt(name)
            except DNSError as exc:
                return None, f"DMARC lookup of {name} failed: {exc}"
            records = [r for r in answer.records if r.lower().startswith("v=dmarc1")]
            if len(records) == 1:
                try:
                    return parse_dmarc_policy(name, records[0]), ""
                except ValidationError as exc:
                    return None, exc.reason
            if len(records) > 1:
                return None, f"{len(records)} DMARC records at {name}"
        return None, f"no DMARC record for {domain}"
