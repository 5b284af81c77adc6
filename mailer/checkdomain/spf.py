"""The SPF check: is there exactly one valid record, how many DNS lookups
does it need, does it authorise our IPs and how, and which record to
publish instead.

The DNS side is in :mod:`mailer.checkdomain.spf_tree`; the fix records
(:func:`suggest_record`, :func:`merge_records`) and the judging
(:func:`judge_spf`) here are pure, and :func:`find_spf` gathers what they
need.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailer.checkdomain.report import Check, Fix, RecordFix, Status, worst
from mailer.checkdomain.spf_tree import (
    IPAuthorisation,
    SPFNode,
    authorisations,
    walk_domain,
    walk_record,
)
from mailer.dns import Resolver
from mailer.identity.check_host import MAX_LOOKUPS, MAX_VOID_LOOKUPS
from mailer.identity.spf_record import PermError, SPFResult, parse_record

__all__ = [
    "SPFFindings",
    "candidate_texts",
    "find_spf",
    "ip_terms",
    "judge_spf",
    "merge_records",
    "suggest_record",
]

# --- fix records (pure) ------------------------------------------------------


def _is_term(term: str, kind: str) -> bool:
    body = term.lstrip("+-~?").lower()
    return body == kind or body.startswith(kind + ":") or body.startswith(kind + "=")


def _terms_matching_ips(terms: Iterable[str], ips: Iterable[str]) -> set[str]:
    """The ip4:/ip6: terms naming exactly one of ``ips`` (single addresses)."""
    wanted = {ipaddress.ip_network(ip) for ip in ips}
    found: set[str] = set()
    for term in terms:
        body = term.lstrip("+").lower()
        if not body.startswith(("ip4:", "ip6:")):
            continue
        try:
            network = ipaddress.ip_network(body[4:], strict=False)
        except ValueError:
            continue
        if network in wanted:
            found.add(term)
    return found


def suggest_record(text: str, additions: Sequence[str], *, drop: Iterable[str] = ()) -> str:
    """``text`` with ``additions`` inserted before its ``all`` mechanism (or
    before ``redirect=``, or at the end), terms in ``drop`` and earlier
    copies of the additions removed; everything else stays as written."""
    dropped = {term.lower() for term in drop}
    added = {term.lower() for term in additions}
    terms = [
        term
        for term in text.split()[1:]
        if term.lower() not in dropped and term.lower().lstrip("+") not in added
    ]
    at = next((i for i, t in enumerate(terms) if _is_term(t, "all")), None)
    if at is None:
        at = next((i for i, t in enumerate(terms) if _is_term(t, "redirect")), len(terms))
    return " ".join(["v=spf1", *terms[:at], *additions, *terms[at:]])


# Which "all" a merged record ends with: the softest of the customer's
# endings that still says something about strangers (~all before -all),
# so the merge does not start hard-failing mail one of the records allowed.
_ALL_PREFERENCE = {"~": 0, "-": 1, "?": 2, "+": 3, "": 3}


def merge_records(texts: Sequence[str], additions: Sequence[str]) -> str | None:
    """One record from several: their terms without duplicates (records
    taken in sorted order, since DNS returns them in any order),
    ``additions``, then an ending: the softest ``all`` (see above), else
    the first ``redirect=``. None when one of them does not parse."""
    try:
        for text in texts:
            parse_record(text)
    except PermError:
        return None
    body: list[str] = []
    endings: list[str] = []
    redirect: str | None = None
    explanation: str | None = None
    for text in sorted(texts):
        for term in text.split()[1:]:
            if _is_term(term, "all"):
                endings.append(term)
            elif _is_term(term, "redirect"):
                redirect = redirect or term
            elif _is_term(term, "exp"):
                explanation = explanation or term
            elif term.lower() not in {t.lower() for t in body}:
                body.append(term)
    ending = min(endings, key=lambda t: _ALL_PREFERENCE[t[:-3]], default=redirect)
    tail = [t for t in (ending, explanation) if t]
    return suggest_record(" ".join(["v=spf1", *body, *tail]), additions)


def ip_terms(ips: Iterable[str]) -> list[str]:
    return [f"ip{ipaddress.ip_address(ip).version}:{ip}" for ip in ips]


# --- judging (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class SPFFindings:
    """Everything the SPF check learnt. ``auth`` has our outbound IP first;
    ``with_include`` and ``with_ips`` are the candidate fix records, walked
    like the published one: adding the region's include, and listing our
    IPs instead (None when no new record is needed or possible)."""

    domain: str
    region_include: str
    ips: tuple[str, ...]
    tree: SPFNode
    auth: tuple[IPAuthorisation, ...]
    with_include: SPFNode | None = None
    with_ips: SPFNode | None = None

    @property
    def all_term(self) -> str | None:
        if self.tree.record is None:
            return None
        return next((m.text for m in self.tree.record.mechanisms if m.kind == "all"), None)

    @property
    def aligned_ip_passes(self) -> bool:
        return bool(self.auth) and self.auth[0].result is SPFResult.PASS


def candidate_texts(findings: SPFFindings) -> tuple[str | None, str | None]:
    """The record texts worth walking as fixes: (with the include, with our
    IPs listed). Pure; both None when the record needs no new record or
    cannot be repaired automatically."""
    tree, include, ips = findings.tree, findings.region_include, findings.ips
    if not tree.texts:
        return f"v=spf1 include:{include} ~all", f"v=spf1 {' '.join(ip_terms(ips))} ~all"
    if len(tree.texts) > 1:
        return (
            merge_records(tree.texts, [f"include:{include}"]),
            merge_records(tree.texts, ip_terms(ips)),
        )
    if tree.record is None:
        return None, None
    if all(a.how != "no" for a in findings.auth) and tree.includes(include):
        return None, None
    current = tree.texts[0]
    ours = _terms_matching_ips(current.split(), ips)
    with_include = suggest_record(current, [f"include:{include}"], drop=ours)
    with_ips = suggest_record(current, ip_terms(ips), drop=ours)
    same = " ".join(current.split()).lower()
    return (
        None if with_include.lower() == same else with_include,
        None if with_ips.lower() == same else with_ips,
    )


def judge_spf(findings: SPFFindings) -> Check:
    """The SPF line of the report, with its fixes."""
    tree, include, name = findings.tree, findings.region_include, findings.domain
    if not tree.texts:
        summary = f"no SPF record: our IPs are not authorised ({tree.error})"
        fixes = _record_fix(findings, Status.ACTION_NEEDED, "publish an SPF record")
        return _finish(findings, Status.ACTION_NEEDED, summary, fixes)
    if len(tree.texts) > 1:
        summary = f"{len(tree.texts)} SPF records (permerror): receivers ignore all of them"
        fixes = _record_fix(findings, Status.ACTION_NEEDED, "replace them by this one record")
        if not fixes:
            text = f"publish exactly one v=spf1 record at {name}, merging the {len(tree.texts)}"
            fixes = (Fix("spf", Status.ACTION_NEEDED, text),)
        return _finish(findings, Status.ACTION_NEEDED, summary, fixes)
    if tree.record is None:
        summary = f"invalid SPF record (permerror): {tree.error}"
        fix = Fix("spf", Status.ACTION_NEEDED, f"correct the record at {name}: {tree.error}")
        return _finish(findings, Status.ACTION_NEEDED, summary, (fix,))

    statuses: list[Status] = []
    notes: list[str] = []
    lookups = tree.lookups
    if lookups > MAX_LOOKUPS:
        statuses.append(Status.ACTION_NEEDED)
        notes.append(f"{lookups} DNS lookups, over the limit of {MAX_LOOKUPS} (permerror)")
    if tree.void_lookups > MAX_VOID_LOOKUPS:
        statuses.append(Status.ACTION_NEEDED)
        notes.append(f"{tree.void_lookups} void lookups, over the limit of {MAX_VOID_LOOKUPS}")
    elif tree.void_lookups:
        statuses.append(Status.WARNING)
        notes.append(f"{tree.void_lookups} void lookup(s): {', '.join(_void_terms(tree))}")
    nested = tree.nested_errors
    if nested:
        statuses.append(Status.ACTION_NEEDED)
        notes.append(nested[0])
    denied = [a for a in findings.auth if a.how == "no"]
    hows = {a.how for a in findings.auth}
    if denied:
        statuses.append(Status.ACTION_NEEDED)
        first = denied[0]
        at = f" at {first.mechanism}" if first.mechanism else ""
        notes.insert(0, f"does not authorise {_ip_list(denied)} ({first.result}{at})")
    elif hows == {"include"}:
        notes.insert(0, f"authorises our IPs via include:{include}")
    elif tree.includes(include):
        mechanisms = sorted({a.mechanism or "" for a in findings.auth})
        notes.insert(0, f"authorises our IPs via {', '.join(mechanisms)}")
    elif "ip" in hows:
        statuses.append(Status.WARNING)
        notes.insert(0, f"authorises our IPs by listing them (ip4:), not via include:{include}")
    else:
        statuses.append(Status.WARNING)
        mechanisms = sorted({a.mechanism or "" for a in findings.auth})
        notes.insert(0, f"authorises our IPs via {', '.join(mechanisms)}, not include:{include}")
    all_term = findings.all_term
    plus_all = all_term is not None and all_term.lstrip("+").lower() == "all"
    if plus_all:
        statuses.append(Status.WARNING)
        notes.append(f"'{all_term}' lets any host send as {name}")
    status = worst(statuses)
    if lookups <= MAX_LOOKUPS:
        notes.append(f"{lookups}/{MAX_LOOKUPS} lookups")
    summary = "; ".join([*notes, all_term or "no all"])
    found = list(_record_fix(findings, status, "publish this record instead"))
    if lookups > MAX_LOOKUPS and not found:
        text = (
            f"the record at {name} needs {lookups} DNS lookups: remove or flatten"
            f" {lookups - MAX_LOOKUPS} include/a/mx/exists term(s) to get within {MAX_LOOKUPS}"
        )
        found.append(Fix("spf", Status.ACTION_NEEDED, text))
    if plus_all:
        text = f"end the record with ~all or -all instead of {all_term}"
        found.append(Fix("spf", Status.WARNING, text))
    return _finish(findings, status, summary, tuple(found))


def _void_terms(tree: SPFNode) -> list[str]:
    return [*tree.void, *(t for c in tree.children for t in _void_terms(c))]


def _ip_list(auth: Sequence[IPAuthorisation]) -> str:
    ips = [a.ip for a in auth]
    return ", ".join(ips[:3]) + (f" and {len(ips) - 3} more" if len(ips) > 3 else "")


def _record_fix(findings: SPFFindings, status: Status, action: str) -> tuple[Fix, ...]:
    """The record to publish: with the region's include when that stays
    within the lookup limit, otherwise with our IPs listed, saying why and
    what is still over the limit; never silently worse."""
    if status is Status.OK:
        return ()
    inc, ips = findings.with_include, findings.with_ips
    name, include = findings.domain, findings.region_include
    limit = MAX_LOOKUPS
    if inc is not None and inc.lookups <= limit and not inc.nested_errors:
        text = f"{action} at {name} (adds include:{include}; {inc.lookups}/{limit} lookups)"
        if not findings.tree.texts:
            text += f"; add your own mail servers if mail from {name} also comes from them"
        return (Fix("spf", status, text, RecordFix(name, inc.texts[0])),)
    if ips is None or ips.record is None:
        return ()
    why = ""
    if inc is not None and inc.nested_errors:
        # the include itself is broken: its lookup count says nothing
        why = f"include:{include} cannot be used ({inc.nested_errors[0]}); "
    elif inc is not None:
        why = f"adding include:{include} would need {inc.lookups} DNS lookups (limit {limit}); "
    text = (
        f"{why}{action} at {name}: it lists our IPs directly (ip4: costs no DNS lookup;"
        " update it if our IPs change)"
    )
    if ips.lookups > limit:
        status = Status.ACTION_NEEDED
        text += (
            f"; it still needs {ips.lookups} lookups: also remove or flatten"
            f" {ips.lookups - limit} include/a/mx/exists term(s)"
        )
    else:
        text += f"; {ips.lookups}/{limit} lookups"
    return (Fix("spf", status, text, RecordFix(name, ips.texts[0])),)


def _finish(findings: SPFFindings, status: Status, summary: str, fixes: tuple[Fix, ...]) -> Check:
    tree = findings.tree
    usable = tree.record is not None
    suggested = next((f.record.value for f in fixes if f.record is not None), None)
    walked = [n for n in (findings.with_include, findings.with_ips) if n is not None]
    suggested_lookups = next((n.lookups for n in walked if n.texts[0] == suggested), None)
    details: dict[str, object] = {
        "records": list(tree.texts),
        "valid": usable,
        "error": tree.error,
        "lookups": tree.lookups if usable else None,
        "lookup_limit": MAX_LOOKUPS,
        "void_lookups": tree.void_lookups if usable else None,
        "all": findings.all_term,
        "region_include": findings.region_include,
        "includes_region": tree.includes(findings.region_include),
        "ips": [
            {"ip": a.ip, "result": a.result.value, "how": a.how, "mechanism": a.mechanism}
            for a in findings.auth
        ],
        "suggested_record": suggested,
        "suggested_lookups": suggested_lookups,
    }
    return Check("spf", status, summary, details, fixes)


async def find_spf(
    resolver: Resolver, domain: str, ips: Sequence[str], region_include: str
) -> SPFFindings:
    """Fetch and evaluate everything the SPF check needs.

    Raises DNSTemporaryError when the domain's own TXT lookup gets no answer.
    """
    # the walk counts lookups for the first of our addresses: a, mx and ptr
    # terms depend on the client's address family and name
    ip = ips[0] if ips else "0.0.0.0"
    tree = await walk_domain(resolver, domain, ip)
    auth = await authorisations(resolver, domain, ips, region_include)
    findings = SPFFindings(domain, region_include, tuple(ips), tree, tuple(auth))
    include_text, ips_text = candidate_texts(findings)
    with_include = with_ips = None
    if include_text is not None:
        with_include = await walk_record(resolver, domain, include_text, ip)
    if ips_text is not None:
        with_ips = await walk_record(resolver, domain, ips_text, ip)
    return SPFFindings(
        domain, region_include, tuple(ips), tree, tuple(auth), with_include, with_ips
    )
