"""The developer sink: the test kit's SMTP sink plus what a receiver would
tell about each message (DKIM per signature, header checks), a Maildir
that ordinary mail tools read, and the fault rehearsal of `mailer sink`.

Threads: the SMTP server runs on the test kit's loop thread and only hands
each accepted message over; a second server thread with its own loop
(:class:`mailer.loop.ServerThread`) has each message checked (the DKIM key
lookups, the verification and the header checks: CPU work, done there or,
with ``options.check_processes``, in that many worker processes side by
side), so the SMTP side keeps accepting meanwhile; a third writes the
Maildir (mostly an fsync, which leaves the interpreter free for the next
check). Messages are stored and listed in the order they arrived, however
their checks interleave.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import dataclasses
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from mailer.config import Config
from mailer.dev.certs import CertFiles, TestCerts
from mailer.loop import ServerThread
from mailer.sink.control import FaultControl
from mailer.sink.examine import CheckSetup, Examiner, ExaminerPool, Findings
from mailer.sink.maildir import MaildirStore
from mailer.sink.options import BadCert, SinkOptions
from mailer.sink.record import SinkMessage
from mailer.sink.rehearsal import Rehearsal
from mailer.sink.report import trace_headers
from mailer.sink.runner import Sink, certificate_names
from mailer.sink.smtpd import Recorder, Refusal, Transaction

__all__ = ["DevSink"]

log = logging.getLogger(__name__)

_DRAIN_ON_STOP = 10.0
# messages written to the Maildir in one go at most (each holds a file open)
_STORE_BATCH = 64


class DevSink(FaultControl):
    """A running developer sink (``start()``/``stop()``, or ``with`` /
    ``async with``), its faults changeable while it runs
    (:class:`~mailer.sink.control.FaultControl`).

    ``nameservers`` are where DKIM keys are looked up (``host:port``; an
    empty sequence means the system resolver, None means no DNS at all);
    ``keys_dir`` is the key store whose public keys stand in for selectors
    DNS does not publish. ``certs`` is the CA that issues the sink's
    certificate (a throw-away one is made when None). ``on_message`` is
    called on the checking thread for each message once it is checked and
    stored (on the SMTP thread as it arrives when ``options.check`` is
    False), ``on_refusal`` on the SMTP thread for each reply refused on
    purpose; both must return quickly (:meth:`listen` adds more message
    listeners). ``sender_ip`` is the sending node's public address SPF is
    evaluated for (None: SPF is not evaluated).

    Raises ConfigError for a bad nameserver.
    """

    def __init__(
        self,
        options: SinkOptions | None = None,
        *,
        nameservers: Sequence[str] | None = None,
        keys_dir: Path | None = None,
        dns_timeout: float = 5.0,
        certs: TestCerts | None = None,
        on_message: Callable[[SinkMessage], None] | None = None,
        on_refusal: Callable[[Refusal], None] | None = None,
        sender_ip: str | None = None,
    ) -> None:
        self.options = options or SinkOptions()
        self._setup = CheckSetup(
            nameservers=None if nameservers is None else tuple(nameservers),
            keys_dir=keys_dir,
            dns_timeout=dns_timeout,
            sender_ip=sender_ip,
        )
        # checks in this process: without a pool, or when the pool broke
        self._examiner = Examiner(self._setup)
        self._pool: ExaminerPool | None = None
        self.certs = certs
        self._owned_certs: TestCerts | None = None
        self._listeners = [] if on_message is None else [on_message]
        self._on_refusal = on_refusal
        self._changed = threading.Condition()
        self._messages: deque[SinkMessage] = deque(maxlen=self.options.keep)
        self._received = 0
        self._checked = 0
        self._maildir: MaildirStore | None = None
        self._smtp: Sink | None = None
        self._checker: ServerThread | None = None
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        # done once the message accepted last has been queued for the
        # Maildir (or listed): the next one waits for it (checker loop only)
        self._turn: asyncio.Future[None] | None = None
        # checked messages waiting for the Maildir writer (checker loop only)
        self._to_store: list[tuple[SinkMessage, asyncio.Future[SinkMessage]]] = []
        self._storing: asyncio.Task[None] | None = None
        opts = self.options
        self.rehearsal: Rehearsal | None = None
        if opts.feedback_to is not None and (opts.bounce_after or opts.complain):
            self.rehearsal = Rehearsal(
                opts.feedback_to,
                bounce_rate=opts.bounce_after,
                complain_rate=opts.complain,
                hostname=opts.hostname,
                seed=opts.faults.seed,
                domains=opts.feedback_domains,
            )

    @classmethod
    def for_config(
        cls,
        config: Config,
        options: SinkOptions | None = None,
        *,
        certs: TestCerts | None = None,
        on_message: Callable[[SinkMessage], None] | None = None,
        on_refusal: Callable[[Refusal], None] | None = None,
    ) -> DevSink:
        """A sink that looks DKIM keys up where ``config`` points the
        service: its ``nameservers`` (empty: the system's), then its
        ``keys_dir``; SPF is evaluated for its ``outbound_ip``. Raises
        ConfigError for a bad nameserver."""
        return cls(
            options,
            nameservers=config.nameservers,
            keys_dir=config.keys_dir,
            dns_timeout=config.worker.dns_timeout,
            certs=certs,
            on_message=on_message,
            on_refusal=on_refusal,
            sender_ip=config.outbound_ip,
        )

    def listen(self, on_message: Callable[[SinkMessage], None]) -> None:
        """Also call ``on_message`` (on the checking thread, quickly) for
        each message once it is checked and stored."""
        with self._changed:
            self._listeners = [*self._listeners, on_message]

    # -- what arrived ---------------------------------------------------------

    @property
    def messages(self) -> list[SinkMessage]:
        """Checked messages, oldest first (at most ``options.keep``)."""
        with self._changed:
            return list(self._messages)

    def get(self, message_id: str) -> SinkMessage | None:
        with self._changed:
            return next((m for m in self._messages if m.id == message_id), None)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:
        """Block until ``count`` messages are checked; return them all.

        Raises TimeoutError if they are not there within ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._messages) >= count, timeout):
                got = len(self._messages)
                raise TimeoutError(f"sink has {got} of {count} messages after {timeout}s")
            return list(self._messages)

    async def await_messages(self, count: int, timeout: float = 10.0) -> list[SinkMessage]:  # noqa: ASYNC109
        """:meth:`wait_for` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.wait_for, count, timeout)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every message accepted so far is checked and stored.

        Raises TimeoutError when that takes longer than ``timeout`` seconds.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: self._checked >= self._received, timeout):
                pending = self._received - self._checked
                raise TimeoutError(f"{pending} messages still being checked after {timeout}s")

    async def await_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """:meth:`wait_idle` without blocking the caller's event loop."""
        await asyncio.to_thread(self.wait_idle, timeout)

    def delete(self, message_id: str) -> bool:
        """Forget one message (in memory and in the Maildir); False when
        there is no such message. Raises OSError when the Maildir file
        cannot be removed."""
        with self._changed:
            found = [m for m in self._messages if m.id == message_id]
            for message in found:
                self._messages.remove(message)
        if found and self._maildir is not None:
            self._maildir.remove(message_id)
        return bool(found)

    def clear(self) -> None:
        """Forget every message (in memory and in the Maildir), refusal and
        transaction; faults stay as they are."""
        with self._changed:
            self._messages.clear()
        self._kit().clear()
        if self._maildir is not None:
            self._maildir.clear()

    @property
    def refusals(self) -> list[Refusal]:
        return self._kit().refusals

    @property
    def transactions(self) -> list[Transaction]:
        return self._kit().transactions

    @property
    def dropped(self) -> list[SinkMessage]:
        return self._kit().dropped

    @property
    def connections(self) -> int:
        return self._kit().connections

    # -- where it is ----------------------------------------------------------

    @property
    def host(self) -> str:
        return self.options.host

    @property
    def port(self) -> int:
        """The bound port (the real one once started with port 0)."""
        return self._smtp.port if self._smtp is not None else self.options.port

    @property
    def address(self) -> str:
        """``host:port``, as the config's ``relay`` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def ca_path(self) -> Path | None:
        """The CA file a client trusts to verify this sink's certificate
        (None when the certificate came from ``--cert``)."""
        return None if self.certs is None else self.certs.ca_path

    @property
    def maildir(self) -> Path | None:
        return self.options.maildir

    # -- faults: FaultControl over the SMTP server's recorder -------------------

    def _fault_recorder(self) -> Recorder:
        return self._kit()._fault_recorder()

    def _kit(self) -> Sink:
        if self._smtp is None:
            raise RuntimeError("the sink is not started")
        return self._smtp

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> DevSink:
        """Open the Maildir, bind and serve.

        Raises OSError if the address cannot be bound or the Maildir not
        created, ssl.SSLError/OSError for unusable ``--cert`` files.
        """
        if self._smtp is not None:
            raise RuntimeError("sink already started")
        opts = self.options
        if opts.maildir is not None:
            self._maildir = MaildirStore(opts.maildir)
        if opts.check:
            if opts.check_processes:
                self._pool = ExaminerPool(self._setup, opts.check_processes)
                self._pool.start()
            self._turn = None
            self._checker = ServerThread("sink-checks", _nothing, _cancel_all)
            self._checker.start()
        if self._maildir is not None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, "sink-maildir")
        smtp = Sink(
            opts.host,
            opts.port,
            starttls=opts.starttls,
            certs=self._certs() if opts.starttls and opts.cert is None else None,
            hostname=opts.hostname,
            tls_cert=self._tls_cert(),
            keep=False,
            on_message=self._accepted if opts.check else self._recorded,
            on_refusal=self._on_refusal,
            faults=opts.faults,
        )
        for rule in opts.replies:
            smtp.script(rule.pattern, rule.reply, stage=rule.stage)
        try:
            smtp.start()
        except BaseException:
            self._stop_checker()
            self._close_certs()
            raise
        self._smtp = smtp
        return self

    def _certs(self) -> TestCerts:
        if self.certs is None:
            self.certs = self._owned_certs = TestCerts()
        return self.certs

    def _tls_cert(self) -> CertFiles | None:
        opts = self.options
        if not opts.starttls:
            return None
        if opts.cert is not None:
            return opts.cert
        names = certificate_names(opts.hostname, opts.host)
        if opts.bad_cert is BadCert.SELF_SIGNED:
            return self._certs().self_signed(names)
        if opts.bad_cert is BadCert.EXPIRED:
            return self._certs().expired(names)
        if opts.bad_cert is BadCert.WRONG_NAME:
            return self._certs().other_name()
        return None

    def stop(self) -> None:
        """Stop accepting, check and store everything that was accepted
        (every message answered 250: the backlog bounds how long that
        takes), stop the checker, remove owned certificates."""
        if self._smtp is not None:
            self._smtp.stop()
            while True:
                try:
                    self.wait_idle(_DRAIN_ON_STOP)
                    break
                except TimeoutError as exc:
                    log.warning("sink stopping: %s; still storing them", exc)
            self._smtp = None
        self._stop_checker()
        self._close_certs()

    @property
    def check_pids(self) -> tuple[int, ...]:
        """The processes checking messages besides this one (none without
        ``options.check_processes``, or once the pool broke)."""
        return tuple(self._pool.pids) if self._pool is not None else ()

    def _stop_checker(self) -> None:
        if self._checker is not None:
            self._checker.stop()
            self._checker = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._maildir is not None:
            self._maildir.close()

    def _close_certs(self) -> None:
        if self._owned_certs is not None:
            self._owned_certs.close()
            self._owned_certs = self.certs = None

    def __enter__(self) -> DevSink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> DevSink:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- checking -------------------------------------------------------------

    def _recorded(self, received: SinkMessage) -> None:
        """On the SMTP loop, for a sink that does not check: kept and
        told as it is."""
        message = dataclasses.replace(received, id=uuid.uuid4().hex)
        with self._changed:
            self._messages.append(message)
            listeners = self._listeners
            self._changed.notify_all()
        for listener in listeners:
            listener(message)

    def _accepted(self, received: SinkMessage) -> str | None:
        """On the SMTP loop: count it and hand it to the checker; or, with
        ``options.backlog`` messages waiting already, a 451 reply."""
        with self._changed:
            if self._received - self._checked >= self.options.backlog:
                return "451 4.3.1 sink busy: too many messages waiting to be checked, retry"
            self._received += 1
        assert self._checker is not None
        self._checker.submit(self._check(received))
        return None

    async def _check(self, received: SinkMessage) -> None:
        # messages are checked side by side but stored and listed in
        # arrival order: each waits for the one before it to be queued
        before = self._turn
        turn = self._turn = asyncio.get_running_loop().create_future()
        try:
            findings = await self._examine(received)
            checked = dataclasses.replace(
                received,
                dkim=findings.dkim,
                checks=findings.checks,
                spf=findings.spf,
                dmarc=findings.dmarc,
            )
            if before is not None:
                await before
            if self._writer is None:
                turn.set_result(None)
                message = dataclasses.replace(checked, id=uuid.uuid4().hex)
            else:
                stored = self._stored(checked)
                turn.set_result(None)
                message = await stored
            with self._changed:
                self._messages.append(message)
                listeners = self._listeners
            for listener in listeners:
                listener(message)
            if self.rehearsal is not None:
                self.rehearsal.consider(message)
        finally:
            if not turn.done():
                turn.set_result(None)
            with self._changed:
                self._checked += 1
                self._changed.notify_all()

    async def _examine(self, received: SinkMessage) -> Findings:
        """What the checks found, from the pool when there is one. A pool
        whose worker died is given up for this process's examiner: the
        message in hand, and every one after it, is still checked."""
        pool = self._pool
        if pool is not None:
            try:
                return await pool.examine(received.data, received.mail_from)
            except concurrent.futures.process.BrokenProcessPool as exc:
                if self._pool is pool:
                    log.error("a checking process died (%s); checking in the sink's own", exc)
                    self._pool = None
                    # its other processes end once what they hold is done
                    threading.Thread(target=pool.close, name="sink-pool-close", daemon=True).start()
            except Exception:  # a bug in the hand-over must not lose the message
                log.exception("checking a message in a worker process failed; checking it here")
        return await self._examiner.examine(received.data, received.mail_from)

    def _stored(self, message: SinkMessage) -> asyncio.Future[SinkMessage]:
        """``message`` once it is in the Maildir, with its key as id.

        Queued at once (in the order this is called); one writer thread
        stores what the checker has finished meanwhile as one batch, while
        the next messages are checked; the futures complete in that order."""
        future: asyncio.Future[SinkMessage] = asyncio.get_running_loop().create_future()
        self._to_store.append((message, future))
        if self._storing is None:
            self._storing = asyncio.create_task(self._store_batches())
        return future

    async def _store_batches(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._to_store:
                batch = self._to_store[:_STORE_BATCH]
                del self._to_store[:_STORE_BATCH]
                messages = [message for message, _ in batch]
                stored = await loop.run_in_executor(self._writer, self._store, messages)
                for (_, future), message in zip(batch, stored, strict=True):
                    future.set_result(message)
        finally:
            self._storing = None

    def _store(self, messages: list[SinkMessage]) -> list[SinkMessage]:
        """Into the Maildir with trace header fields; the messages with
        their keys as ids (random ids when the Maildir cannot be written)."""
        assert self._maildir is not None
        try:
            keys = self._maildir.add_many([(self._trace(m), m.data) for m in messages])
        except OSError as exc:
            log.error("cannot store messages in %s: %s", self._maildir.path, exc)
            keys = [uuid.uuid4().hex for _ in messages]
        return [dataclasses.replace(m, id=key) for m, key in zip(messages, keys, strict=True)]

    def _trace(self, message: SinkMessage) -> bytes:
        return trace_headers(
            hostname=self.options.hostname,
            mail_from=message.mail_from,
            rcpt_tos=message.rcpt_tos,
            peer=message.peer,
            tls_version=message.tls_version,
            received_at=message.received_at,
            dkim=message.dkim,
            checks=message.checks,
        )


async def _nothing() -> None:
    """The checker opens nothing: it only runs what it is handed."""


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
