"""The receiving-TLS check (the seed article's last point): for each MX of
the domain, is STARTTLS offered, does the handshake succeed, and is the
certificate current and for the MX name. The probing is in
:mod:`mailer.checkdomain.tls_probe`; the judging here is pure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailer.checkdomain.report import Check, Fix, Status, worst
from mailer.checkdomain.tls_probe import PROBE_TIMEOUT, MXProbe, probe_mx, utcnow
from mailer.config import TLSPolicy
from mailer.delivery.routing import resolve_route
from mailer.dns import Resolver
from mailer.errors import DNSPermanentError

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "MAX_MX_PROBED",
    "ProbeVerdict",
    "TLSFindings",
    "find_tls",
    "judge_probe",
    "judge_tls",
]

# A certificate running out sooner than this is worth a warning.
EXPIRY_WARNING_DAYS = 14
MAX_MX_PROBED = 10


# --- judging (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class ProbeVerdict:
    """One MX judged: its status, a phrase saying why, what to do."""

    status: Status
    text: str
    fix: str | None = None


def judge_probe(probe: MXProbe, policy: TLSPolicy) -> ProbeVerdict:
    """Without STARTTLS or a working handshake we never deliver to the MX;
    an expired certificate needs action; a name mismatch or self-signed
    certificate is a warning, or needs action when our policy for the
    domain is ``verify``."""
    name = probe.host
    act = Status.ACTION_NEEDED
    accept = f"make {name} accept TLS connections on the SMTP port"
    if probe.address is None:
        return ProbeVerdict(
            act, f"{name}: {probe.error or 'no address'}", f"give {name} an address"
        )
    if probe.starttls_offered is False and probe.error is None:
        text = f"{name}: does not offer STARTTLS (we never send in plaintext)"
        return ProbeVerdict(act, text, f"enable STARTTLS on {name} (ask your e-mail administrator)")
    if probe.error is not None or not probe.handshake_ok:
        return ProbeVerdict(act, f"{name}: {probe.error or 'TLS did not come up'}", accept)
    cert = probe.certificate
    version = probe.tls_version or "TLS"
    if cert is None:
        return ProbeVerdict(Status.WARNING, f"{name}: {version}, but no certificate was shown")
    renew = f"renew the TLS certificate of {name}"
    if cert.expired:
        ago = f"{-cert.days_left} day(s) ago" if cert.days_left else "today"
        return ProbeVerdict(
            act, f"{name}: certificate expired {ago} ({cert.not_after:%Y-%m-%d})", renew
        )
    if cert.not_yet_valid:
        text = f"{name}: certificate is not valid before {cert.not_before:%Y-%m-%d}"
        return ProbeVerdict(act, text, f"check the clock and certificate of {name}")
    strict = act if policy is TLSPolicy.VERIFY else Status.WARNING
    proper = f"give {name} a certificate from a public CA that names {name}"
    if not cert.matches_host:
        names = ", ".join(cert.names[:3]) or cert.subject
        return ProbeVerdict(strict, f"{name}: certificate is for {names}, not the MX name", proper)
    if cert.self_signed:
        return ProbeVerdict(strict, f"{name}: certificate is self-signed", proper)
    if cert.days_left < EXPIRY_WARNING_DAYS:
        text = f"{name}: certificate expires in {cert.days_left} day(s)"
        return ProbeVerdict(Status.WARNING, text, renew)
    text = f"{name}: STARTTLS, {version}, certificate valid {cert.days_left} days"
    return ProbeVerdict(Status.OK, text)


@dataclass(frozen=True)
class TLSFindings:
    domain: str
    port: int
    policy: TLSPolicy
    hosts: tuple[str, ...]
    implicit: bool
    probes: tuple[MXProbe, ...]
    route_error: str | None = None


def judge_tls(findings: TLSFindings) -> Check:
    """The receiving-TLS line: the worst MX decides; an MX that cannot be
    reached is only a warning while another one works."""
    details = {
        "port": findings.port,
        "policy": findings.policy.value,
        "mx": list(findings.hosts),
        "implicit_mx": findings.implicit,
        "route_error": findings.route_error,
        "hosts": [p.to_json() for p in findings.probes],
    }
    if findings.route_error is not None:
        summary = f"mail to {findings.domain} cannot be routed: {findings.route_error}"
        fix = Fix("tls", Status.ACTION_NEEDED, f"publish MX records for {findings.domain}")
        return Check("tls", Status.ACTION_NEEDED, summary, details, (fix,))
    judged = [judge_probe(p, findings.policy) for p in findings.probes]
    working = any(v.status is not Status.ACTION_NEEDED for v in judged)
    if working:
        # A backup MX that is down is not a set-up fault while another works.
        judged = [
            ProbeVerdict(Status.WARNING, v.text, v.fix) if not p.connected else v
            for p, v in zip(findings.probes, judged, strict=True)
        ]
    problems = [v for v in judged if v.status is not Status.OK]
    if not problems:
        versions = sorted({p.tls_version or "" for p in findings.probes})
        days = min(p.certificate.days_left for p in findings.probes if p.certificate)
        summary = (
            f"{len(findings.probes)} MX: STARTTLS with {', '.join(versions)},"
            f" certificates valid (at least {days} days left), names match"
        )
        return Check("tls", Status.OK, summary, details)
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    fixes = tuple(Fix("tls", v.status, v.fix) for v in problems if v.fix)
    return Check("tls", worst(v.status for v in judged), problems[0].text + more, details, fixes)


async def find_tls(
    resolver: Resolver,
    domain: str,
    *,
    port: int,
    helo: str,
    policy: TLSPolicy,
    timeout: float = PROBE_TIMEOUT,  # noqa: ASYNC109 - per-probe bound
) -> TLSFindings:
    """Route to the domain's MX hosts and probe each (concurrently).

    Raises DNSTemporaryError when the MX or an address lookup gets no answer.
    """
    try:
        route = await resolve_route(resolver, domain)
    except DNSPermanentError as exc:
        return TLSFindings(domain, port, policy, (), False, (), exc.reason)
    hosts = route.hosts[:MAX_MX_PROBED]
    targets: list[tuple[str, str | None, str | None]] = []
    for host in hosts:
        try:
            addresses = await resolver.addresses(host)
        except DNSPermanentError as exc:
            targets.append((host, None, exc.reason))
            continue
        targets.append((host, addresses[0], None))
    now = utcnow()

    async def one(host: str, address: str | None, error: str | None) -> MXProbe:
        if address is None:
            return MXProbe(host, None, port, error=error)
        return await probe_mx(host, address, port, helo=helo, timeout=timeout, now=now)

    probes = await asyncio.gather(*(one(*t) for t in targets))
    return TLSFindings(domain, port, policy, hosts, route.implicit, tuple(probes))
