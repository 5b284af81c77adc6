"""The DMARC check (RFC 7489): the policy at ``_dmarc.<domain>`` or, when
there is none, at the organisational domain (found with the public suffix
list of the ``publicsuffixlist`` package, which ships the list offline),
and whether our mail aligns with it.

Our mail as the customer is SPF-aligned when our IP passes SPF for the
domain (the envelope sender is then the customer's own address) and
DKIM-aligned when we hold a key for the domain whose published record
matches (we sign with ``d=<domain>``). Parsing and judging are pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from mailer.checkdomain.report import Check, Fix, RecordFix, Status
from mailer.dns import Resolver
from mailer.errors import DNSPermanentError, ValidationError
from mailer.message.keys import parse_dkim_record

__all__ = [
    "DMARCFindings",
    "DMARCRecord",
    "find_dmarc",
    "is_dmarc_record",
    "judge_dmarc",
    "organisational_domain",
    "parse_dmarc",
]

POLICIES = ("none", "quarantine", "reject")
_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(?:;|$)", re.IGNORECASE)


@dataclass(frozen=True)
class DMARCRecord:
    text: str
    policy: str
    subdomain_policy: str | None
    pct: int
    adkim: str
    aspf: str
    rua: tuple[str, ...]


def is_dmarc_record(text: str) -> bool:
    """Whether a TXT string is a DMARC record (starts with ``v=DMARC1``)."""
    return _VERSION.match(text) is not None


def parse_dmarc(text: str) -> DMARCRecord:
    """Parse a DMARC record (RFC 7489 §6.3).

    Raises ValidationError("dmarc", ...) for bad tag-list syntax, ``v=`` not
    first, a missing or unknown ``p=``, or a bad ``sp``/``adkim``/``aspf``/``pct``.
    """
    try:
        # The same tag=value list grammar as DKIM key records (RFC 6376 §3.2).
        tags = parse_dkim_record(text)
    except ValidationError as exc:
        raise ValidationError("dmarc", exc.reason) from exc
    if next(iter(tags)) != "v" or tags["v"].upper() != "DMARC1":
        raise ValidationError("dmarc", "v=DMARC1 must come first")
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        what = f"p={tags['p']}" if "p" in tags else "no p= tag"
        raise ValidationError("dmarc", f"{what}: p must be one of {', '.join(POLICIES)}")
    subdomain = tags.get("sp")
    if subdomain is not None and subdomain.lower() not in POLICIES:
        raise ValidationError("dmarc", f"sp={subdomain}: must be one of {', '.join(POLICIES)}")
    modes = {}
    for tag in ("adkim", "aspf"):
        mode = tags.get(tag, "r").lower()
        if mode not in ("r", "s"):
            raise ValidationError("dmarc", f"{tag}={tags[tag]}: must be r or s")
        modes[tag] = mode
    pct_text = tags.get("pct", "100")
    if not pct_text.isdigit() or int(pct_text) > 100:
        raise ValidationError("dmarc", f"pct={pct_text}: must be 0-100")
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    return DMARCRecord(
        text,
        policy,
        None if subdomain is None else subdomain.lower(),
        int(pct_text),
        modes["adkim"],
        modes["aspf"],
        rua,
    )


def organisational_domain(psl: PublicSuffixList, domain: str) -> str:
    """The registered domain of ``domain`` (RFC 7489 §3.2): one label below
    its public suffix; ``domain`` itself when it is a public suffix."""
    found = psl.privatesuffix(domain.lower())
    return found if isinstance(found, str) else domain.lower()


@dataclass(frozen=True)
class DMARCFindings:
    """``found_at`` is the ``_dmarc`` name the policy came from (None when
    none applies); ``texts`` the DMARC strings published there."""

    domain: str
    organisational_domain: str
    found_at: str | None
    texts: tuple[str, ...]
    record: DMARCRecord | None
    error: str | None

    @property
    def applied_policy(self) -> str | None:
        """``p``, or ``sp`` when the record is the organisational domain's
        and the domain is below it."""
        if self.record is None:
            return None
        inherited = self.found_at != f"_dmarc.{self.domain}"
        if inherited and self.record.subdomain_policy is not None:
            return self.record.subdomain_policy
        return self.record.policy


async def _dmarc_texts(resolver: Resolver, name: str) -> tuple[str, ...]:
    try:
        answer = await resolver.txt(name)
    except DNSPermanentError:
        return ()
    return tuple(t for t in answer.records if is_dmarc_record(t))


async def find_dmarc(resolver: Resolver, psl: PublicSuffixList, domain: str) -> DMARCFindings:
    """Policy discovery (RFC 7489 §6.6.3). Raises DNSTemporaryError when a
    lookup gets no answer."""
    org = organisational_domain(psl, domain)
    names = [f"_dmarc.{domain}"] + ([f"_dmarc.{org}"] if org != domain else [])
    for name in names:
        texts = await _dmarc_texts(resolver, name)
        if not texts:
            continue
        if len(texts) > 1:
            error = f"{name} publishes {len(texts)} DMARC records; receivers ignore them"
            return DMARCFindings(domain, org, name, texts, None, error)
        try:
            record = parse_dmarc(texts[0])
        except ValidationError as exc:
            return DMARCFindings(domain, org, name, texts, None, f"{name}: {exc.reason}")
        return DMARCFindings(domain, org, name, texts, record, None)
    return DMARCFindings(domain, org, None, (), None, None)


def judge_dmarc(findings: DMARCFindings, *, spf_aligned: bool, dkim_aligned: bool) -> Check:
    """The DMARC line: OK when a valid policy exists and our mail aligns
    with it; a warning when there is no usable policy or our mail cannot
    align (surveys then go out from the neutral sender, which is not
    subject to the domain's policy)."""
    record = findings.record
    via = [name for name, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok]
    details = {
        "name": f"_dmarc.{findings.domain}",
        "organisational_domain": findings.organisational_domain,
        "found_at": findings.found_at,
        "records": list(findings.texts),
        "error": findings.error,
        "policy": None if record is None else record.policy,
        "subdomain_policy": None if record is None else record.subdomain_policy,
        "applied_policy": findings.applied_policy,
        "pct": None if record is None else record.pct,
        "adkim": None if record is None else record.adkim,
        "aspf": None if record is None else record.aspf,
        "rua": [] if record is None else list(record.rua),
        "spf_aligned": spf_aligned,
        "dkim_aligned": dkim_aligned,
    }
    where = f"_dmarc.{findings.domain}"
    if record is None:
        if findings.error is not None:
            summary = f"unusable DMARC record: {findings.error}"
            text = f"publish one valid DMARC record at {findings.found_at}"
            fix = Fix("dmarc", Status.WARNING, text, RecordFix(findings.found_at or where, _START))
            return Check("dmarc", Status.WARNING, summary, details, (fix,))
        checked = (
            where
            if findings.organisational_domain == findings.domain
            else (f"{where} nor _dmarc.{findings.organisational_domain}")
        )
        summary = f"no DMARC record at {checked}"
        text = "publish a DMARC policy (p=none only monitors; Gmail and Yahoo expect one)"
        fix = Fix("dmarc", Status.WARNING, text, RecordFix(where, _START))
        return Check("dmarc", Status.WARNING, summary, details, (fix,))
    policy = f"p={findings.applied_policy} at {findings.found_at}"
    if not via:
        summary = (
            f"{policy}; our mail cannot align (no SPF pass, no matching DKIM key),"
            " so surveys use the neutral sender"
        )
        return Check("dmarc", Status.WARNING, summary, details)
    summary = f"{policy}; our mail aligns via {' and '.join(via)}"
    return Check("dmarc", Status.OK, summary, details)


_START = "v=DMARC1; p=none"
