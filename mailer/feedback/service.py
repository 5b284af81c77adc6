"""The inbound listener and its processor as one running service, for
``mailer inbound`` and ``mailer serve`` (``[inbound] listen``)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from types import TracebackType
from typing import Self

from mailer.config import Config
from mailer.dev.certs import TestCerts
from mailer.errors import ConfigError
from mailer.feedback.circuit import Breaker
from mailer.feedback.listener import InboundListener
from mailer.feedback.processor import Matcher, Processor
from mailer.metrics import Metrics
from mailer.store.base import Store
from mailer.store.models import FeedbackResult, Inbound

__all__ = ["FeedbackService", "matcher_for"]


def matcher_for(config: Config) -> Matcher:
    return Matcher(
        config.feedback.secret,
        frozenset({config.bounce_domain}),
        feedback_template=config.feedback.feedback_id,
        sender_id=config.feedback.sender_id,
    )


class FeedbackService:
    """``async with FeedbackService(config, store, host=…, port=…)``: the
    listener bound (``port`` 0 picks one), the processor running (first
    over what a previous run left pending). ``dev`` presents a throw-away
    certificate when none is configured.

    Raises ConfigError for a certificate that cannot be loaded or an
    address that cannot be bound.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        host: str,
        port: int,
        dev: bool = False,
        on_processed: Callable[[Inbound, FeedbackResult], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.breaker = Breaker(store, config.feedback.breaker, metrics=metrics)
        self.processor = Processor(
            store, matcher_for(config), on_processed=on_processed, breaker=self.breaker
        )
        self._certs: TestCerts | None = None
        tls = self._tls(dev)
        inbound = config.inbound
        self.listener = InboundListener(
            store,
            host=host,
            port=port,
            accept_domains=frozenset({config.bounce_domain}),
            accept_addresses=frozenset(config.feedback.loop_addresses),
            tls=tls,
            hostname=config.hostname,
            max_size=inbound.max_size,
            max_sessions=inbound.max_sessions,
            on_stored=self.processor.wake,
        )
        self._tasks: list[asyncio.Task[None]] = []

    def _tls(self, dev: bool) -> ssl.SSLContext | None:
        inbound = self.config.inbound
        if inbound.tls_cert is not None:
            if inbound.tls_key is None:
                raise ConfigError("inbound.tls_key", "a key is needed with inbound.tls_cert")
            try:
                return TestCerts.server_context((inbound.tls_cert, inbound.tls_key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("inbound.tls_cert", f"cannot load: {exc}") from exc
        if dev:
            self._certs = TestCerts()
            files = self._certs.issue([self.config.hostname, "localhost", "127.0.0.1"])
            return TestCerts.server_context(files)
        return None

    async def __aenter__(self) -> Self:
        try:
            await self.listener.start()
        except OSError as exc:
            self._close_certs()
            raise ConfigError(
                "inbound.listen", f"cannot listen on {self.listener.address}: {exc.strerror}"
            ) from exc
        self._tasks = [
            asyncio.create_task(self.processor.run()),
            asyncio.create_task(self.breaker.run()),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.listener.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._close_certs()

    def _close_certs(self) -> None:
        if self._certs is not None:
            self._certs.close()
            self._certs = None
