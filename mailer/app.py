"""The service assembled from its configuration: store, resolver,
connector, message preparation and the engine, opened and closed in order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from mailer.config import Config
from mailer.delivery.connector import Connector
from mailer.delivery.engine import Engine
from mailer.dns import Resolver
from mailer.enqueue import EnqueueResult, Recipient, Rejected
from mailer.errors import ConfigError, StoreError
from mailer.identity.sender import IdentityDecider
from mailer.intake import Intake
from mailer.message.keys import KeyStore, SigningKey, check_published
from mailer.message.signing import Signer
from mailer.message.unsubscribe import links_from_config
from mailer.metrics import Metrics, MetricsServer
from mailer.prepare import Prepared, Preparer, SignFn, decided_by
from mailer.reasons import Reason, State
from mailer.store import Store, open_store
from mailer.store.models import Distribution, NewDistribution, Send


@dataclass(frozen=True)
class Preview:
    """``mailer send --dry-run``: the first valid recipient's message as a
    worker would build it now, and what the whole request would enqueue."""

    prepared: Prepared
    accepted: int
    rejected: list[Rejected]


class App:
    """``async with App(config) as app:`` opens the store; ``await app.engine()``
    builds a worker over it."""

    def __init__(
        self, config: Config, *, store: Store | None = None, metrics: Metrics | None = None
    ) -> None:
        self.config = config
        self._store = store
        self.metrics = metrics or Metrics(destinations=config.metrics.destinations)
        self._metrics_server: MetricsServer | None = None
        self.resolver = Resolver(
            config.nameservers,
            timeout=config.worker.dns_timeout,
        )
        self.keys = KeyStore(config.keys_dir)
        self._signer: Signer | None = None
        self._identity: IdentityDecider | None = None
        self._signing: ThreadPoolExecutor | None = None

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
        if self._metrics_server is not None:
            await self._metrics_server.close()
            self._metrics_server = None
        if self._signing is not None:
            self._signing.shutdown(wait=True)
            self._signing = None
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

    def _load_keys(self) -> dict[str, list[SigningKey]]:
        keys = self.keys.load_all() if self.config.keys_dir.is_dir() else {}
        if self.config.dkim.required and self.config.dkim_domain not in keys:
            raise ConfigError(
                "dkim.domain",
                f"no DKIM key for {self.config.dkim_domain} in {self.config.keys_dir} "
                f"(create one with: mailer keys generate {self.config.dkim_domain})",
            )
        return keys

    def signer(self) -> Signer | None:
        """Our DKIM signer, keys loaded once; None when no key is configured
        and the config allows unsigned mail (``dkim.required = false``)."""
        if self._signer is None:
            keys = self._load_keys()
            if self.config.dkim_domain in keys:
                self._signer = Signer(keys, our_domain=self.config.dkim_domain)
        return self._signer

    async def identity(self) -> IdentityDecider:
        """The sender-identity decider, one per app so that its cache is
        shared by every connection."""
        if self._identity is None:
            cfg = self.config
            region = cfg.region_settings
            aligned: list[str] = []
            if cfg.dkim.alignment:
                for domain, domain_keys in self._load_keys().items():
                    if domain == cfg.dkim_domain:
                        continue
                    checks = [await check_published(self.resolver, k) for k in domain_keys]
                    if any(check.ok for check in checks):
                        aligned.append(domain)
            self._identity = IdentityDecider(
                self.resolver,
                outbound_ip=cfg.outbound_ip,
                neutral_sender=region.neutral_sender,
                bounce_address=region.envelope_sender,
                min_ttl=cfg.identity.min_ttl,
                max_ttl=cfg.identity.max_ttl,
                dkim_domains=aligned,
                dkim_alignment=cfg.dkim.alignment,
            )
        return self._identity

    async def preparer(
        self, load: Callable[[str], Awaitable[Distribution]] | None = None
    ) -> Preparer:
        """The message builder; ``load`` finds a distribution (default: the
        store)."""
        signer = self.signer()
        sign: SignFn | None = None
        if signer is not None:
            threads = self.config.dkim.signing_threads
            if threads == 0:

                async def sign(data: bytes, domain: str) -> bytes:
                    return signer.sign(data, customer_domain=domain)

            else:
                # The private-key operations run on threads beside the event
                # loop: OpenSSL releases the GIL for them, and RSA is the
                # largest single cost of a message.
                if self._signing is None:
                    self._signing = ThreadPoolExecutor(threads, thread_name_prefix="mailer-dkim")
                pool = self._signing

                async def sign(data: bytes, domain: str) -> bytes:
                    return await signer.sign_beside(data, pool, customer_domain=domain)

        return Preparer(
            load or self.store.distribution,
            identity=decided_by(await self.identity()),
            sign=sign,
            unsubscribe=links_from_config(self.config.api.secret, self.config.api.public_url),
        )

    async def engine(self, *, owner: str | None = None) -> Engine:
        """A worker counting into ``self.metrics``; with ``worker.metrics_port``
        set, the first engine also starts serving /metrics until the app
        closes. Raises ConfigError when DKIM keys are required and missing,
        OSError when the metrics port cannot be bound."""
        engine = Engine(
            self.config,
            self.store,
            self.connector(),
            await self.preparer(),
            owner=owner,
            metrics=self.metrics,
        )
        cfg = self.config.worker
        if cfg.metrics_port is not None and self._metrics_server is None:
            server = MetricsServer(self.metrics, self.store, cfg.metrics_host, cfg.metrics_port)
            await server.start()
            self._metrics_server = server
        return engine

    async def enqueue(
        self, distribution: NewDistribution, recipients: Sequence[Recipient]
    ) -> EnqueueResult:
        """Validate and store through the one enqueue path of the service
        (:class:`mailer.intake.Intake`). Raises ValidationError naming the
        field, nothing stored."""
        links = links_from_config(self.config.api.secret, self.config.api.public_url)
        accepted = await Intake(self.store, self.config.hostname, links).enqueue(
            distribution, recipients
        )
        return EnqueueResult(
            accepted.distribution_id, [s.id for s in accepted.sends], accepted.rejected
        )

    async def preview(
        self, distribution: NewDistribution, recipients: Sequence[Recipient], *, now: float
    ) -> Preview:
        """Validate like :meth:`enqueue`, then build the first accepted
        recipient's message (identity decision, DKIM included); stores
        nothing. Raises ValidationError naming the field, and whatever
        preparing a message raises (DNS, templates)."""
        links = links_from_config(self.config.api.secret, self.config.api.public_url)
        intake = Intake(self.store, self.config.hostname, links)
        sends, rejected = intake.validate(distribution, recipients)
        first = sends[0]
        stored = Distribution(
            id="dry-run",
            account=distribution.account,
            sender_address=distribution.sender_address,
            sender_name=distribution.sender_name,
            subject=distribution.subject,
            html=distribution.html,
            text=distribution.text,
            unsubscribe_url=distribution.unsubscribe_url,
            send_at=distribution.send_at,
            tags=tuple(distribution.tags),
            created_at=now,
        )

        async def load(_: str) -> Distribution:
            return stored

        send = Send(
            id="dry-run",
            distribution_id=stored.id,
            account=stored.account,
            recipient=first.recipient,
            domain=first.recipient.rpartition("@")[2],
            name=first.name,
            variables=first.variables,
            reference=first.reference,
            message_id=f"<dry-run@{self.config.hostname}>",
            state=State.QUEUED,
            reason=Reason.QUEUED,
            due_at=now,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        prepared = await (await self.preparer(load)).prepare(send, now=now)
        return Preview(prepared, len(sends), rejected)
