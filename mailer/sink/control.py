"""The fault API of a sink, written once: the recording :class:`Sink` of
the test kit and the checking :class:`DevSink` both take it, each telling
it which recorder its SMTP server reads."""

from __future__ import annotations

from abc import ABC, abstractmethod

from mailer.errors import ValidationError
from mailer.sink.faults import Faults
from mailer.sink.smtpd import STAGES, Recorder, check_reply

__all__ = ["FaultControl"]


class FaultControl(ABC):
    """Faults of the running sink, changeable at any time; they apply to
    the deliveries that come next (STARTTLS and PIPELINING to connections
    opened next)."""

    @abstractmethod
    def _fault_recorder(self) -> Recorder:
        """The recorder the sink's SMTP server reads its faults from.

        Raises RuntimeError when there is none yet (a sink not started)."""

    @property
    def faults(self) -> Faults:
        """The fault values now (``drop_after_data`` counts down)."""
        recorder = self._fault_recorder()
        with recorder.changed:
            return recorder.faults

    def set_faults(self, **changes: bool | int | float | None) -> Faults:
        """Change the named faults (the flags' names with underscores:
        ``set_faults(tempfail_rate=0.3, seed=7)``); return all of them.

        Raises ValidationError naming an unknown fault or a wrong value, and
        for ``no_starttls=False`` on a sink without STARTTLS (it has no
        certificate to offer); nothing changes then.
        """
        recorder = self._fault_recorder()
        with recorder.changed:
            faults = recorder.faults.replace(**changes)
            if not faults.no_starttls and not recorder.can_starttls:
                raise ValidationError(
                    "no-starttls", "this sink was started without STARTTLS: it has no certificate"
                )
            recorder.set_faults(faults)
        return faults

    def clear_faults(self) -> None:
        """Scripts and every fault off (greylisting forgets its pairs)."""
        recorder = self._fault_recorder()
        with recorder.changed:
            recorder.scripts.clear()
            recorder.set_faults(Faults(no_starttls=not recorder.can_starttls))

    def script(
        self, pattern: str, reply: str, *, times: int | None = None, stage: str = "rcpt"
    ) -> None:
        """Answer recipients matching ``pattern`` (fnmatch, case-insensitive)
        with ``reply`` at ``stage`` ("rcpt", "data-command" for the DATA
        command itself, or "data" after the message), ``times`` times or
        forever. A 421 reply also closes the connection. The ``--reply``
        flag, in Python.

        Raises ValueError for a malformed reply or unknown stage.
        """
        check_reply(reply)
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if times is not None and times < 1:
            raise ValueError("times must be positive or None")
        self._fault_recorder().add_script(pattern, reply, times, stage)

    def unscript(self, pattern: str, reply: str, *, stage: str = "rcpt") -> None:
        """Forget the scripted ``reply`` for ``pattern`` at ``stage``."""
        self._fault_recorder().remove_script(pattern, reply, stage)

    def clear_scripts(self) -> None:
        """Forget every scripted reply."""
        recorder = self._fault_recorder()
        with recorder.changed:
            recorder.scripts.clear()
