"""The DKIM check: for each selector we hold a key for (or the one asked
for), is its public key published and is it ours.

DNS and the key store are read by :func:`find_dkim`; :func:`judge_dkim`
is pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailer.checkdomain.report import Check, Fix, RecordFix, Status, worst
from mailer.dns import Resolver
from mailer.errors import KeyMaterialError
from mailer.message.keys import (
    KeyCheck,
    KeyStore,
    SigningKey,
    check_published,
    check_selector,
    dns_name,
    dns_record_value,
)

__all__ = ["DKIMFindings", "SelectorFinding", "find_dkim", "judge_dkim"]


@dataclass(frozen=True)
class SelectorFinding:
    """One selector: ``key`` is None when we hold no key for it."""

    selector: str
    key: SigningKey | None
    published: KeyCheck | None

    @property
    def matches(self) -> bool:
        return self.published is not None and self.published.ok


@dataclass(frozen=True)
class DKIMFindings:
    domain: str
    selectors: tuple[SelectorFinding, ...]
    key_error: str | None = None
    asked: bool = False  # a selector was named on the command line

    @property
    def aligned(self) -> bool:
        """A key of ours for the domain whose published record matches:
        our signature (d=domain) aligns with a From at the domain."""
        return any(s.matches for s in self.selectors)


async def find_dkim(
    resolver: Resolver, store: KeyStore, domain: str, selectors: Sequence[str] = ()
) -> DKIMFindings:
    """Load the domain's keys and compare each with what DNS publishes.

    Raises DNSTemporaryError when a key record lookup gets no answer,
    ValidationError("selector") for a malformed selector.
    """
    wanted = [check_selector(s) for s in selectors]
    try:
        keys = store.load(domain)
    except KeyMaterialError as exc:
        return DKIMFindings(domain, (), str(exc), bool(wanted))
    by_selector = {k.selector: k for k in keys}
    found: list[SelectorFinding] = []
    for selector in wanted or list(by_selector):
        key = by_selector.get(selector)
        published = None if key is None else await check_published(resolver, key)
        found.append(SelectorFinding(selector, key, published))
    return DKIMFindings(domain, tuple(found), None, bool(wanted))


def judge_dkim(findings: DKIMFindings) -> Check:
    """The DKIM line of the report, with the record to publish for every
    selector that does not match."""
    domain = findings.domain
    rows = [_row(domain, s) for s in findings.selectors]
    details = {"selectors": rows, "key_error": findings.key_error}
    if findings.key_error is not None:
        text = f"the key store cannot be read: {findings.key_error}"
        fix = Fix("dkim", Status.ACTION_NEEDED, text)
        return Check("dkim", Status.ACTION_NEEDED, text, details, (fix,))
    if not findings.selectors:
        summary = f"no DKIM key for {domain}: surveys are signed with our own domain's key only"
        text = f"run `mailer keys generate {domain}` and publish the record it prints"
        return Check("dkim", Status.WARNING, summary, details, (Fix("dkim", Status.WARNING, text),))
    statuses: list[Status] = []
    notes: list[str] = []
    fixes: list[Fix] = []
    for finding in findings.selectors:
        name = dns_name(domain, finding.selector)
        if finding.key is None:
            # Like a domain without any key: we sign with our own key then.
            statuses.append(Status.WARNING)
            notes.append(f"{finding.selector}: we hold no key for it")
            text = (
                f"run `mailer keys generate {domain} --selector {finding.selector}`"
                " and publish the record it prints"
            )
            fixes.append(Fix("dkim", Status.WARNING, text))
            continue
        check = finding.published
        assert check is not None  # set whenever there is a key
        if check.ok:
            statuses.append(Status.OK)
            notes.append(f"{finding.selector}: published and matches our key")
            continue
        statuses.append(Status.ACTION_NEEDED)
        notes.append(f"{finding.selector}: {_problem_text(check)}")
        verb = "publish" if check.problem == "missing" else "replace the record at " + name + " by"
        text = f"{verb} the public key of selector {finding.selector}"
        record = RecordFix(name, dns_record_value(finding.key))
        fixes.append(Fix("dkim", Status.ACTION_NEEDED, text, record))
    return Check("dkim", worst(statuses), "; ".join(notes), details, tuple(fixes))


def _problem_text(check: KeyCheck) -> str:
    if check.problem == "different-key":
        return "the published key is a different key than ours"
    if check.problem == "missing":
        return f"not published ({check.detail})"
    return f"{check.problem}: {check.detail}"


def _row(domain: str, finding: SelectorFinding) -> dict[str, object]:
    key, check = finding.key, finding.published
    return {
        "selector": finding.selector,
        "name": dns_name(domain, finding.selector),
        "have_key": key is not None,
        "algorithm": None if key is None else key.algorithm,
        "bits": None if key is None else key.bits,
        "ok": finding.matches,
        "problem": None if check is None else check.problem,
        "detail": None if check is None else check.detail,
        "published": None if check is None else check.published,
        "expected": None if key is None else dns_record_value(key),
    }
