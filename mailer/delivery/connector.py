"""Finding a server that will take a destination's mail: the MX hosts in
RFC 5321 order (or the configured relay), each of their addresses, until
one completes STARTTLS. A host that refuses the connection, offers no
STARTTLS or fails the handshake is skipped; only when every host failed is
the destination deferred.

Under an MTA-STS ``enforce`` policy only MX hosts matching the policy are
tried, with certificates verified against the MX name; under ``testing``
every host is tried as before and what enforce would have refused is
counted. Every TLS session (one address of one host) is counted for TLS
reports (RFC 8460) as a success or as one failure, the first the policy
found; hosts that could not be reached at all are no TLS session and are
not counted. Connections leave from a source-address pool entry: bound to its
local address, with its EHLO name, and to destination addresses of its IP
version only (IPv6 destinations are used when the entry is IPv6).

With a trusted validating resolver (``dnssec = "trust-ad"``), each MX host
whose addresses are DNSSEC-secure has its TLSA records looked up; usable
ones decide the certificate check for that host (DANE over MTA-STS over
the configured level), and a certificate matching none of them is
refused before MAIL FROM (reason ``dane``)."""

from __future__ import annotations

import datetime
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass

from mailer.config import SourceConfig, TLSPolicy
from mailer.delivery.routing import resolve_route
from mailer.delivery.smtp import Session, TLSContexts, open_session
from mailer.delivery.tls.applied import Applied, AppliedPolicy, apply_dane
from mailer.delivery.tls.counter import TLSCounter
from mailer.delivery.tls.dane import check
from mailer.delivery.tls.policy import mx_allowed
from mailer.delivery.tls.results import ResultType, certificate_result, result_type
from mailer.delivery.tls.tlsa import lookup_tlsa
from mailer.dns import Addresses, Resolver
from mailer.errors import DeliveryError, DNSError, MailerError, TLSFailed
from mailer.reasons import Reason

# the order in which a failure explains a deferral: a TLS problem on any
# host is the more useful reason than a refused connection on another
_REASON_RANK = {
    Reason.DANE: 0,
    Reason.CERTIFICATE: 0,
    Reason.TLS_HANDSHAKE: 1,
    Reason.TLS_UNAVAILABLE: 2,
    Reason.CONNECTION: 3,
    Reason.DNS: 4,
    # only when no host of the policy was left to fail otherwise
    Reason.MTA_STS_MISMATCH: 5,
}

MAX_ADDRESSES_PER_HOST = 2


class RouteFailure(MailerError):
    """No MX of the destination could be used."""

    def __init__(self, reason: Reason, text: str, last_host: str | None) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.last_host = last_host
        # the applied policy's label (AppliedPolicy.label) of the failure
        # that explains the deferral, and its RFC 8460 result type
        self.policy: str | None = None
        self.result: ResultType | None = None


@dataclass(frozen=True)
class HostFailure:
    host: str
    address: str | None
    reason: Reason
    text: str
    # the policy the host was tried under, when it differed from the
    # destination's (DANE is decided per host)
    policy: str | None = None
    result: ResultType | None = None


def summarise(failures: list[HostFailure]) -> RouteFailure:
    """The deferral reason for a route whose every host failed (pure)."""
    if not failures:
        return RouteFailure(Reason.CONNECTION, "no usable MX host", None)
    worst = min(failures, key=lambda f: _REASON_RANK.get(f.reason, 9))
    text = "; ".join(f"{f.host}[{f.address or '-'}]: {f.text}" for f in failures)
    failure = RouteFailure(worst.reason, text, failures[-1].host)
    failure.policy = worst.policy
    failure.result = worst.result
    return failure


# What an MTA-STS testing policy would have refused: (domain, reason)
ReportFn = Callable[[str, Reason], None]


class Connector:
    """Opens a STARTTLS session to a destination domain."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        helo: str,
        port: int = 25,
        relay: tuple[str, int] | None = None,
        timeout: float = 60.0,
        cafile: str | None = None,
        rng: random.Random | None = None,
        on_testing_failure: ReportFn | None = None,
        tls_counter: TLSCounter | None = None,
    ) -> None:
        self.resolver = resolver
        self.helo = helo
        self.port = port
        self.relay = relay
        self.timeout = timeout
        self.cafile = cafile
        self.rng = rng or random.Random()
        self.contexts = TLSContexts()
        self.on_testing_failure = on_testing_failure
        # DANE needs DNSSEC-secure answers, and never applies to a relay
        self.dane = resolver.trust_ad and relay is None
        # TLS report counts; None: not counted (relay mode, or switched off)
        self.tls_counter = tls_counter if relay is None else None

    async def _hosts(self, domain: str) -> tuple[list[str], int]:
        if self.relay is not None:
            return [self.relay[0]], self.relay[1]
        route = await resolve_route(self.resolver, domain, rng=self.rng)
        return list(route.hosts), self.port

    async def _addresses(self, host: str, version: int | None) -> Addresses:
        """The host's addresses of IP ``version`` (any when None), the first
        MAX_ADDRESSES_PER_HOST of them, and whether they are DNSSEC-secure.
        Raises DNSError."""
        try:
            return Addresses((str(ipaddress.ip_address(host)),), False)
        except ValueError:
            pass
        answer = await self.resolver.host_addresses(host)
        found = answer.addresses
        if version is not None:
            found = tuple(a for a in found if ipaddress.ip_address(a).version == version)
        return Addresses(found[:MAX_ADDRESSES_PER_HOST], answer.secure)

    async def _host_policy(
        self, host: str, port: int, applied: AppliedPolicy, addresses: Addresses
    ) -> AppliedPolicy:
        """The policy for one MX host: ``applied``, or DANE's where the host
        publishes secure TLSA records. Raises DNSError (TLSA lookup)."""
        if not self.dane:
            return applied
        found = await lookup_tlsa(self.resolver, host, port, addresses_secure=addresses.secure)
        return apply_dane(applied, found)

    def _report(self, domain: str, reason: Reason) -> None:
        if self.on_testing_failure is not None:
            self.on_testing_failure(domain, reason)

    async def connect(
        self,
        domain: str,
        policy: TLSPolicy | AppliedPolicy,
        source: SourceConfig | None = None,
    ) -> Session:
        """Raises DNSError when the domain's route cannot be resolved and
        RouteFailure when no host could be used (reason
        ``mta-sts-mismatch`` when an enforce policy left no MX host)."""
        applied = policy if isinstance(policy, AppliedPolicy) else _plain(policy)
        hosts, port = await self._hosts(domain)
        failures: list[HostFailure] = []
        version = source.version if source is not None and self.relay is None else None
        sending_ip = source.public_ip if source is not None else ""
        for host in hosts:
            if applied.mx is not None and not mx_allowed(applied.mx, host):
                failures.append(
                    HostFailure(host, None, Reason.MTA_STS_MISMATCH, "not in the MTA-STS policy")
                )
                self._count(domain, applied, sending_ip, host, None, Reason.MTA_STS_MISMATCH)
                continue
            # what a testing policy would have refused, counted once per session
            found: Reason | None = None
            verify_code: int | None = None
            if applied.report is not None and not mx_allowed(applied.report, host):
                self._report(domain, Reason.MTA_STS_MISMATCH)
                found = Reason.MTA_STS_MISMATCH
            try:
                addresses = await self._addresses(host, version)
            except DNSError as exc:
                failures.append(HostFailure(host, None, Reason.DNS, exc.reason))
                continue
            if not addresses.addresses:
                text = f"no IPv{version} address, and the source address is IPv{version}"
                failures.append(HostFailure(host, None, Reason.CONNECTION, text))
                continue
            try:
                host_policy = await self._host_policy(host, port, applied, addresses)
            except DNSError as exc:
                text = f"TLSA lookup failed: {exc}"
                failures.append(
                    HostFailure(host, None, Reason.DNS, text, result=ResultType.DNSSEC_INVALID)
                )
                # RFC 8460 §4.3.2.1: no valid records from the resolver
                # (SERVFAIL, or bogus data) is a DANE policy failure
                if self.tls_counter is not None:
                    self.tls_counter.failure(
                        domain,
                        applied,
                        ResultType.DNSSEC_INVALID,
                        sending_ip=sending_ip,
                        receiving_mx=host,
                        receiving_ip=None,
                        reason_code=Reason.DNS.value,
                    )
                continue
            if host_policy.tlsa is not None:
                # DANE decides this host: what the testing policy thinks of
                # it is no failure of the DANE policy it is reported under
                found = None
            for address in addresses.addresses:
                problems: list[TLSFailed] = []
                try:
                    session = await self._open(
                        domain, host, address, port, host_policy, source, problems
                    )
                except DeliveryError as exc:
                    failures.append(
                        HostFailure(
                            host,
                            address,
                            exc.reason,
                            exc.text,
                            host_policy.label,
                            result_type(exc.reason),
                        )
                    )
                    # the first failure the session met counts
                    first: DeliveryError = problems[0] if problems else exc
                    reason = found or first.reason
                    code = first.verify_code if isinstance(first, TLSFailed) else None
                    self._count(domain, host_policy, sending_ip, host, address, reason, code)
                    continue
                session.policy = host_policy.label
                if found is None and problems:
                    found, verify_code = problems[0].reason, problems[0].verify_code
                if found is not None:
                    self._count(domain, host_policy, sending_ip, host, address, found, verify_code)
                elif self.tls_counter is not None and host_policy.result is not None:
                    # TLSA records that were all unusable: TLS went ahead
                    # unauthenticated, which the domain's report should say
                    self.tls_counter.failure(
                        domain,
                        host_policy,
                        host_policy.result,
                        sending_ip=sending_ip,
                        receiving_mx=host,
                        receiving_ip=address,
                        reason_code=host_policy.label,
                    )
                elif self.tls_counter is not None:
                    self.tls_counter.success(domain, host_policy)
                return session
        failure = summarise(failures)
        failure.policy = failure.policy or applied.label
        raise failure

    async def _open(
        self,
        domain: str,
        host: str,
        address: str,
        port: int,
        applied: AppliedPolicy,
        source: SourceConfig | None,
        problems: list[TLSFailed],
    ) -> Session:
        """``problems`` gets the certificate failure a testing policy would
        have refused the host for (the session is then opened without the
        check)."""
        helo = source.ehlo if source is not None and source.ehlo else self.helo
        bind = source.bind_address if source is not None else None
        if applied.tlsa is not None:
            return await self._open_dane(host, address, port, applied, helo, bind)
        level = applied.level
        if applied.report is not None:
            # testing: checked as enforce would, delivered as before
            level = TLSPolicy.VERIFY
        try:
            return await open_session(
                host,
                address,
                port,
                helo=helo,
                policy=level,
                timeout=self.timeout,
                cafile=self.cafile,
                contexts=self.contexts,
                source_address=bind,
            )
        except TLSFailed as exc:
            if applied.report is None or exc.reason is not Reason.CERTIFICATE:
                raise
            problems.append(exc)
        self._report(domain, Reason.CERTIFICATE)
        return await open_session(
            host,
            address,
            port,
            helo=helo,
            policy=applied.level,
            timeout=self.timeout,
            cafile=self.cafile,
            contexts=self.contexts,
            source_address=bind,
        )

    async def _open_dane(
        self,
        host: str,
        address: str,
        port: int,
        applied: AppliedPolicy,
        helo: str,
        bind: str | None,
    ) -> Session:
        """A session whose certificate matched the host's TLSA records;
        no MAIL FROM goes over one that did not. Raises DeliveryError
        (reason ``dane`` for a mismatch)."""
        assert applied.tlsa is not None
        # no PKIX check: DANE-EE ignores names and dates, DANE-TA checks
        # them from its own anchor; SNI still names the MX host
        session = await open_session(
            host,
            address,
            port,
            helo=helo,
            policy=TLSPolicy.ENCRYPT,
            timeout=self.timeout,
            contexts=self.contexts,
            source_address=bind,
        )
        now = datetime.datetime.now(datetime.UTC)
        match = check(applied.tlsa, session.tls.certificate, session.tls.chain, host, now)
        if not match.matched:
            await session.close()
            raise DeliveryError(Reason.DANE, f"{host} [{address}]: {match.text}")
        return session

    def _count(
        self,
        domain: str,
        applied: AppliedPolicy,
        sending_ip: str,
        host: str,
        address: str | None,
        reason: Reason,
        verify_code: int | None = None,
    ) -> None:
        """One failed session, when the reason is a TLS failure."""
        if self.tls_counter is None:
            return
        result: ResultType | None = (
            certificate_result(verify_code) if reason is Reason.CERTIFICATE else result_type(reason)
        )
        if result is None:
            return
        self.tls_counter.failure(
            domain,
            applied,
            result,
            sending_ip=sending_ip,
            receiving_mx=host,
            receiving_ip=address,
            reason_code=reason.value,
        )


def _plain(policy: TLSPolicy) -> AppliedPolicy:
    level = TLSPolicy(policy)
    return AppliedPolicy(Applied(level.value), level)
