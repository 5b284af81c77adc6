"""What the developer sink finds in a message: DKIM per signature, the
header checks, SPF and DMARC, looked at as a receiver would.

Checking is CPU work (dkimpy verifies in pure Python, the header checks
parse with the email package), about a millisecond a message; an engine
delivers several times faster than one interpreter checks. So the sink can
check in a pool of worker processes, each with its own resolver and caches,
while its SMTP side only accepts; :class:`Examiner` is the same work in
the calling process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.dns import Resolver
from mailer.errors import ValidationError
from mailer.sink.auth import Authenticator, DmarcVerdict, SpfVerdict
from mailer.sink.checks import HeaderCache, HeaderCheck, parse_message, run_checks
from mailer.sink.verify import DkimResult, TxtRecords, Verifier

__all__ = ["CheckSetup", "Examiner", "ExaminerPool", "Findings"]

log = logging.getLogger(__name__)

# how long a worker process may take to start (spawn, imports) before the
# pool is given up as unusable
_START_TIMEOUT = 60.0
# how often a worker looks whether the sink that started it is still there
_PARENT_POLL = 1.0
# messages in one call to a worker process, at most
_BATCH = 32
# how often, while calls are out, the pool looks whether its processes live
_WATCH_EVERY = 0.5


@dataclass(frozen=True)
class CheckSetup:
    """What an examiner needs, in any process: where DKIM keys and SPF and
    DMARC records are looked up (``host:port`` nameservers, an empty tuple
    for the system's, None for no DNS), the key store standing in for
    unpublished selectors, and the sending node's IP SPF is evaluated for
    (None: SPF is not evaluated)."""

    nameservers: tuple[str, ...] | None = None
    keys_dir: Path | None = None
    dns_timeout: float = 5.0
    sender_ip: str | None = None


@dataclass(frozen=True)
class Findings:
    """What the checks found in one message."""

    dkim: tuple[DkimResult, ...] = ()
    checks: tuple[HeaderCheck, ...] = ()
    spf: SpfVerdict | None = None
    dmarc: DmarcVerdict | None = None


# messages handed to the pool together, each with the future its findings go to
_Batch = list[tuple[bytes, str, asyncio.Future[Findings]]]


class Examiner:
    """Checks messages one process at a time, caching what repeats from
    message to message (key records, DMARC policies, parsed header values).

    Raises ConfigError for a bad nameserver.
    """

    def __init__(self, setup: CheckSetup) -> None:
        resolver = (
            None
            if setup.nameservers is None
            else Resolver(list(setup.nameservers), timeout=setup.dns_timeout)
        )
        records = None if resolver is None else TxtRecords(resolver)
        self._verifier = Verifier(records, setup.keys_dir)
        self._auth = Authenticator(resolver, setup.sender_ip, records)
        # header values repeat from message to message (the parts of one
        # template, the sender): each is parsed once per examiner
        self._headers = HeaderCache()

    async def examine(self, data: bytes, mail_from: str) -> Findings:
        """The findings for a message; never raises (a message that cannot
        be checked has a failed "message" check saying why)."""
        dkim: tuple[DkimResult, ...] = ()
        spf: SpfVerdict | None = None
        dmarc: DmarcVerdict | None = None
        try:
            dkim = tuple(await self._verifier.verify(data))
            parsed = parse_message(data, self._headers)
            checks = run_checks(parsed)
            spf = await self._auth.spf(mail_from)
            dmarc = await self._auth.dmarc(parsed, dkim, spf)
        except ValidationError as exc:
            checks = (HeaderCheck("message", False, exc.reason),)
        except Exception as exc:  # a bug here must not lose the message
            log.exception("checking a message from %s failed", mail_from)
            checks = (HeaderCheck("message", False, f"checking failed: {exc!r}"),)
        return Findings(dkim, checks, spf, dmarc)


# -- the worker processes' side ----------------------------------------------

_worker: tuple[Examiner, asyncio.AbstractEventLoop, Any] | None = None


def _start_worker(setup: CheckSetup, everyone: Any) -> None:
    """In each worker process, once: its examiner and the loop it runs on
    (and the barrier the pool's start waits at). Ctrl-C reaches the whole
    process group; the sink itself decides when its workers stop (after
    the last accepted message is checked)."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a sink killed outright (kill -9) cannot stop its pool: each worker
    # leaves once its parent is gone instead of waiting for work forever
    parent = os.getppid()
    threading.Thread(target=_orphaned, args=(parent,), name="parent-watch", daemon=True).start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _worker = (Examiner(setup), loop, everyone)


def _orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(0)


def _examine_in_worker(messages: list[tuple[bytes, str]]) -> list[Findings]:
    assert _worker is not None, "the pool's initializer did not run"
    examiner, loop, _ = _worker

    async def examine_all() -> list[Findings]:
        return [await examiner.examine(data, mail_from) for data, mail_from in messages]

    return loop.run_until_complete(examine_all())


def _started(timeout: float) -> int:
    """Returns once every process of the pool runs it: each process takes
    one such call at a time, so all of them are up (started, imported, set
    up) when the pool's start returns."""
    assert _worker is not None, "the pool's initializer did not run"
    _worker[2].wait(timeout)
    return os.getpid()


class ExaminerPool:
    """:class:`Examiner` in ``processes`` worker processes (started by
    :meth:`start`, spawned rather than forked: the sink runs threads).
    :meth:`examine` may be awaited for many messages at once, from one
    event loop. Each process has one batch to check at a time; messages
    that come meanwhile wait and go as the next batch, so under load a
    call to a process carries many messages (a call costs the sink's own
    process about as much as a check costs a worker) and, when messages
    are few, each goes at once. (Two batches per process, to keep each
    busy between calls, were slower: docs/performance.md.)

    Raises ValueError for fewer than one process.
    """

    def __init__(self, setup: CheckSetup, processes: int) -> None:
        if processes < 1:
            raise ValueError("an examiner pool needs at least one process")
        self.processes = processes
        self._setup = setup
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._pids: tuple[int, ...] = ()
        self._waiting: _Batch = []
        # the batches handed to a process and not answered yet
        self._out: list[_Batch] = []
        self._watch: asyncio.Task[None] | None = None
        self._broken: concurrent.futures.process.BrokenProcessPool | None = None

    def start(self) -> None:
        """Start every worker process and wait until each can check.

        Raises concurrent.futures.process.BrokenProcessPool,
        threading.BrokenBarrierError or TimeoutError when they cannot start
        (an examiner whose set-up fails in a worker breaks the pool).
        """
        context = multiprocessing.get_context("spawn")
        # handed to each process as it is created (a barrier cannot be
        # sent with a call)
        everyone = context.Barrier(self.processes)
        executor = concurrent.futures.ProcessPoolExecutor(
            self.processes,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._setup, everyone),
        )
        self._executor = executor
        try:
            warm = [executor.submit(_started, _START_TIMEOUT) for _ in range(self.processes)]
            done = concurrent.futures.as_completed(warm, timeout=_START_TIMEOUT * 2)
            self._pids = tuple(sorted(future.result() for future in done))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> Sequence[int]:
        """The ids of the worker processes that answered at start (empty
        before start and after close)."""
        return self._pids if self._executor is not None else ()

    async def examine(self, data: bytes, mail_from: str) -> Findings:
        """The findings for a message, from a worker process.

        Raises concurrent.futures.process.BrokenProcessPool when a worker
        died (the pool is unusable from then on), RuntimeError when the
        pool is not started or closed.
        """
        if self._broken is not None:
            raise self._broken
        if self._executor is None:
            raise RuntimeError("the examiner pool is not running")
        future: asyncio.Future[Findings] = asyncio.get_running_loop().create_future()
        self._waiting.append((data, mail_from, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self._waiting and len(self._out) < self.processes:
            batch = self._waiting[:_BATCH]
            del self._waiting[:_BATCH]
            try:
                if self._executor is None:
                    raise RuntimeError("the examiner pool is not running")
                call = self._executor.submit(_examine_in_worker, [(d, m) for d, m, _ in batch])
            except (RuntimeError, concurrent.futures.process.BrokenProcessPool) as exc:
                _fail(batch, exc)
                continue
            self._out.append(batch)
            asyncio.wrap_future(call).add_done_callback(functools.partial(self._done, batch))
            if self._watch is None:
                self._watch = asyncio.get_running_loop().create_task(self._watching())

    def _done(self, batch: _Batch, call: asyncio.Future[list[Findings]]) -> None:
        # by identity: two batches of the same messages are still two calls
        out = [held for held in self._out if held is not batch]
        if len(out) == len(self._out):  # failed already: a process died
            return
        self._out = out
        error = call.exception() if not call.cancelled() else RuntimeError("cancelled")
        if error is not None:
            _fail(batch, error)
        else:
            for (_, _, future), findings in zip(batch, call.result(), strict=True):
                if not future.done():
                    future.set_result(findings)
        self._dispatch()

    async def _watching(self) -> None:
        """While calls are out: fail them all, and the pool, once one of
        its processes is gone. The executor does so itself, but not always:
        a call handed over in the instant a process dies can be left
        unanswered for good, and the sink would wait for it forever."""
        try:
            while self._out:
                await asyncio.sleep(_WATCH_EVERY)
                if self._out and not self._all_alive():
                    self._break("a checking process died while checking")
        finally:
            self._watch = None

    def _all_alive(self) -> bool:
        # active_children also reaps the processes that ended, so a dead
        # one is missing from it rather than listed as a zombie
        living = {process.pid for process in multiprocessing.active_children()}
        return all(pid in living for pid in self._pids)

    def _break(self, reason: str) -> None:
        broken = self._broken = concurrent.futures.process.BrokenProcessPool(reason)
        out, self._out = self._out, []
        waiting, self._waiting = self._waiting, []
        for batch in [*out, waiting]:
            _fail(batch, broken)

    def close(self) -> None:
        """Stop the worker processes (what they are checking is finished
        first; nothing may be submitted after this)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
            self._executor = None
            self._pids = ()


def _fail(batch: _Batch, error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)
