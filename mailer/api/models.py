"""Request and response bodies of the HTTP API (they make its OpenAPI
schema) and their conversion from and to the service's own values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import to_json

from mailer.client import (
    Accepted,
    Cancelled,
    DistributionStatus,
    EventPage,
    SendStatus,
)
from mailer.enqueue import MAX_RECIPIENTS, Rejected
from mailer.reasons import AccountEventKind, Reason, State
from mailer.store.models import Attempt, Event, NewDistribution

# JSON can spell a lone surrogate ("\ud800"), which cannot be stored or
# sent. pydantic-core refuses one (string_unicode, naming the field) in every
# string that has a length constraint, so every string of a request has one;
# a variable name's is there for that check alone. The JSON parser refuses
# them before that (tests/test_api_units.py holds both to it).
VariableName = Annotated[str, Field(min_length=0)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SenderIn(_In):
    address: Annotated[str, Field(max_length=320, description="the customer's address")]
    name: Annotated[str, Field(max_length=200)] = ""


class RecipientIn(_In):
    email: Annotated[str, Field(max_length=320)]
    name: Annotated[str, Field(max_length=200)] = ""
    variables: Annotated[
        dict[VariableName, Annotated[str, Field(max_length=10_000)]],
        Field(max_length=100, description="template variables of this recipient"),
    ] = {}
    reference: Annotated[
        str | None, Field(max_length=200, description="the platform's own id, echoed back")
    ] = None


class DistributionIn(_In):
    """One survey distribution: templates (Jinja, sandboxed) and recipients."""

    account: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=200,
            description="the account's id; an account's key may leave it out, an operator key "
            "must name it",
        ),
    ] = None
    sender: SenderIn
    subject: Annotated[str, Field(max_length=2_000)]
    html: Annotated[str | None, Field(max_length=1_000_000)] = None
    text: Annotated[str | None, Field(max_length=1_000_000)] = None
    unsubscribe_url: Annotated[
        str | None,
        Field(
            max_length=2_000,
            description=(
                "URL template (https: or mailto:). The service's own one-click /u/ link "
                "stays in List-Unsubscribe unless unsubscribe_one_click is true; an https "
                "URL that is not one-click is the link the body shows"
            ),
        ),
    ] = None
    unsubscribe_one_click: Annotated[
        bool,
        Field(
            description=(
                "unsubscribe_url (https) accepts RFC 8058 one-click POSTs, so it replaces "
                "the service's link in List-Unsubscribe"
            ),
            strict=True,
        ),
    ] = False
    language: Annotated[
        Literal["de", "en"] | None,
        Field(description="language of the unsubscribe footer and page (default: English)"),
    ] = None
    send_at: AwareDatetime | None = None
    tags: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=50)] = []
    priority: Annotated[
        Literal["high", "normal", "bulk"] | None,
        Field(description="before or after the account's other mail; default: the account's"),
    ] = None
    recipients: Annotated[list[RecipientIn], Field(min_length=1, max_length=MAX_RECIPIENTS)]

    def distribution(self, account: str) -> NewDistribution:
        return NewDistribution(
            account=account,
            sender_address=self.sender.address,
            sender_name=self.sender.name,
            subject=self.subject,
            html=self.html,
            text=self.text,
            unsubscribe_url=self.unsubscribe_url,
            send_at=None if self.send_at is None else self.send_at.timestamp(),
            tags=tuple(self.tags),
            unsubscribe_one_click=self.unsubscribe_one_click,
            language=self.language,
            priority=self.priority,
        )


# responses -------------------------------------------------------------------


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class ErrorItem(BaseModel):
    field: str = Field(description="where: `recipients[3].email`, `sender.address`, `body`")
    reason: str = Field(description="why, for people")
    code: str = Field(description="why, for programs: a stable name (`missing`, `not-found`, …)")


class RejectedOut(BaseModel):
    index: int
    field: str
    reason: str

    @classmethod
    def of(cls, item: Rejected) -> RejectedOut:
        return cls(index=item.index, field=item.field, reason=item.reason)


class ErrorOut(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``); the
    problems per field are in the ``errors`` extension member."""

    type: str = Field(description="`about:blank`: the status code says what kind of problem")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="the first problem, and how many more there are")
    errors: list[ErrorItem]
    rejected: list[RejectedOut] | None = None


class AcceptedSendOut(BaseModel):
    index: int
    id: str


# the answer to an enqueue, as accepted_json writes it
class AcceptedOut(BaseModel):
    distribution_id: str
    accepted: int
    sends: list[AcceptedSendOut]
    rejected: list[RejectedOut]


def accepted_json(item: Accepted) -> bytes:
    """``item`` as the JSON of an :class:`AcceptedOut`. Up to 10,000 sends
    of known-good values: written from plain dicts, without a model
    instance for each."""
    return to_json(
        {
            "distribution_id": item.distribution_id,
            "accepted": len(item.sends),
            "sends": [{"index": s.index, "id": s.id} for s in item.sends],
            "rejected": [
                {"index": r.index, "field": r.field, "reason": r.reason} for r in item.rejected
            ],
        }
    )


class AttemptOut(BaseModel):
    started_at: datetime
    finished_at: datetime
    reason: Reason
    mx_host: str | None
    address: str | None
    tls_version: str | None
    tls_cipher: str | None
    # the TLS policy the attempt was made under: encrypt, verify,
    # mta-sts enforce or mta-sts testing (None for attempts recorded before)
    tls_policy: str | None = None
    code: int | None
    enhanced: str | None
    text: str | None

    @classmethod
    def of(cls, item: Attempt) -> AttemptOut:
        return cls(
            started_at=datetime.fromtimestamp(item.started_at, UTC),
            finished_at=datetime.fromtimestamp(item.finished_at, UTC),
            reason=item.reason,
            mx_host=item.mx_host,
            address=item.address,
            tls_version=item.tls_version,
            tls_cipher=item.tls_cipher,
            tls_policy=item.tls_policy,
            code=item.code,
            enhanced=item.enhanced,
            text=item.text,
        )


EventType = Literal[
    "queued",
    "held",
    "sending",
    "deferred",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
    "cancelled",
    "complained",
    "unsubscribed",
    "webhook.disabled",
]
# reasons recorded on a send without changing its state: the recipient
# acted on a message already sent
_ACTS = {"suppressed-unsubscribe": "unsubscribed", "suppressed-complaint": "complained"}


# the type of each account event kind (the same name as its value)
ACCOUNT_EVENT_TYPES: dict[AccountEventKind, EventType] = {
    AccountEventKind.WEBHOOK_DISABLED: "webhook.disabled",
}


def event_type(state: State, reason: Reason) -> EventType:
    """The event's type: its state, or ``unsubscribed`` / ``complained``
    for the recipient's act recorded on a send that keeps its state (a send
    ending ``suppressed`` because of an earlier act stays ``suppressed``)."""
    act = _ACTS.get(reason.value)
    if act == "unsubscribed" and state is not State.SUPPRESSED:
        return "unsubscribed"
    if act == "complained" and state is not State.SUPPRESSED:
        return "complained"
    named: EventType = state.value
    return named


class EventOut(BaseModel):
    seq: int
    type: EventType = Field(
        description="a send's event: its state, or `unsubscribed` / `complained`; an account's "
        "event (no send, state or reason): its kind, `webhook.disabled` when one of the "
        "account's webhook endpoints stopped getting events (`data`: `endpoint_id`, `reason` "
        "`gone` or `expired`; `detail` says why)"
    )
    send_id: str | None = Field(description="null on an account's event")
    distribution_id: str | None = Field(description="null on an account's event")
    at: datetime
    state: State | None = Field(description="null on an account's event")
    reason: Reason | None = Field(description="null on an account's event")
    code: int | None
    enhanced: str | None
    text: str | None
    detail: str | None
    account: str | None
    reference: str | None = Field(description="the recipient's reference given at enqueue")
    tags: list[str]
    data: dict[str, str] | None = Field(
        default=None, description="an account's event's particulars; null on a send's event"
    )

    @classmethod
    def of(cls, item: Event) -> EventOut:
        if item.kind is not None:
            kind = ACCOUNT_EVENT_TYPES[item.kind]
        else:
            # a send's event: the store's CHECK gives it a state and a reason
            assert item.state is not None
            assert item.reason is not None
            kind = event_type(item.state, item.reason)
        return cls(
            seq=item.seq,
            type=kind,
            send_id=item.send_id,
            distribution_id=item.distribution_id,
            at=datetime.fromtimestamp(item.at, UTC),
            state=item.state,
            reason=item.reason,
            code=item.code,
            enhanced=item.enhanced,
            text=item.text,
            detail=item.detail,
            account=item.account,
            reference=item.reference,
            tags=list(item.tags),
            data=None if item.data is None else dict(item.data),
        )


class ReplyOut(BaseModel):
    code: int | None
    enhanced: str | None
    text: str | None


class SendOut(BaseModel):
    id: str
    distribution_id: str
    account: str
    recipient: str
    name: str
    reference: str | None
    message_id: str
    state: State
    reason: Reason
    identity: str | None = Field(description="the sender identity decision and why")
    due_at: datetime
    created_at: datetime
    updated_at: datetime
    last_reply: ReplyOut | None
    attempts: list[AttemptOut]
    events: list[EventOut]

    @classmethod
    def of(cls, item: SendStatus) -> SendOut:
        send = item.send
        last = None
        if send.last_code is not None or send.last_text is not None:
            last = ReplyOut(code=send.last_code, enhanced=send.last_enhanced, text=send.last_text)
        return cls(
            id=send.id,
            distribution_id=send.distribution_id,
            account=send.account,
            recipient=send.recipient,
            name=send.name,
            reference=send.reference,
            message_id=send.message_id,
            state=send.state,
            reason=send.reason,
            identity=send.identity,
            due_at=datetime.fromtimestamp(send.due_at, UTC),
            created_at=datetime.fromtimestamp(send.created_at, UTC),
            updated_at=datetime.fromtimestamp(send.updated_at, UTC),
            last_reply=last,
            attempts=[AttemptOut.of(a) for a in item.attempts],
            events=[EventOut.of(e) for e in item.events],
        )


def _all_states(counts: dict[State, int]) -> dict[str, int]:
    return {state.value: counts.get(state, 0) for state in State}


class SenderOut(BaseModel):
    address: str
    name: str


class DistributionOut(BaseModel):
    id: str
    account: str
    sender: SenderOut
    subject: str
    unsubscribe_url: str | None
    unsubscribe_one_click: bool
    language: str | None
    send_at: datetime | None
    tags: list[str]
    priority: str
    created_at: datetime
    total: int
    counts: dict[str, int] = Field(description="sends per state, every state listed")

    @classmethod
    def of(cls, item: DistributionStatus) -> DistributionOut:
        dist = item.distribution
        return cls(
            id=dist.id,
            account=dist.account,
            sender=SenderOut(address=dist.sender_address, name=dist.sender_name),
            subject=dist.subject,
            unsubscribe_url=dist.unsubscribe_url,
            unsubscribe_one_click=dist.unsubscribe_one_click,
            language=dist.language,
            send_at=_time(dist.send_at),
            tags=list(dist.tags),
            priority=dist.priority,
            created_at=datetime.fromtimestamp(dist.created_at, UTC),
            total=item.total,
            counts=_all_states(item.counts),
        )


class CancelledOut(BaseModel):
    distribution_id: str
    cancelled: int
    counts: dict[str, int]

    @classmethod
    def of(cls, item: Cancelled) -> CancelledOut:
        return cls(
            distribution_id=item.distribution_id,
            cancelled=item.cancelled,
            counts=_all_states(item.counts),
        )


class EventPageOut(BaseModel):
    events: list[EventOut]
    next: int = Field(description="pass as ?after= to read on; the same value when nothing is new")

    @classmethod
    def of(cls, item: EventPage) -> EventPageOut:
        return cls(events=[EventOut.of(e) for e in item.events], next=item.next)
