"""The service assembled from its configuration: store, resolver,
connector, message preparation and the engine, opened and closed in order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from mailer.config import Config
from mailer.delivery import Connector
from mailer.dns import Resolver
from mailer.engine import Engine
from mailer.enqueue import EnqueueResult, RecipientInput, enqueue
from mailer.errors import StoreError
from mailer.prepare import Preparer
from mailer.store import Store, open_store
from mailer.store.models import NewDistribution


class App:
    """``async with App(config) as app:`` opens the store; ``app.engine()``
    builds a worker over it."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self._store = store
        self.resolver = Resolver(
            config.nameservers,
            timeout=config.worker.dns_timeout,
        )

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the app is not open")
        return self._store

    async def __aenter__(self) -> Self:
        if self._store is None:
            self._store = open_store(self.config.database)
        await self._store.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.store.close()

    def connector(self) -> Connector:
        cfg = self.config
        return Connector(
            self.resolver,
            helo=cfg.hostname,
            port=cfg.smtp_port,
            relay=cfg.relay_address,
            timeout=cfg.worker.smtp_timeout,
            cafile=str(cfg.tls.cafile) if cfg.tls.cafile else None,
        )

    def preparer(self) -> Preparer:
        return Preparer(self.store.distribution)

    def engine(self, *, owner: str | None = None) -> Engine:
        return Engine(self.config, self.store, self.connector(), self.preparer(), owner=owner)

    async def enqueue(
        self, distribution: NewDistribution, recipients: Sequence[RecipientInput]
    ) -> EnqueueResult:
        return await enqueue(
            self.store,
            distribution,
            recipients,
            hostname=self.config.hostname,
            now=time.time(),
        )
