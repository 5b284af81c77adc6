"""The httpx seam: one POST to the address that was checked.

httpx resolves the URL's host itself when it connects; here its pool
(httpcore) gets a network backend that connects to the checked address
instead, whatever host it is asked for. The URL keeps the name, so the
Host header, TLS SNI and the certificate check are about the name. Redirects
are not followed. httpx exceptions are translated here into WebhookFailed.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpcore
import httpx

from mailer import __version__
from mailer.errors import WebhookFailed

EXCERPT = 500  # characters of a reply body kept in the delivery log
EXCERPT_BYTES = 2000  # bytes read of it at most
USER_AGENT = f"mailer-webhooks/{__version__}"


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects every TCP connection to one address."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            self._address,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, address: str, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False)
        # httpx takes no network backend; the pool it wraps (httpcore's) does
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            keepalive_expiry=30.0,
            network_backend=_PinnedBackend(address),
        )


def ssl_context(cafile: Path | None) -> ssl.SSLContext:
    """Certificates verified against the system's CAs (and ``cafile``)."""
    context = ssl.create_default_context()
    if cafile is not None:
        context.load_verify_locations(cafile)
    return context


@dataclass(frozen=True)
class Reply:
    status: int
    retry_after: str | None
    excerpt: str
    latency: float


class PinnedClient:
    """An httpx client whose connections all go to ``address``."""

    def __init__(
        self,
        address: str,
        context: ssl.SSLContext,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.address = address
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client = httpx.AsyncClient(
            transport=_PinnedTransport(address, context),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT},
        )

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        content_type: str = "application/json",
    ) -> Reply:
        """POST ``body``; the reply's status, ``Retry-After`` and the start
        of its body. Raises WebhookFailed when there is no HTTP reply."""
        started = time.monotonic()
        request = self._client.build_request(
            "POST", url, content=body, headers={**headers, "content-type": content_type}
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                # only the start of the reply is kept: a receiver cannot make
                # the worker read (or hold) an endless body
                head = b""
                async for chunk in response.aiter_bytes():
                    head += chunk
                    if len(head) >= EXCERPT_BYTES:
                        break
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise WebhookFailed(f"timeout: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
        latency = time.monotonic() - started
        excerpt = head[:EXCERPT_BYTES].decode("utf-8", "replace")[:EXCERPT]
        return Reply(response.status_code, response.headers.get("retry-after"), excerpt, latency)

    async def close(self) -> None:
        await self._client.aclose()
