"""The sink's fault vocabulary, defined once: each fault's name, type,
bounds and meaning. The command-line flags of `mailer sink`, the Python
API (``Sink.set_faults``), the JSON API (``/faults``) and the inbox's
switches all take these names (``--tempfail-rate``, ``tempfail_rate=``,
``"tempfail-rate"``) and validate through :class:`Faults`.

Scripted replies (``--reply``, ``script()``) are rules rather than values
and are parsed by :func:`mailer.sink.options.parse_reply_rule`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailer.errors import ValidationError

__all__ = ["FAULTS", "Fault", "Faults", "fault_changes"]


@dataclass(frozen=True)
class Fault:
    """One fault: ``name`` is the flag (``--name``) and JSON key; the Python
    keyword is the same with underscores. ``kind`` is bool, int or float;
    ``optional`` allows None (no value)."""

    name: str
    kind: type
    help: str
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False
    metavar: str = ""

    @property
    def attr(self) -> str:
        return self.name.replace("-", "_")

    def check(self, value: object) -> None:
        """Raises ValidationError(name) for a value of the wrong type or out
        of bounds."""
        if value is None:
            if self.optional:
                return
            raise ValidationError(self.name, "a value is needed")
        # bool is an int to Python, but true is not a count nor a rate
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ValidationError(self.name, f"{value!r} is not {_KIND_NAMES[self.kind]}")
        assert isinstance(value, int | float)
        if self.minimum is not None and value < self.minimum:
            raise ValidationError(self.name, f"{value} is below {self.minimum:g}")
        if self.maximum is not None and value > self.maximum:
            raise ValidationError(self.name, f"{value} is above {self.maximum:g}")


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number"}

FAULTS: tuple[Fault, ...] = (
    Fault("greylist", bool, "The first RCPT per sender/recipient gets 451 4.7.1; later ones pass."),
    Fault(
        "tempfail-rate",
        float,
        "Refuse this share of recipients with 451 4.3.0.",
        minimum=0,
        maximum=1,
        metavar="RATE",
    ),
    Fault(
        "seed",
        int,
        "Makes tempfail-rate (and bounce-after, complain) repeatable.",
        optional=True,
        metavar="N",
    ),
    Fault(
        "drop-after-data",
        int,
        "Read the next N messages, then close the connection without replying.",
        minimum=0,
        metavar="N",
    ),
    Fault(
        "slow-banner",
        float,
        "Wait this many seconds before the 220 greeting.",
        minimum=0,
        metavar="SECONDS",
    ),
    Fault(
        "slow-replies",
        float,
        "Wait this many seconds before every later reply.",
        minimum=0,
        metavar="SECONDS",
    ),
    Fault("no-starttls", bool, "Do not offer STARTTLS (on new connections)."),
    Fault("no-pipelining", bool, "Do not offer PIPELINING, RFC 2920 (on new connections)."),
)
_BY_NAME = {fault.name: fault for fault in FAULTS}


@dataclass(frozen=True)
class Faults:
    """The fault values of a sink; all off by default. ``drop_after_data``
    counts the drops still to come."""

    greylist: bool = False
    tempfail_rate: float = 0.0
    seed: int | None = None
    drop_after_data: int = 0
    slow_banner: float = 0.0
    slow_replies: float = 0.0
    no_starttls: bool = False
    no_pipelining: bool = False

    def __post_init__(self) -> None:
        """Raises ValidationError naming the fault whose value is wrong."""
        for fault in FAULTS:
            fault.check(getattr(self, fault.attr))

    def replace(self, **changes: Any) -> Faults:
        """These values with ``changes`` (Python keywords) applied.

        Raises ValidationError naming an unknown fault or a wrong value.
        """
        for key in changes:
            if key.replace("_", "-") not in _BY_NAME or "-" in key:
                raise ValidationError(key, "no such fault")
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, bool | int | float | None]:
        """The values by fault name, as the JSON API shows them."""
        return {fault.name: getattr(self, fault.attr) for fault in FAULTS}

    def describe(self) -> list[str]:
        """The faults that are on, in words."""
        words = []
        if self.greylist:
            words.append("greylist")
        if self.tempfail_rate:
            seed = "" if self.seed is None else f" (seed {self.seed})"
            words.append(f"tempfail {self.tempfail_rate:g}{seed}")
        if self.drop_after_data:
            words.append(f"drop after DATA ×{self.drop_after_data}")
        if self.slow_banner:
            words.append(f"banner after {self.slow_banner:g}s")
        if self.slow_replies:
            words.append(f"replies after {self.slow_replies:g}s")
        if self.no_starttls:
            words.append("no STARTTLS")
        if self.no_pipelining:
            words.append("no PIPELINING")
        return words


def fault_changes(data: object) -> dict[str, Any]:
    """The changes a JSON object keyed by fault name asks for
    (``{"tempfail-rate": 0.3, "seed": 7}``), as Python keywords for
    ``Faults.replace`` and ``set_faults``.

    Raises ValidationError naming the unknown fault or the wrong value
    (``"body"`` when ``data`` is not an object).
    """
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be a JSON object of fault names and values")
    changes: dict[str, Any] = {}
    for key, value in data.items():
        fault = _BY_NAME.get(key) if isinstance(key, str) else None
        if fault is None:
            known = ", ".join(_BY_NAME)
            raise ValidationError(str(key), f"no such fault (known: {known})")
        fault.check(value)
        changes[fault.attr] = value
    return changes
