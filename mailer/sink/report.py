"""What the sink tells about a message: its one-line and JSON forms, and
the trace header fields a receiving MTA would add before storing it
(Return-Path, Delivered-To, Received, Authentication-Results). All pure."""

from __future__ import annotations

import dataclasses
import datetime
import email.message
import email.utils
from typing import Any

from mailer.sink.checks import HeaderCheck
from mailer.sink.record import SinkMessage
from mailer.sink.smtpd import Refusal
from mailer.sink.verify import DkimResult

__all__ = [
    "detail_json",
    "format_line",
    "format_received",
    "format_refusal",
    "message_json",
    "refusal_json",
    "trace_headers",
]


def _iso(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dkim_text(results: tuple[DkimResult, ...]) -> str:
    if not results:
        return "dkim: none"
    parts = []
    for result in results:
        text = f"d={result.domain} s={result.selector} {result.result}"
        if result.key_source is not None and result.ok:
            text += f" (key: {result.key_source})"
        elif not result.ok:
            text += f" ({result.detail})"
        parts.append(text)
    return "dkim: " + ", ".join(parts)


def _checks_text(checks: tuple[HeaderCheck, ...]) -> str:
    return "checks: " + ", ".join(
        f"{check.name} ok" if check.ok else f"{check.name} FAIL ({check.detail})"
        for check in checks
    )


def format_line(message: SinkMessage) -> str:
    """Time, envelope from → to, subject, TLS version, DKIM and checks."""
    subject = " ".join(message.subject.split())  # one line, whatever the header held
    return (
        f"{_iso(message.received_at)} <{message.mail_from}> → "
        f"{', '.join(f'<{rcpt}>' for rcpt in message.rcpt_tos)} "
        f'"{subject}" {message.tls_version or "PLAINTEXT"} | '
        f"{_dkim_text(message.dkim)} | {_checks_text(message.checks)}"
    )


def format_received(message: SinkMessage) -> str:
    """The short line of a sink that does not check: time, peer, TLS,
    envelope and size (nothing parsed)."""
    return (
        f"{message.received_at:.3f} {message.peer} {message.tls_version or 'plain'} "
        f"from=<{message.mail_from}> to=<{','.join(message.rcpt_tos)}> "
        f"bytes={len(message.data)}"
    )


def format_refusal(refusal: Refusal) -> str:
    """A line for a reply the sink refused on purpose."""
    return (
        f"{_iso(refusal.at)} <{refusal.mail_from}> → "
        f"{', '.join(f'<{rcpt}>' for rcpt in refusal.recipients)} "
        f"refused at {refusal.stage.upper()} ({refusal.cause}): {refusal.reply}"
    )


def message_json(message: SinkMessage) -> dict[str, Any]:
    """The JSON object of a message: everything but its bytes."""
    return {
        "event": "message",
        "id": message.id,
        "received_at": _iso(message.received_at),
        "mail_from": message.mail_from,
        "rcpt_tos": list(message.rcpt_tos),
        "subject": message.subject,
        "tls_version": message.tls_version,
        "peer": message.peer,
        "size": len(message.data),
        "dkim": [
            {
                "domain": r.domain,
                "selector": r.selector,
                "algorithm": r.algorithm,
                "result": r.result,
                "detail": r.detail,
                "key_source": None if r.key_source is None else str(r.key_source),
            }
            for r in message.dkim
        ],
        "dkim_pass": message.dkim_pass,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in message.checks],
        "checks_ok": message.checks_ok,
        "tls_cipher": message.tls_cipher,
        "spf": None if message.spf is None else dataclasses.asdict(message.spf),
        "dmarc": None if message.dmarc is None else dataclasses.asdict(message.dmarc),
    }


def detail_json(message: SinkMessage) -> dict[str, Any]:
    """:func:`message_json` plus the raw message and its parsed parts."""
    parsed = message.message
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    return {
        **message_json(message),
        "raw": message.data.decode("utf-8", "replace"),
        "headers": [[name, str(value)] for name, value in parsed.raw_items()],
        "text": _content(text),
        "html": _content(html),
    }


def _content(part: email.message.MIMEPart | None) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken encoding
        return None
    return content if isinstance(content, str) else None


def refusal_json(refusal: Refusal) -> dict[str, Any]:
    return {
        "event": "refused",
        "at": _iso(refusal.at),
        "stage": refusal.stage,
        "mail_from": refusal.mail_from,
        "rcpt_tos": list(refusal.recipients),
        "reply": refusal.reply,
        "cause": refusal.cause,
    }


def trace_headers(
    *,
    hostname: str,
    mail_from: str,
    rcpt_tos: tuple[str, ...],
    peer: str,
    tls_version: str | None,
    received_at: float,
    dkim: tuple[DkimResult, ...],
    checks: tuple[HeaderCheck, ...],
) -> bytes:
    """The header fields an MDA prepends before storing (``\\n`` line ends):
    Return-Path, Delivered-To, Received and RFC 8601 Authentication-Results,
    plus an X-Mailer-Sink-Checks summary."""
    date = email.utils.formatdate(received_at, usegmt=True)
    protocol = f"ESMTPS ({tls_version})" if tls_version else "ESMTP (no TLS)"
    results = (
        "; ".join(f"dkim={r.result} header.d={r.domain} header.s={r.selector}" for r in dkim)
        or "dkim=none"
    )
    failed = [check.name for check in checks if not check.ok]
    lines = [
        f"Return-Path: <{mail_from}>",
        *(f"Delivered-To: {rcpt}" for rcpt in rcpt_tos),
        f"Received: from [{peer}] by {hostname} (mailer sink) with {protocol}; {date}",
        f"Authentication-Results: {hostname}; {results}",
        f"X-Mailer-Sink-Checks: {'ok' if not failed else 'failed ' + ', '.join(failed)}",
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")
