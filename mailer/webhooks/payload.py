"""What a webhook request carries (pure): a JSON array of events in feed
order, the same shape as ``GET /v1/events`` plus a ``type``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from mailer.reasons import State
from mailer.store.models import Event, new_id

# the event types an endpoint may ask for: ``send.<state>``
EVENT_TYPES: tuple[str, ...] = tuple(f"send.{state.value}" for state in State)


def event_type(state: str) -> str:
    return f"send.{state}"


def state_of(event_type_: str) -> str:
    """The state an event type names (``send.delivered`` → ``delivered``)."""
    return event_type_.removeprefix("send.")


def event_json(event: Event) -> dict[str, Any]:
    return {
        "type": event_type(event.state.value),
        "seq": event.seq,
        "timestamp": datetime.fromtimestamp(event.at, UTC).isoformat(),
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
