"""Fetching a domain's MTA-STS policy file over HTTPS (RFC 8461 §3.3).

The only module that imports httpx; every failure it raises is translated
here into :class:`~mailer.errors.PolicyError` with field ``fetch``:

    the policy host's name does not resolve   → "mta-sts.<domain>: ..."
    refused, unreachable, TLS or certificate  → "cannot connect: ..."
    no answer within the timeout              → "timed out after Ns"
    a redirect (3xx)                          → "redirect ... not followed"
    any status other than 200                 → "HTTP <status>"
    a media type other than text/plain        → "media type ..."
    a body over 64 KB                         → "larger than 65536 bytes"

The host ``mta-sts.<domain>`` is resolved through the service's own
resolver (so tests can serve it from the loopback DNS server); the
connection goes to that address with the host name as SNI, Host header
and the name the certificate is checked against.
"""

from __future__ import annotations

import ipaddress
import ssl
from types import TracebackType
from typing import Self

import httpx

from mailer.delivery.tls.policy import MAX_POLICY_BYTES
from mailer.dns import Resolver
from mailer.errors import ConfigError, DNSError, PolicyError

__all__ = ["PolicyFetcher", "policy_host", "policy_url"]

WELL_KNOWN = "/.well-known/mta-sts.txt"


def policy_host(domain: str) -> str:
    return f"mta-sts.{domain}"


def policy_url(domain: str, port: int = 443) -> str:
    """The URL §3.3 names (with a port only when it is not 443)."""
    where = policy_host(domain) if port == 443 else f"{policy_host(domain)}:{port}"
    return f"https://{where}{WELL_KNOWN}"


def _context(cafile: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if cafile:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("mta_sts.test_cafile", f"{cafile}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PolicyFetcher:
    """Fetches policy files; one HTTP client shared by every fetch.

    ``port`` and ``cafile`` exist for tests (a policy host on loopback
    with a test CA); in production they stay 443 and the system CAs.
    Raises ConfigError for an unreadable ``cafile``.
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        timeout: float = 30.0,
        port: int = 443,
        cafile: str | None = None,
    ) -> None:
        self._resolver = resolver
        self._port = port
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            verify=_context(cafile),
            follow_redirects=False,
            timeout=httpx.Timeout(timeout),
            trust_env=False,  # no proxy: the address was chosen by our resolver
            headers={"User-Agent": "mailer (MTA-STS)"},
        )

    async def fetch(self, domain: str) -> str:
        """The policy file's text for ``domain`` (ASCII form).

        Raises PolicyError("fetch", reason) for every failure listed in the
        module docstring, and for a body that is not UTF-8.
        """
        host = policy_host(domain)
        try:
            addresses = await self._resolver.addresses(host)
        except DNSError as exc:
            raise PolicyError("fetch", f"{host}: {exc.reason}") from exc
        last: PolicyError | None = None
        for address in addresses[:2]:
            try:
                return await self._fetch_from(domain, host, address)
            except _Unreachable as exc:
                last = PolicyError("fetch", exc.reason)
        raise last or PolicyError("fetch", f"{host}: no address")

    async def _fetch_from(self, domain: str, host: str, address: str) -> str:
        ip = ipaddress.ip_address(address)
        netloc = f"[{ip}]" if ip.version == 6 else str(ip)
        url = f"https://{netloc}:{self._port}{WELL_KNOWN}"
        shown = policy_url(domain, self._port)
        authority = host if self._port == 443 else f"{host}:{self._port}"
        try:
            async with self._client.stream(
                "GET", url, headers={"Host": authority}, extensions={"sni_hostname": host}
            ) as response:
                if response.is_redirect:
                    where = response.headers.get("location", "?")
                    raise PolicyError(
                        "fetch",
                        f"{shown}: redirect ({response.status_code}) to {where[:200]} "
                        "not followed (RFC 8461 §3.3)",
                    )
                if response.status_code != 200:
                    raise PolicyError("fetch", f"{shown}: HTTP {response.status_code}")
                media = response.headers.get("content-type", "")
                if media.partition(";")[0].strip().lower() != "text/plain":
                    raise PolicyError(
                        "fetch", f"{shown}: media type {media or 'none'!r}, not text/plain"
                    )
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_POLICY_BYTES:
                        raise PolicyError("fetch", f"{shown}: larger than {MAX_POLICY_BYTES} bytes")
        except httpx.TimeoutException as exc:
            raise PolicyError("fetch", f"{shown}: timed out after {self._timeout:g}s") from exc
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise _Unreachable("fetch", f"{shown} [{address}]: cannot connect: {exc}") from exc
        except httpx.HTTPError as exc:
            raise PolicyError("fetch", f"{shown}: {exc}") from exc
        try:
            return bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError("fetch", f"{shown}: body is not UTF-8 text") from exc

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Unreachable(PolicyError):
    """One address of the policy host could not be reached; the next is
    tried (internal to this module)."""
