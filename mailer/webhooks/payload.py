"""What a webhook request carries (pure): a JSON array of events in feed
order, the same shape as ``GET /v1/events`` plus a ``type``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from mailer.reasons import AccountEventKind, State
from mailer.store.models import Event, new_id

# the event types an endpoint may ask for: ``send.<state>`` and the
# account's own (``webhook.disabled``)
EVENT_TYPES: tuple[str, ...] = tuple(f"send.{state.value}" for state in State) + tuple(
    kind.value for kind in AccountEventKind
)


def event_type(stored: str) -> str:
    """The type of an event as an endpoint stores it: a send's state or an
    account event's kind (``delivered`` → ``send.delivered``)."""
    return stored if stored in _KINDS else f"send.{stored}"


def state_of(event_type_: str) -> str:
    """An event type as stored: the state it names (``send.delivered`` →
    ``delivered``), an account event's kind as it is."""
    return event_type_.removeprefix("send.")


_KINDS = frozenset(kind.value for kind in AccountEventKind)


def event_json(event: Event) -> dict[str, Any]:
    timestamp = datetime.fromtimestamp(event.at, UTC).isoformat()
    if event.kind is not None:
        # an account's event: no send, its particulars in data
        return {
            "type": event.kind.value,
            "seq": event.seq,
            "timestamp": timestamp,
            "data": {"account": event.account, **(event.data or {}), "detail": event.detail},
        }
    # a send's event: the store's CHECK gives it a state and a reason
    assert event.state is not None
    assert event.reason is not None
    return {
        "type": event_type(event.state.value),
        "seq": event.seq,
        "timestamp": timestamp,
        "data": {
            "send_id": event.send_id,
            "distribution_id": event.distribution_id,
            "state": event.state.value,
            "reason": event.reason.value,
            "code": event.code,
            "enhanced": event.enhanced,
            "text": event.text,
            "detail": event.detail,
        },
    }


def new_webhook_id() -> str:
    return "msg_" + new_id()


def build_batch(events: Sequence[Event]) -> tuple[str, bytes]:
    """A fresh webhook-id and the body of a batch of ``events``."""
    # pydantic-core's encoder: several times faster than json.dumps here
    return new_webhook_id(), to_json([event_json(e) for e in events])


def test_body(account: str, now: float) -> bytes:
    """The body of ``mailer webhooks test``: one ``webhook.test`` event."""
    event = {
        "type": "webhook.test",
        "seq": None,
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
        "data": {"account": account},
    }
    return json.dumps([event], separators=(",", ":")).encode()
