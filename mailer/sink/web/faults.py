"""The fault switches of the inbox page: each turns a rehearsal of the
running sink on or off for the deliveries that come next."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from mailer.sink.server import DevSink

__all__ = ["DEFER_REPLY", "REJECT_REPLY", "FaultSwitches", "Switch", "SwitchState"]

DEFER_REPLY = "451 4.3.0 deferred by the inbox's fault switch (rehearsal)"
REJECT_REPLY = "550 5.7.1 rejected by the inbox's fault switch (rehearsal)"
# "drop" stays on until switched off: the sink drops this many messages
# at most, more than any rehearsal sends.
_DROP_ALL = 1 << 30


class Switch(StrEnum):
    DEFER = "defer"
    REJECT = "reject"
    DROP = "drop"
    NO_STARTTLS = "no-starttls"


DESCRIPTIONS = {
    Switch.DEFER: f"every recipient gets {DEFER_REPLY[:9]}: the sender should retry later",
    Switch.REJECT: f"every recipient gets {REJECT_REPLY[:9]}: the sender should bounce",
    Switch.DROP: "the message is read, then the connection closes without a reply",
    Switch.NO_STARTTLS: "new connections are not offered STARTTLS: nothing may be sent",
}


@dataclass(frozen=True)
class SwitchState:
    switch: Switch
    on: bool
    description: str


class FaultSwitches:
    """The switches over one running sink. All start off; rehearsals given
    on the command line stay as they are."""

    def __init__(self, sink: DevSink) -> None:
        self._sink = sink
        self._on: set[Switch] = set()
        self._lock = threading.Lock()

    def set(self, switch: Switch, on: bool) -> None:
        """Turn ``switch`` on or off (again: no change)."""
        with self._lock:
            if (switch in self._on) == on:
                return
            sink = self._sink
            if switch in (Switch.DEFER, Switch.REJECT):
                reply = DEFER_REPLY if switch is Switch.DEFER else REJECT_REPLY
                if on:
                    sink.script("*", reply)
                else:
                    sink.unscript("*", reply)
            elif switch is Switch.DROP:
                if on:
                    sink.drop_after_data(_DROP_ALL)
                else:
                    sink.cancel_drops()
            else:
                sink.offer_starttls(not on)
            if on:
                self._on.add(switch)
            else:
                self._on.discard(switch)

    def states(self) -> list[SwitchState]:
        with self._lock:
            return [SwitchState(s, s in self._on, DESCRIPTIONS[s]) for s in Switch]
