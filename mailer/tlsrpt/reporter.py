"""The worker's TLS report loop (RFC 8460 §5): every ``tlsrpt.interval``
it claims the reports of finished days from the store (a lease per day and
domain, so two workers never send one report), looks up the domain's
``_smtp._tls`` record, builds the report from the day's counts and
delivers it to every ``rua`` URI: https by POST, mailto by mail.

A report is finished when one URI took it; otherwise it is due again after
a growing delay, up to ``tlsrpt.max_tries``. A worker that dies while
sending leaves its lease to run out, and the report is due again: at worst
a report is sent twice, never lost.

Report mail goes through the service's own connector with STARTTLS
required but the certificate not checked, whatever the domain's MTA-STS
policy or the configured level (``TLS-Required: No``, RFC 8689): the
report tells a domain that its TLS is broken, so broken TLS must not stop
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailer import __version__
from mailer.config import Config, TLSPolicy
from mailer.delivery.connector import Connector
from mailer.delivery.tls.counter import utc_day
from mailer.delivery.tls.report import (
    MEDIA_TYPE,
    ReportURI,
    build_report,
    encode_report,
    report_filename,
    select_record,
)
from mailer.dns import Resolver
from mailer.errors import DNSError, MailerError, ValidationError
from mailer.message.signing import Signer
from mailer.metrics import Metrics
from mailer.store.tlsrpt import ReportJob, ReportState, TLSReportStore
from mailer.tlsrpt.mail import ReportMail, compose
from mailer.webhooks import policy as webhook_policy
from mailer.webhooks.guard import checked_address
from mailer.webhooks.transport import PinnedClient, ssl_context

log = logging.getLogger(__name__)

USER_AGENT = f"mailer-tlsrpt/{__version__}"
# reports claimed at once by one worker
CLAIM = 20


class ReportFailed(MailerError):
    """One report URI did not take the report."""


@dataclass(frozen=True)
class Submitter:
    """Who the reports come from: the ``tlsrpt`` settings with their
    defaults filled in from the DKIM domain."""

    domain: str
    organization: str
    contact: str
    from_address: str

    @classmethod
    def from_config(cls, config: Config) -> Submitter:
        cfg = config.tlsrpt
        domain = cfg.submitter or config.dkim_domain
        return cls(
            domain=domain,
            organization=cfg.organization or config.dkim_domain,
            contact=cfg.contact or f"postmaster@{domain}",
            from_address=cfg.from_address or f"noreply-tlsrpt@{domain}",
        )

    def report_id(self, day: str, domain: str) -> str:
        """The same on every try of one report: a receiver recognises a
        report sent twice."""
        return f"{day}.{domain}@{self.domain}"


class Reporter:
    """Sends the daily TLS reports of one worker; ``run()`` until stopped,
    or ``run_once()`` for one round."""

    def __init__(
        self,
        config: Config,
        store: TLSReportStore,
        resolver: Resolver,
        connector: Connector,
        signer: Signer | None,
        *,
        owner: str,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.cfg = config.tlsrpt
        self.store = store
        self.resolver = resolver
        self.connector = connector
        self.signer = signer
        self.owner = owner
        self.clock = clock
        self.submitter = Submitter.from_config(config)
        self.allowed = webhook_policy.allow_networks(self.cfg.allow)
        self._context = ssl_context(self.cfg.cafile)
        self._stopping = asyncio.Event()
        # the day before which counts were last pruned (once a day is enough)
        self._pruned_before: str | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except MailerError as exc:
                # a busy store: the reports wait for the next round
                log.warning("TLS reports: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.cfg.interval)

    async def run_once(self) -> int:
        """Send the reports due now; returns how many were claimed. Raises
        StoreError."""
        now = self.clock()
        jobs = await self.store.claim_reports(
            self.owner,
            before_day=utc_day(now),
            limit=CLAIM,
            lease_seconds=self.cfg.lease_seconds,
            now=now,
        )
        for job in jobs:
            await self._report(job)
        keep = utc_day(now - self.cfg.keep_days * 86400)
        if keep != self._pruned_before:
            pruned = await self.store.prune_reports(before_day=keep)
            self._pruned_before = keep
            if pruned:
                log.info("TLS reports: %d count rows from before %s removed", pruned, keep)
        return len(jobs)

    def report_id(self, job: ReportJob) -> str:
        return self.submitter.report_id(job.day, job.domain)

    async def _report(self, job: ReportJob) -> None:
        try:
            answer = await self.resolver.txt(f"_smtp._tls.{job.domain}")
            record = select_record(answer.records)
        except DNSError as exc:
            if exc.temporary:
                await self._again(job, f"DNS: {exc}")
            else:
                await self._finish(job, "no-record", f"DNS: {exc}")
            return
        except ValidationError as exc:
            await self._finish(job, "no-record", f"_smtp._tls record: {exc}")
            return
        if record is None:
            await self._finish(job, "no-record", None)
            return
        counts = await self.store.counts(job.day, job.domain)
        report_id = self.report_id(job)
        body = encode_report(
            build_report(
                counts,
                domain=job.domain,
                day=job.day,
                organization=self.submitter.organization,
                report_id=report_id,
                contact=self.submitter.contact,
            )
        )
        errors: list[str] = []
        for uri in record.rua:
            try:
                await self._deliver(uri, job, report_id, body)
            except MailerError as exc:
                errors.append(f"{uri.scheme}:{uri.target}: {exc}")
                if self.metrics is not None:
                    self.metrics.tls_report_delivery(uri.scheme, ok=False)
            else:
                if self.metrics is not None:
                    self.metrics.tls_report_delivery(uri.scheme, ok=True)
        taken = len(record.rua) - len(errors)
        if taken:
            await self._finish(job, "sent", "; ".join(errors) or None)
            log.info("TLS report for %s (%s) sent to %d URI(s)", job.domain, job.day, taken)
        else:
            await self._again(job, "; ".join(errors))

    async def _deliver(self, uri: ReportURI, job: ReportJob, report_id: str, body: bytes) -> None:
        if uri.scheme == "https":
            await self._post(uri.target, body)
        else:
            await self._mail(uri.target, job, report_id, body)

    async def _post(self, url: str, body: bytes) -> None:
        """Raises ReportFailed, ValidationError (a refused address) or
        DNSError."""
        target = webhook_policy.parse_url(url, allow_insecure=False, field="rua")
        address = await checked_address(self.resolver, target, self.allowed, field="rua")
        client = PinnedClient(
            str(address),
            self._context,
            connect_timeout=self.cfg.timeout,
            read_timeout=self.cfg.timeout,
        )
        try:
            reply = await client.post(
                url, {"user-agent": USER_AGENT}, body, content_type=MEDIA_TYPE
            )
        finally:
            await client.close()
        if not 200 <= reply.status < 300:
            raise ReportFailed(f"HTTP {reply.status}: {reply.excerpt[:200]}")

    async def _mail(self, address: str, job: ReportJob, report_id: str, body: bytes) -> None:
        """Raises ReportFailed, DeliveryError, RouteFailure or DNSError."""
        if self.signer is None:
            raise ReportFailed("no DKIM key to sign report mail with (RFC 8460 §5.3)")
        now = self.clock()
        data = compose(
            ReportMail(
                from_address=self.submitter.from_address,
                to_address=address,
                domain=job.domain,
                submitter=self.submitter.domain,
                report_id=report_id,
                filename=report_filename(self.submitter.domain, job.domain, job.day),
                body=body,
            ),
            now=now,
            message_id_domain=self.submitter.domain,
        )
        signed = self.signer.sign(data)
        domain = address.rpartition("@")[2]
        # STARTTLS required, the certificate not checked (TLS-Required: No)
        session = await self.connector.connect(domain, TLSPolicy.ENCRYPT)
        try:
            await session.send(self.submitter.from_address, address, signed)
        finally:
            await session.close()

    async def _again(self, job: ReportJob, detail: str) -> None:
        tries = job.tries + 1
        if tries >= self.cfg.max_tries:
            log.warning("TLS report for %s (%s) given up: %s", job.domain, job.day, detail)
            await self._finish(job, "failed", detail)
            return
        delay = self.cfg.retry_delay * 2 ** min(job.tries, 20)
        log.info("TLS report for %s (%s) not sent, will retry: %s", job.domain, job.day, detail)
        await self.store.finish_report(
            self.owner, job.id, "due", now=self.clock(), next_at=self.clock() + delay, detail=detail
        )
        if self.metrics is not None:
            self.metrics.tls_report("retry")

    async def _finish(self, job: ReportJob, state: ReportState, detail: str | None) -> None:
        await self.store.finish_report(self.owner, job.id, state, now=self.clock(), detail=detail)
        if self.metrics is not None:
            self.metrics.tls_report(state)
