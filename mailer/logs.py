"""Log output for operators: plain lines, or one JSON object per line for
Docker and journald (``--log-format json`` / ``MAILER_LOG_FORMAT=json``).

Records about one send carry ``send_id``, ``domain``, ``state`` and
``reason`` (and ``due_at`` for a deferral) as ``extra`` fields; the JSON
format puts them at the top level of the object, the plain format leaves
them in the message text.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["FIELDS", "JsonFormatter", "LogFormat", "send_fields", "setup"]

LogFormat = Literal["text", "json"]

#: The ``extra`` fields a JSON line carries when a record has them.
FIELDS = ("send_id", "domain", "state", "reason", "due_at", "owner", "delivered", "per_second")


def send_fields(
    send_id: str, domain: str, state: str, reason: str, due_at: float | None = None
) -> dict[str, Any]:
    """The ``extra`` of a record about one send (pure)."""
    fields: dict[str, Any] = {"send_id": send_id, "domain": domain, "state": state}
    fields["reason"] = reason
    if due_at is not None:
        fields["due_at"] = due_at
    return fields


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC), ``level``, ``logger``,
    ``message``, the known extra fields, and ``error`` with the traceback
    when an exception is attached."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = _utc(value) if name == "due_at" else value
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup(level: int, fmt: LogFormat) -> None:
    """Send the process's log records to stderr at ``level`` in ``fmt``,
    replacing any handler set up before (one call per command)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
