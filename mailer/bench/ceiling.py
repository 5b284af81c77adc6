"""The transport ceiling: plain aiosmtplib to the bench sink, unsigned, no
store, over STARTTLS on a fixed number of connections.

It is what the engine's rate is set against: the same sink, the same
message size, the same number of processes sharing the machine's cores,
and nothing of the engine's own work (no templates, no MIME, no DKIM, no
queue), so the engine's rate over this one is the share of the transport
that the engine's per-message work leaves (docs/performance.md).
aiosmtplib's own ``sendmail`` is used as it comes: MAIL, RCPT and DATA
each after the reply to the one before. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import ssl
import time
from typing import Any

import aiosmtplib

from mailer import loop as service_loop
from mailer.errors import MailerError

__all__ = ["CONNECTIONS", "transport_ceiling"]

# what the ceiling is quoted at (docs/performance.md)
CONNECTIONS = 32
SENDER = "bench@bench.test"


def _context() -> ssl.SSLContext:
    # the engine's "encrypt" level: TLS 1.2 or newer, the certificate unchecked
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _connection(port: int, data: bytes, count: int, recipient: str) -> None:
    """One connection: STARTTLS (required), then ``count`` messages."""
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        local_hostname="bench.test",
        start_tls=True,
        tls_context=_context(),
        timeout=60,
    )
    async with smtp:
        if smtp.get_transport_info("ssl_object") is None:
            raise MailerError("ceiling: the connection is not encrypted")
        for _ in range(count):
            await smtp.sendmail(SENDER, [recipient], data)


async def _send(port: int, data: bytes, counts: list[int], domains: int) -> None:
    try:
        await asyncio.gather(
            *(
                _connection(port, data, count, f"respondent{i}@d{i % domains}.bench.test")
                for i, count in enumerate(counts)
                if count
            )
        )
    except aiosmtplib.SMTPException as exc:
        raise MailerError(f"ceiling: {exc}") from exc


def _process(
    port: int, data: bytes, counts: list[int], domains: int, ready: Any, go: Any, done: Any
) -> None:
    # imported (spawned processes import this module first): ready
    ready.set()
    go.wait()
    started = time.process_time()
    try:
        service_loop.run(_send(port, data, counts, domains))
    except (MailerError, OSError) as exc:
        done.put((str(exc), 0.0))
        return
    done.put((None, time.process_time() - started))


def _share(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` nearly equal counts (pure)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def transport_ceiling(
    port: int,
    data: bytes,
    messages: int,
    *,
    processes: int = 1,
    connections: int = CONNECTIONS,
    domains: int = 4,
    cpu: list[float] | None = None,
) -> float:
    """Messages per second ``processes`` processes deliver of ``data`` over
    ``connections`` STARTTLS connections in all to the sink on ``port``,
    from the start signal (processes started and imported) to the last
    reply, connection set-up included as in the engine's figure. With
    ``cpu``, each process's CPU seconds from the start signal are appended
    to it. Raises MailerError when a connection fails or is not encrypted."""
    context = multiprocessing.get_context("spawn")
    go, done = context.Event(), context.Queue()
    per_process = _share(connections, processes)
    counts = _share(messages, connections)
    workers = []
    ready = [context.Event() for _ in per_process]
    first = 0
    for share, event in zip(per_process, ready, strict=True):
        mine = counts[first : first + share]
        first += share
        workers.append(
            context.Process(
                target=_process, args=(port, data, mine, domains, event, go, done), daemon=True
            )
        )
    for worker in workers:
        worker.start()
    try:
        # start-up is left out, as in the engine's figure
        for event, worker in zip(ready, workers, strict=True):
            while not event.wait(0.1):
                if not worker.is_alive():
                    raise MailerError(f"ceiling: a sending process exited ({worker.exitcode})")
        start = time.perf_counter()
        go.set()
        errors: list[str] = []
        finished = 0
        while finished < len(workers):
            try:
                error, busy = done.get(timeout=0.5)
            except queue.Empty:
                if any(w.exitcode not in (None, 0) for w in workers):
                    raise MailerError("ceiling: a sending process exited") from None
                continue
            finished += 1
            if error is not None:
                errors.append(error)
            elif cpu is not None:
                cpu.append(busy)
        seconds = time.perf_counter() - start
        if errors:
            raise MailerError(f"ceiling: {errors[0]}")
    finally:
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
    return messages / seconds
