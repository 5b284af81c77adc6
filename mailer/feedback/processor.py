"""After a returned message is stored: parse it, find its send, apply.

Matching, in order: the VERP token of an envelope recipient (a token whose
MAC is not ours stops here: the message is kept unmatched and changes
nothing); the DSN's ENVID; the returned Message-ID, whose left part is the
send id (the primary key is the index); the returned Feedback-ID, read
back through the configured template into distribution and account, with
the report's recipient (the index on distribution and recipient). Complaints
arrive at a feedback loop address, not at a return path, so they match by
Message-ID, or by Feedback-ID where a provider rewrote or left out the
Message-ID.
Effects (one store transaction with the "processed" mark, so a message is
never applied twice): mailer.store.models.FeedbackEffect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mailer.errors import NotFound, StoreError
from mailer.feedback.arf import COMPLAINT_TYPES
from mailer.feedback.circuit import Breaker
from mailer.feedback.model import Action, Kind, RecipientResult, Report
from mailer.feedback.parse import parse_message
from mailer.message.verp import FeedbackIdentity, read_feedback_id, read_return_path
from mailer.reasons import Reason
from mailer.store.base import Store
from mailer.store.models import FeedbackEffect, FeedbackResult, Inbound, Send

log = logging.getLogger(__name__)

__all__ = ["Matcher", "Processor", "describe", "effects_for", "recipient_of"]


def describe(message: Inbound, result: FeedbackResult) -> str:
    """One line about a processed returned message (``serve --dev``)."""
    what = f"returned {result.kind} ({result.layout})"
    if result.send_id is None:
        return f"{what}: unmatched{': ' + result.problem if result.problem else ''}"
    effects = ", ".join(
        f"{'bounced ' if e.bounce else ''}{e.reason.value}"
        f"{' + ' + e.suppress.value if e.suppress else ''}"
        for e in result.effects
    )
    return f"{what} for send {result.send_id} by {result.matched_by}: {effects or 'no effect'}"


@dataclass(frozen=True)
class Matcher:
    """How returned messages name their send: the VERP ``secret`` and the
    ``bounce_domains`` of return paths; the ``feedback_template`` and
    ``sender_id`` every Feedback-ID was written with (no template: no
    matching by Feedback-ID)."""

    secret: str | None
    bounce_domains: frozenset[str]
    feedback_template: str | None = None
    sender_id: str = "mailer"

    def feedback(self, value: str | None) -> FeedbackIdentity | None:
        """The distribution and account a returned Feedback-ID names, or
        None (none returned, no template, another sender's)."""
        if value is None or self.feedback_template is None:
            return None
        return read_feedback_id(self.feedback_template, value, sender=self.sender_id)

    def token(self, recipients: tuple[str, ...]) -> tuple[str | None, bool]:
        """(send id, MAC valid) of the first return-path recipient, or
        (None, True) when no recipient is one."""
        if self.secret is None:
            return None, True
        for address in recipients:
            token = read_return_path(address, secret=self.secret, domains=self.bounce_domains)
            if token is not None:
                return token.send_id, token.valid
        return None, True


def effects_for(report: Report, send: Send) -> tuple[FeedbackEffect, ...]:
    """What ``report`` does to ``send`` (pure).

    Only ``Action: failed`` is a bounce; it suppresses under the rule of a
    bounce at SMTP time, and only the address the send went to. Delays,
    success notices, auto-replies and feedback other than abuse/fraud are
    events only.
    """
    if report.kind in (Kind.BOUNCE, Kind.DELAY):
        own = [r for r in report.recipients if r.address.lower() == send.recipient.lower()]
        # a forwarded address reports its final recipient: the token or
        # Message-ID already named the send, so its blocks stand for it
        blocks = own or list(report.recipients)
        return tuple(_block_effect(report, send, block) for block in blocks)
    if report.kind is Kind.COMPLAINT:
        feedback_type = report.feedback_type or "other"
        detail = f"feedback report ({feedback_type})"
        if feedback_type in COMPLAINT_TYPES:
            return (
                FeedbackEffect(
                    send.id,
                    Reason.COMPLAINED,
                    suppress=Reason.SUPPRESSED_COMPLAINT,
                    address=send.recipient,
                    detail=detail,
                ),
            )
        return (FeedbackEffect(send.id, Reason.FEEDBACK, detail=detail),)
    if report.kind is Kind.AUTOREPLY:
        subject = (report.subject or "")[:200]
        return (FeedbackEffect(send.id, Reason.AUTO_REPLY, detail=f"auto-reply: {subject}"),)
    return ()


def _block_effect(report: Report, send: Send, block: RecipientResult) -> FeedbackEffect:
    by = "DSN" if report.layout == "rfc3464" else f"bounce ({report.layout})"
    where = f" from {block.remote_mta}" if block.remote_mta else ""
    said = f": {block.diagnostic}" if block.diagnostic else ""
    detail = f"later, by {by}{where}{said}"[:1000]
    if block.action is Action.FAILED:
        same = block.address.lower() == send.recipient.lower()
        return FeedbackEffect(
            send.id,
            block.reason,
            bounce=True,
            suppress=Reason.SUPPRESSED_BOUNCE if block.suppress and same else None,
            address=send.recipient,
            code=block.reply_code,
            enhanced=block.status,
            text=block.diagnostic,
            detail=detail,
        )
    reason = Reason.DELAYED if block.action is Action.DELAYED else Reason.NOTIFIED
    return FeedbackEffect(
        send.id,
        reason,
        code=block.reply_code,
        enhanced=block.status,
        text=block.diagnostic,
        detail=detail,
    )


def recipient_of(report: Report) -> str | None:
    """The one address ``report`` was about (pure): the complaint's
    original recipient, else the one address of its recipient blocks;
    None when it names none or several."""
    if report.original_recipient:
        return report.original_recipient
    addresses = {r.address.lower() for r in report.recipients}
    return addresses.pop() if len(addresses) == 1 else None


class Processor:
    """Processes stored returned messages: after each one the listener
    stores (:meth:`wake`), and at start everything a crash left pending."""

    def __init__(
        self,
        store: Store,
        matcher: Matcher,
        *,
        clock: Callable[[], float] = time.time,
        batch: int = 100,
        on_processed: Callable[[Inbound, FeedbackResult], None] | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.on_processed = on_processed
        self.matcher = matcher
        self.clock = clock
        self.batch = batch
        self._wake = asyncio.Event()
        self.processed = 0

    def wake(self) -> None:
        self._wake.set()

    async def result_for(self, message: Inbound) -> FeedbackResult:
        """Parse and match ``message`` (reads the store, changes nothing)."""
        report = parse_message(message.raw or b"")
        send, matched_by, problem = await self._match(message, report)
        effects = effects_for(report, send) if send is not None else ()
        data = report.as_json()
        data["send_id"] = send.id if send is not None else None
        return FeedbackResult(
            kind=report.kind.value,
            layout=report.layout,
            report=json.dumps(data, ensure_ascii=False),
            send_id=send.id if send is not None else None,
            matched_by=matched_by,
            problem=problem or report.problem,
            effects=effects,
        )

    async def _match(
        self, message: Inbound, report: Report
    ) -> tuple[Send | None, str | None, str | None]:
        token, valid = self.matcher.token(message.recipients)
        if token is not None and not valid:
            return None, None, "return-path token with a MAC that is not ours: not acted on"
        candidates: list[tuple[str, str]] = []
        if token is not None:
            candidates.append((token, "verp"))
        if report.envid:
            candidates.append((report.envid, "envid"))
        message_id = report.original_message_id
        if message_id and "@" in message_id:
            candidates.append((message_id.strip("<>").partition("@")[0], "message-id"))
        for send_id, how in candidates:
            try:
                send = await self.store.send(send_id)
            except NotFound:
                continue
            if how == "message-id" and send.message_id != message_id:
                continue
            return send, how, None
        identity = self.matcher.feedback(report.feedback_id)
        recipient = recipient_of(report)
        if identity is not None and recipient is not None:
            try:
                send = await self.store.send_to(identity.distribution, identity.account, recipient)
            except NotFound:
                pass
            else:
                return send, "feedback-id", None
        return None, None, "no send matched" if report.kind is not Kind.UNKNOWN else None

    async def drain(self) -> int:
        """Process every pending message; returns how many."""
        done = 0
        while True:
            pending = await self.store.inbound_pending(limit=self.batch)
            if not pending:
                return done
            for message in pending:
                result = await self.result_for(message)
                if await self.store.inbound_done(message.id, result, now=self.clock()):
                    done += 1
                    self.processed += 1
                    if self.on_processed is not None:
                        self.on_processed(message, result)
                    if self.breaker is not None and result.send_id and result.effects:
                        send = await self.store.send(result.send_id)
                        await self.breaker.check(send.account)

    async def run(self) -> None:
        """Drain now (what a crash left pending), then whenever woken,
        until cancelled. A store error is logged and retried after a
        pause: the messages stay stored and pending."""
        while True:
            self._wake.clear()
            try:
                await self.drain()
            except StoreError as exc:
                log.warning("processing returned messages: %s", exc)
                await asyncio.sleep(1.0)
                continue
            await self._wake.wait()
