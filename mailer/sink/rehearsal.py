"""The sink's after-the-250 rehearsal (``--bounce-after``, ``--complain``):
a share of the accepted messages comes back, a moment later, as a DSN to
the message's return path or as an ARF complaint to a feedback-loop
address, delivered to the configured inbound listener over STARTTLS (the
delivery path's own session, so STARTTLS is required as everywhere)."""

from __future__ import annotations

import asyncio
import logging
import random

from mailer.delivery.smtp import open_session
from mailer.errors import MailerError
from mailer.feedback.rehearsal import build_arf, build_dsn
from mailer.sink.record import SinkMessage

log = logging.getLogger(__name__)

__all__ = ["Rehearsal"]


class Rehearsal:
    """Decides per message (``bounce_rate`` then ``complain_rate``, with a
    seeded generator when ``seed`` is given) and sends what it decided to
    ``target`` after ``delay`` seconds. ``sent`` counts what went out."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        bounce_rate: float,
        complain_rate: float,
        hostname: str,
        seed: int | None = None,
        delay: float = 0.2,
        domains: frozenset[str] | None = None,
    ) -> None:
        self.target = target
        self.bounce_rate = bounce_rate
        self.complain_rate = complain_rate
        self.hostname = hostname
        self.delay = delay
        # envelope domains whose mail comes back through ``target`` (None:
        # all); mail with another envelope would bounce to someone else
        self.domains = domains
        self._random = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[tuple[str, str]] = []  # (kind, the message's recipient)

    def consider(self, message: SinkMessage) -> None:
        """On the sink's checking loop: maybe schedule a bounce or a
        complaint for ``message``. Messages with the null sender never
        bounce (RFC 3464 §2 … a DSN is never sent about a DSN)."""
        if not message.mail_from or not message.rcpt_tos:
            return
        domain = message.mail_from.rpartition("@")[2].lower()
        if self.domains is not None and domain not in self.domains:
            return
        draw = self._random.random()
        if draw < self.bounce_rate:
            kind = "bounce"
        elif draw < self.bounce_rate + self.complain_rate:
            kind = "complaint"
        else:
            return
        task = asyncio.get_running_loop().create_task(self._send(kind, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, kind: str, message: SinkMessage) -> None:
        await asyncio.sleep(self.delay)
        recipient = message.rcpt_tos[0]
        return_path = message.mail_from
        domain = return_path.rpartition("@")[2]
        if kind == "bounce":
            to = return_path
            data = build_dsn(
                message.data,
                return_path=return_path,
                recipient=recipient,
                reporting_mta=self.hostname,
            )
        else:
            to = f"fbl@{domain}"
            data = build_arf(message.data, to=to, recipient=recipient, reporter=self.hostname)
        host, port = self.target
        try:
            session = await open_session(host, host, port, helo=self.hostname, timeout=10.0)
            async with session:
                await session.send("", to, data)
        except MailerError as exc:
            log.warning(
                "rehearsal %s for %s not delivered to %s:%d: %s", kind, recipient, host, port, exc
            )
            return
        self.sent.append((kind, recipient))

    async def drain(self) -> None:
        """Wait for what is scheduled."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
