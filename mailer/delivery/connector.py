"""Finding a server that will take a destination's mail: the MX hosts in
RFC 5321 order (or the configured relay), each of their addresses, until
one completes STARTTLS. A host that refuses the connection, offers no
STARTTLS or fails the handshake is skipped; only when every host failed is
the destination deferred."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from mailer.config import TLSPolicy
from mailer.delivery.routing import resolve_route
from mailer.delivery.smtp import Session, TLSContexts, open_session
from mailer.dns import Resolver
from mailer.errors import DeliveryError, DNSError, MailerError
from mailer.reasons import Reason

# the order in which a failure explains a deferral: a TLS problem on any
# host is the more useful reason than a refused connection on another
_REASON_RANK = {
    Reason.CERTIFICATE: 0,
    Reason.TLS_HANDSHAKE: 1,
    Reason.TLS_UNAVAILABLE: 2,
    Reason.CONNECTION: 3,
    Reason.DNS: 4,
}

MAX_ADDRESSES_PER_HOST = 2


class RouteFailure(MailerError):
    """No MX of the destination could be used."""

    def __init__(self, reason: Reason, text: str, last_host: str | None) -> None:
        super().__init__(text)
        self.reason = reason
        self.text = text
        self.last_host = last_host


@dataclass(frozen=True)
class HostFailure:
    host: str
    address: str | None
    reason: Reason
    text: str


def summarise(failures: list[HostFailure]) -> RouteFailure:
    """The deferral reason for a route whose every host failed (pure)."""
    if not failures:
        return RouteFailure(Reason.CONNECTION, "no usable MX host", None)
    worst = min(failures, key=lambda f: _REASON_RANK.get(f.reason, 9))
    text = "; ".join(f"{f.host}[{f.address or '-'}]: {f.text}" for f in failures)
    return RouteFailure(worst.reason, text, failures[-1].host)


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
    ) -> None:
        self.resolver = resolver
        self.helo = helo
        self.port = port
        self.relay = relay
        self.timeout = timeout
        self.cafile = cafile
        self.rng = rng or random.Random()
        self.contexts = TLSContexts()

    async def _hosts(self, domain: str) -> tuple[list[str], int]:
        if self.relay is not None:
            return [self.relay[0]], self.relay[1]
        route = await resolve_route(self.resolver, domain, rng=self.rng)
        return list(route.hosts), self.port

    async def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        return (await self.resolver.addresses(host))[:MAX_ADDRESSES_PER_HOST]

    async def connect(self, domain: str, policy: TLSPolicy) -> Session:
        """Raises DNSError when the domain's route cannot be resolved and
        RouteFailure when no host could be used."""
        hosts, port = await self._hosts(domain)
        failures: list[HostFailure] = []
        for host in hosts:
            try:
                addresses = await self._addresses(host)
            except DNSError as exc:
                failures.append(HostFailure(host, None, Reason.DNS, exc.reason))
                continue
            for address in addresses:
                try:
                    return await open_session(
                        host,
                        address,
                        port,
                        helo=self.helo,
                        policy=policy,
                        timeout=self.timeout,
                        cafile=self.cafile,
                        contexts=self.contexts,
                    )
                except DeliveryError as exc:
                    failures.append(HostFailure(host, address, exc.reason, exc.text))
        raise summarise(failures)
