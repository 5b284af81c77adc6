"""The fault switches of the inbox page: each turns a rehearsal of the
running sink on or off for the deliveries that come next. Besides the two
scripted replies (defer, reject) they are the faults of the one vocabulary
(:mod:`mailer.sink.faults`) under the same names."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

from mailer.sink.faults import FAULTS
from mailer.sink.server import DevSink

__all__ = ["DEFER_REPLY", "REJECT_REPLY", "FaultSwitches", "Switch", "SwitchState"]

DEFER_REPLY = "451 4.3.0 deferred by the inbox's fault switch (rehearsal)"
REJECT_REPLY = "550 5.7.1 rejected by the inbox's fault switch (rehearsal)"
# "drop-after-data" stays on until switched off: the sink drops this many
# messages at most, more than any rehearsal sends.
_DROP_ALL = 1 << 30


class Switch(StrEnum):
    DEFER = "defer"
    REJECT = "reject"
    DROP_AFTER_DATA = "drop-after-data"
    GREYLIST = "greylist"
    NO_STARTTLS = "no-starttls"
    NO_PIPELINING = "no-pipelining"


_SCRIPTED = {Switch.DEFER: DEFER_REPLY, Switch.REJECT: REJECT_REPLY}
_HELP = {fault.name: fault.help for fault in FAULTS}
DESCRIPTIONS = {
    **{switch: _HELP[switch.value] for switch in Switch if switch.value in _HELP},
    Switch.DEFER: f"every recipient gets {DEFER_REPLY[:9]}: the sender should retry later",
    Switch.REJECT: f"every recipient gets {REJECT_REPLY[:9]}: the sender should bounce",
    # on here means every message, not a count
    Switch.DROP_AFTER_DATA: "every message is read, then the connection closes without a reply",
}
# every switch but the scripted replies is a fault of the vocabulary
assert {s.value for s in Switch if s not in _SCRIPTED} <= _HELP.keys()


@dataclass(frozen=True)
class SwitchState:
    switch: Switch
    on: bool
    description: str


class FaultSwitches:
    """The switches over one running sink. The scripted ones start off;
    the others show the sink's fault as it is (the command line's too)."""

    def __init__(self, sink: DevSink) -> None:
        self._sink = sink
        self._scripted: set[Switch] = set()
        self._lock = threading.Lock()

    def set(self, switch: Switch, on: bool) -> None:
        """Turn ``switch`` on or off (again: no change).

        Raises ValidationError when the sink cannot (no-starttls off on a
        sink started without a certificate).
        """
        with self._lock:
            sink = self._sink
            reply = _SCRIPTED.get(switch)
            if reply is not None:
                if (switch in self._scripted) == on:
                    return
                if on:
                    sink.script("*", reply)
                    self._scripted.add(switch)
                else:
                    sink.unscript("*", reply)
                    self._scripted.discard(switch)
            elif switch is Switch.DROP_AFTER_DATA:
                sink.set_faults(drop_after_data=_DROP_ALL if on else 0)
            else:
                sink.set_faults(**{switch.value.replace("-", "_"): on})

    def states(self) -> list[SwitchState]:
        faults = self._sink.faults
        with self._lock:
            return [
                SwitchState(
                    switch,
                    switch in self._scripted
                    if switch in _SCRIPTED
                    else bool(getattr(faults, switch.value.replace("-", "_"))),
                    DESCRIPTIONS[switch],
                )
                for switch in Switch
            ]
