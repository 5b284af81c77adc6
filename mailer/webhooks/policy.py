"""Pure rules of webhook delivery: which URLs may be registered, which
addresses may be connected to (SSRF), what a reply means, and when to try
again."""

from __future__ import annotations

import email.utils
import ipaddress
import random
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from mailer.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL = 2000

# Ranges an endpoint may not reach unless the config allows them: a webhook
# URL is chosen by a customer, and these are the service's own machine, its
# private network, and the clouds' instance-metadata services.
_FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("fd00:ec2::254/128", "metadata"),
)
FORBIDDEN_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why) for net, why in _FORBIDDEN
)
# metadata addresses are named as such, for the operator reading the refusal
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


@dataclass(frozen=True)
class Target:
    """Where a webhook URL points."""

    url: str
    scheme: str
    host: str  # lower-case name or address, without brackets
    port: int

    @property
    def literal(self) -> IPAddress | None:
        """The address when the host is an IP literal."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def parse_url(url: str, *, allow_insecure: bool, field: str = "url") -> Target:
    """Check a webhook URL: https (http only with ``allow_insecure``), a
    host, no credentials, no fragment, no whitespace or control characters.
    Raises ValidationError naming ``field``."""
    if not url or len(url) > MAX_URL:
        raise ValidationError(field, f"must be 1 to {MAX_URL} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValidationError(field, "must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"is not a URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_insecure:
        raise ValidationError(field, "must be https (http needs [webhooks] allow_insecure)")
    if scheme not in ("https", "http"):
        raise ValidationError(field, "must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(field, "must not carry credentials")
    if parts.fragment:
        raise ValidationError(field, "must not have a #fragment")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise ValidationError(field, "has no host")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80))


def allow_networks(allow: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    """The config's allow-list as networks (validated with the config)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in allow)


def refusal(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> str | None:
    """Why ``address`` may not be connected to, or None when it may.
    IPv4-mapped and NAT64-style IPv6 forms are judged by their IPv4 part."""
    if any(address in net for net in allowed if net.version == address.version):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return refusal(address.ipv4_mapped, allowed)
    if address in _METADATA:
        return "metadata"
    for net, why in FORBIDDEN_NETWORKS:
        if net.version == address.version and address in net:
            return why
    return None


def check_addresses(
    host: str, addresses: list[str], allowed: tuple[IPNetwork, ...], *, field: str = "url"
) -> IPAddress:
    """The first of ``host``'s addresses, once every one of them is
    permitted: a name with one forbidden address is refused as a whole, so
    that which address gets picked cannot matter. Raises ValidationError
    naming ``field``."""
    if not addresses:
        raise ValidationError(field, f"{host} has no address")
    parsed = [ipaddress.ip_address(a) for a in addresses]
    for address in parsed:
        why = refusal(address, allowed)
        if why is not None:
            raise ValidationError(
                field, f"{host} resolves to {address}, a {why} address (not allowed)"
            )
    return parsed[0]


class Verdict(StrEnum):
    ADVANCE = "delivered"  # 2xx: the batch is done
    DISABLE = "disabled"  # 410 Gone: the receiver asked us to stop
    RETRY = "retry"  # anything else


def verdict(status: int | None) -> Verdict:
    """What a reply status means (None: no reply, e.g. a timeout).
    Redirects are not followed, so a 3xx is a failure like a 5xx."""
    if status is not None and 200 <= status < 300:
        return Verdict.ADVANCE
    if status == 410:
        return Verdict.DISABLE
    return Verdict.RETRY


def retry_after(value: str | None, *, now: float, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an
    HTTP date), at most ``cap``; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), cap)


def backoff(
    failures: int, *, base: float, max_delay: float, jitter: float, rng: random.Random
) -> float:
    """The wait before the next try after ``failures`` failures in a row
    (1 or more): ``base`` doubled per failure up to ``max_delay``, spread by
    ± ``jitter`` so endpoints that failed together do not retry together."""
    delay = min(base * 2.0 ** min(max(failures - 1, 0), 64), max_delay)
    return delay * (1.0 + rng.uniform(-jitter, jitter))
