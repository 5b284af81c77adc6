"""RFC 3464 delivery status notifications (pure).

``multipart/report; report-type=delivery-status``: a human part, a
``message/delivery-status`` part (one per-message block, then one block
per recipient) and the returned original or its headers.
"""

from __future__ import annotations

from email.message import Message

from mailer.feedback import mime, status
from mailer.feedback.model import Action, Kind, RecipientResult, Report


def is_dsn(msg: Message) -> bool:
    return msg.get_content_type() == "multipart/report" and (
        str(msg.get_param("report-type") or "").lower() == "delivery-status"
        or _status_part(msg) is not None
    )


def parse_dsn(msg: Message) -> Report:
    """Every per-recipient block of the DSN ``msg``. A report whose status
    part is missing or holds no recipient is ``unknown``."""
    part = _status_part(msg)
    if part is None:
        return Report(Kind.UNKNOWN, "rfc3464", problem="no message/delivery-status part")
    blocks = _blocks(part)
    if len(blocks) < 2:
        return Report(Kind.UNKNOWN, "rfc3464", problem="delivery-status part has no recipient")
    per_message, per_recipient = blocks[0], blocks[1:]
    envid = _field(per_message, "original-envelope-id")
    recipients: list[RecipientResult] = []
    for block in per_recipient:
        address = _address(_field(block, "final-recipient") or _field(block, "original-recipient"))
        action_text = (_field(block, "action") or "").lower()
        if not address:
            continue
        try:
            action = Action(action_text.split()[0] if action_text else "failed")
        except ValueError:
            continue
        recipients.append(
            status.recipient(
                address,
                action,
                status=(_field(block, "status") or "").split(" ")[0] or None,
                diagnostic=_type_stripped(_field(block, "diagnostic-code")),
                remote_mta=_type_stripped(_field(block, "remote-mta")),
            )
        )
    if not recipients:
        return Report(Kind.UNKNOWN, "rfc3464", envid=envid, problem="no usable recipient block")
    original = mime.original_headers(msg)
    kind = Kind.BOUNCE if any(r.action is Action.FAILED for r in recipients) else Kind.DELAY
    return Report(
        kind,
        "rfc3464",
        recipients=tuple(recipients),
        original_message_id=original.get("message-id"),
        feedback_id=original.get("feedback-id"),
        envid=envid,
        subject=mime.header(msg, "subject"),
    )


def _status_part(msg: Message) -> Message | None:
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            return part
    return None


def _blocks(part: Message) -> list[dict[str, str]]:
    """The header blocks of a delivery-status part. The parser gives them
    as sub-messages; a part it left as text (a wrong transfer encoding, a
    global-delivery-status) is split on blank lines instead."""
    payload = part.get_payload()
    if isinstance(payload, list):
        blocks = [
            {k.lower(): " ".join(str(v).split()) for k, v in reversed(p.items())}
            for p in payload
            if isinstance(p, Message)
        ]
        if len(blocks) >= 2:
            return blocks
    text = mime.text_of(part) if not isinstance(payload, list) else ""
    return [mime.headers_in_text(chunk) for chunk in _split_blank(text) if chunk.strip()]


def _split_blank(text: str) -> list[str]:
    chunks: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            chunks.append("\n".join(current))
            current = []
    if current:
        chunks.append("\n".join(current))
    return chunks


def _field(block: dict[str, str], name: str) -> str | None:
    value = block.get(name)
    return value.strip() if value and value.strip() else None


def _type_stripped(value: str | None) -> str | None:
    """``rfc822; a@b`` / ``smtp; 550 …`` / ``dns; mx.example`` → the value."""
    if value is None:
        return None
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value


def _address(value: str | None) -> str:
    address = _type_stripped(value) or ""
    return address.strip().strip("<>").strip()
