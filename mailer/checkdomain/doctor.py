"""``mailer doctor``: is our own sending set-up right, for every entry of
the source-address pool?

- forward-confirmed reverse DNS: the public address has a PTR name, that
  name resolves back to the address, and it is the entry's EHLO name
  (Gmail and Yahoo require a valid PTR of bulk senders);
- SPF: the public address is inside the region's SPF include (the record
  customers add with ``include:``), so that customers who follow the
  set-up article pass SPF for every address their mail may leave from.

Bounce domains do not exist yet; their SPF and MX are checked once they do.
The verdicts are pure functions over what DNS answered (``fcrdns_verdict``,
``spf_verdict``); :func:`doctor` does the lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mailer.config import Config, SourceConfig
from mailer.dns import Resolver
from mailer.errors import DNSError
from mailer.identity.check_host import SPFResult, check_host

__all__ = ["Finding", "SourceReport", "doctor", "fcrdns_verdict", "spf_verdict"]


@dataclass(frozen=True)
class Finding:
    """One check: ``ok``, and what was found or what to fix."""

    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class SourceReport:
    public_ip: str
    bind_address: str | None
    ehlo: str
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "public_ip": self.public_ip,
            "bind_address": self.bind_address,
            "ehlo": self.ehlo,
            "ok": self.ok,
            "findings": [{"check": f.check, "ok": f.ok, "detail": f.detail} for f in self.findings],
        }


def fcrdns_verdict(
    ip: str, ehlo: str, ptr_names: Sequence[str], forward: Mapping[str, Sequence[str]]
) -> Finding:
    """Forward-confirmed reverse DNS for ``ip`` matching ``ehlo`` (pure):
    ``forward`` maps each PTR name to the addresses it resolves to."""
    address = ipaddress.ip_address(ip)
    if not ptr_names:
        return Finding("fcrdns", False, f"{ip} has no PTR record: publish one naming {ehlo}")
    confirmed = [
        name
        for name in ptr_names
        if any(ipaddress.ip_address(a) == address for a in forward.get(name, ()))
    ]
    if not confirmed:
        names = ", ".join(ptr_names)
        return Finding(
            "fcrdns", False, f"PTR {names} does not resolve back to {ip} (not forward-confirmed)"
        )
    wanted = ehlo.lower().rstrip(".")
    if wanted not in (n.lower().rstrip(".") for n in confirmed):
        return Finding(
            "fcrdns",
            False,
            f"{ip} is forward-confirmed as {', '.join(confirmed)}, but the EHLO name is {ehlo}",
        )
    return Finding("fcrdns", True, f"{ip} ↔ {ehlo} (forward-confirmed reverse DNS)")


def spf_verdict(ip: str, include: str, result: SPFResult, explanation: str = "") -> Finding:
    """Whether ``ip`` is inside the region's SPF include (pure)."""
    if result is SPFResult.PASS:
        return Finding("spf-include", True, f"{ip} is in {include} (spf=pass)")
    why = f": {explanation}" if explanation else ""
    return Finding(
        "spf-include",
        False,
        f"{ip} is not in {include} (spf={result}{why}); customers' include would not cover it",
    )


async def _fcrdns(resolver: Resolver, entry: SourceConfig, ehlo: str) -> Finding:
    try:
        ptr = await resolver.ptr(entry.public_ip)
        forward: dict[str, list[str]] = {}
        for name in ptr.records:
            try:
                forward[name] = await resolver.addresses(name)
            except DNSError:
                forward[name] = []
    except DNSError as exc:
        return Finding("fcrdns", False, f"reverse lookup of {entry.public_ip} failed: {exc}")
    return fcrdns_verdict(entry.public_ip, ehlo, ptr.records, forward)


async def doctor(config: Config, resolver: Resolver) -> list[SourceReport]:
    """One report per source-address entry. DNS trouble is a failed
    finding, never an exception."""
    include = config.region_settings.spf_include
    reports = []
    for entry in config.source_pool:
        ehlo = entry.ehlo or config.hostname
        spf = await check_host(resolver, entry.public_ip, include, f"postmaster@{include}")
        findings = (
            await _fcrdns(resolver, entry, ehlo),
            spf_verdict(entry.public_ip, include, spf.result, spf.explanation),
        )
        reports.append(SourceReport(entry.public_ip, entry.bind_address, ehlo, findings))
    return reports
