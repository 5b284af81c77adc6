"""The service assembled from its configuration: store, resolver,
connector, message preparation and the engine, opened and closed in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from mailer.config import Config, TLSPolicy
from mailer.delivery.connector import Connector
from mailer.delivery.engine import Engine
from mailer.delivery.tls.counter import TLSCounter
from mailer.delivery.tls.fetch import PolicyFetcher
from mailer.delivery.tls.sts import FetchFailure, PolicySource
from mailer.dns import Resolver
from mailer.enqueue import EnqueueResult, Recipient, Rejected
from mailer.errors import ConfigError, StoreError
from mailer.identity.aligned import AlignedDomains
from mailer.identity.sender import IdentityDecider
from mailer.intake import Intake
from mailer.message.keys import KeyStore, SigningKey
from mailer.message.signing import Signer
from mailer.message.unsubscribe import UnsubscribeLinks, links_from_config
from mailer.message.verp import feedback_id, make_return_path
from mailer.metrics import Metrics, MetricsServer
from mailer.prepare import FeedbackIdFn, Prepared, Preparer, ReturnPathFn, SignFn, decided_by
from mailer.reasons import Reason, State
from mailer.store import Store, is_postgres, open_store
from mailer.store.models import Distribution, NewDistribution, Send
from mailer.tlsrpt import Reporter
from mailer.tlsrpt.mail import REPORT_SIGNED_HEADERS
from mailer.webhooks import Dispatcher, Webhooks
from mailer.webhooks.metrics import WebhookMetrics

log = logging.getLogger(__name__)


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
        self,
        config: Config,
        *,
        store: Store | None = None,
        metrics: Metrics | None = None,
        existing: bool = False,
    ) -> None:
        """With ``existing``, opening refuses an SQLite database that does
        not exist yet (commands that only read or change what is there must
        not leave an empty database behind a typo in ``database``)."""
        self.config = config
        self._existing = existing
        self._store = store
        self.metrics = metrics or Metrics(destinations=config.metrics.destinations)
        self._metrics_server: MetricsServer | None = None
        self.resolver = Resolver(
            config.nameservers,
            timeout=config.worker.dns_timeout,
            trust_ad=config.dnssec == "trust-ad",
        )
        self.keys = KeyStore(config.keys_dir)
        self._signer: Signer | None = None
        self._identity: IdentityDecider | None = None
        self._signing: ThreadPoolExecutor | None = None
        self._policies: PolicySource | None = None
        self._webhook_metrics: WebhookMetrics | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the app is not open")
        return self._store

    async def __aenter__(self) -> Self:
        """Raises ConfigError("database") with ``existing`` when the SQLite
        file is missing, StoreError when the store cannot be opened."""
        if self._store is None:
            database = self.config.database
            # one stat of a local file, at start
            missing = not is_postgres(database) and not Path(database).exists()  # noqa: ASYNC240
            if self._existing and missing:
                raise ConfigError(
                    "database",
                    f"{database} does not exist (nothing was ever queued there; "
                    "check the database setting)",
                )
            self._store = open_store(database)
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
        if self._policies is not None:
            await self._policies.aclose()
            self._policies = None
        await self.store.close()

    def connector(self) -> Connector:
        """A connector for one engine; its TLS sessions are counted for TLS
        reports when ``tlsrpt.count`` is on."""
        cfg = self.config
        return Connector(
            self.resolver,
            helo=cfg.hostname,
            port=cfg.smtp_port,
            relay=cfg.relay_address,
            timeout=cfg.worker.smtp_timeout,
            cafile=str(cfg.tls.cafile) if cfg.tls.cafile else None,
            on_testing_failure=self.metrics.mta_sts_testing_failure,
            tls_counter=TLSCounter() if cfg.tlsrpt.count else None,
        )

    def policies(self) -> PolicySource:
        """The MTA-STS policy source, one per app so that every engine of
        the process shares its memory. Raises ConfigError for an unreadable
        ``mta_sts.test_cafile``."""
        if self._policies is None:
            cfg = self.config.mta_sts
            metrics = self.metrics

            def failed(failure: FetchFailure) -> None:
                metrics.mta_sts_fetch_failure(failure.domain, failure.field)

            fetcher = PolicyFetcher(
                self.resolver,
                timeout=cfg.fetch_timeout,
                port=cfg.test_port,
                cafile=str(cfg.test_cafile) if cfg.test_cafile else None,
            )
            self._policies = PolicySource(
                self.store, self.resolver, fetcher, recheck=cfg.recheck, on_failure=failed
            )
        return self._policies

    def _load_keys(self) -> dict[str, list[SigningKey]]:
        keys, problems = self.keys.load_usable(self.config.dkim_domain)
        for problem in problems:
            # that domain's mail goes out signed by our domain only (or
            # from the neutral sender); every other domain is unaffected
            log.error("DKIM key left out, its domain is not signed for: %s", problem)
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
            # decided per domain on first use and refreshed: DNS trouble at
            # start-up must not keep a worker from starting
            aligned: AlignedDomains | list[str] = []
            if cfg.dkim.alignment:
                customer_keys = {
                    domain: domain_keys
                    for domain, domain_keys in self._load_keys().items()
                    if domain != cfg.dkim_domain
                }
                aligned = AlignedDomains(self.resolver, customer_keys)
            self._identity = IdentityDecider(
                self.resolver,
                outbound_ip=cfg.spf_addresses,
                neutral_sender=region.neutral_sender,
                bounce_address=region.envelope_sender,
                min_ttl=cfg.identity.min_ttl,
                max_ttl=cfg.identity.max_ttl,
                dkim_domains=aligned,
                dkim_alignment=cfg.dkim.alignment,
            )
        return self._identity

    def unsubscribe_links(self) -> UnsubscribeLinks | None:
        """The service's own one-click unsubscribe links (``[api]`` secret,
        public_url, unsubscribe); None when not configured or switched off."""
        api = self.config.api
        return links_from_config(api.secret, api.public_url, enabled=api.unsubscribe)

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
            unsubscribe=self.unsubscribe_links(),
            return_path=self.return_path(),
            feedback_id=self.feedback_id(),
        )

    def return_path(self) -> ReturnPathFn | None:
        """The per-send return path (VERP); None without ``feedback.secret``."""
        secret = self.config.feedback.secret
        if secret is None:
            return None
        domain = self.config.bounce_domain

        def return_path(send: Send) -> str:
            return make_return_path(send.id, secret=secret, domain=domain)

        return return_path

    def feedback_id(self) -> FeedbackIdFn:
        """The Feedback-ID header of every message."""
        cfg = self.config.feedback

        def value(send: Send, distribution: Distribution) -> str:
            return feedback_id(
                cfg.feedback_id,
                distribution=distribution.id,
                account=send.account,
                sender=cfg.sender_id,
            )

        return value

    async def engine(
        self, *, owner: str | None = None, clock: Callable[[], float] = time.time
    ) -> Engine:
        """A worker counting into ``self.metrics``; with ``worker.metrics_port``
        set, the first engine also starts serving /metrics until the app
        closes. ``clock`` is the engine's time (leases, due times, max age):
        tests move it instead of waiting. Raises ConfigError when DKIM keys
        are required and missing or a CA file cannot be read, OSError when
        the metrics port cannot be bound."""
        connector = self.connector()
        # Built before the first connection needs it rather than by the
        # first few at once: MTA-STS enforce and `verify` verify
        # certificates, and loading the system CA store takes a while.
        await connector.contexts.aget(TLSPolicy.VERIFY, connector.cafile)
        engine = Engine(
            self.config,
            self.store,
            connector,
            await self.preparer(),
            owner=owner,
            clock=clock,
            metrics=self.metrics,
            policies=self.policies(),
        )
        cfg = self.config.worker
        if cfg.metrics_port is not None and self._metrics_server is None:
            server = MetricsServer(self.metrics, self.store, cfg.metrics_host, cfg.metrics_port)
            await server.start()
            self._metrics_server = server
        return engine

    def webhooks(self) -> Webhooks:
        """The accounts' webhook endpoints (registration, replay, log)."""
        return Webhooks(self.config, self.store, self.resolver)

    def tls_reporter(self, *, owner: str, clock: Callable[[], float] = time.time) -> Reporter:
        """The TLS report loop of a worker (RFC 8460). Its mail is signed
        with our domain's DKIM key, the report header fields included;
        without a key it goes to https URIs only."""
        keys = self._load_keys()
        signer = None
        if self.config.dkim_domain in keys:
            signer = Signer(keys, our_domain=self.config.dkim_domain, headers=REPORT_SIGNED_HEADERS)
        cfg = self.config
        connector = Connector(
            self.resolver,
            helo=cfg.hostname,
            port=cfg.smtp_port,
            relay=cfg.relay_address,
            timeout=cfg.tlsrpt.timeout,
        )
        return Reporter(
            cfg,
            self.store.tlsrpt,
            self.resolver,
            connector,
            signer,
            owner=owner,
            clock=clock,
            metrics=self.metrics,
        )

    def dispatcher(self, *, owner: str) -> Dispatcher:
        """The webhook delivery loop of a worker, counting into
        ``self.metrics``' registry."""
        if self._webhook_metrics is None:
            self._webhook_metrics = WebhookMetrics(self.metrics.registry)
        return Dispatcher(
            self.config, self.store, self.resolver, owner=owner, metrics=self._webhook_metrics
        )

    async def enqueue(
        self, distribution: NewDistribution, recipients: Sequence[Recipient]
    ) -> EnqueueResult:
        """Validate and store through the one enqueue path of the service
        (:class:`mailer.intake.Intake`). Raises ValidationError naming the
        field, nothing stored."""
        links = self.unsubscribe_links()
        intake = Intake(
            self.store,
            self.config.hostname,
            links,
            idempotency_ttl=self.config.api.idempotency_ttl,
        )
        accepted = await intake.enqueue(distribution, recipients)
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
        intake = Intake(self.store, self.config.hostname, self.unsubscribe_links())
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
