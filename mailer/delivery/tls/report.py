"""SMTP TLS reports (RFC 8460), the pure part: the ``_smtp._tls`` TXT
record (§3), the aggregate report's JSON (§4) built from the store's daily
counts, its gzip encoding and file name (§5.3)."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from mailer.errors import ValidationError
from mailer.store.tlsrpt import TLSCount

__all__ = [
    "MEDIA_TYPE",
    "ReportRecord",
    "ReportURI",
    "build_report",
    "day_range",
    "encode_report",
    "parse_record",
    "report_filename",
    "select_record",
]

MEDIA_TYPE = "application/tlsrpt+gzip"
VERSION = "v=TLSRPTv1"

# RFC 8460 §3: ext-name and ext-value
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_WSP = " \t"


@dataclass(frozen=True)
class ReportURI:
    """Where reports go: ``mailto`` with the address, or ``https`` with the URL."""

    scheme: Literal["mailto", "https"]
    target: str


@dataclass(frozen=True)
class ReportRecord:
    rua: tuple[ReportURI, ...]


def _uri(text: str) -> ReportURI | None:
    """One ``rua`` URI; None for a scheme reports are not sent to (other
    URIs of the record still count). Raises ValidationError("rua")."""
    if not text:
        raise ValidationError("rua", "empty URI")
    if any(c in text for c in " \t\r\n\x00"):
        raise ValidationError("rua", f"{text!r}: white space or control character in a URI")
    scheme, sep, rest = text.partition(":")
    if not sep or not rest:
        raise ValidationError("rua", f"{text!r}: not a URI")
    scheme = scheme.lower()
    if scheme == "mailto":
        # hfields (?subject=…) are not ours to follow; the address is
        address = unquote(rest.split("?", 1)[0])
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain or "." not in domain.strip("."):
            raise ValidationError("rua", f"{text!r}: not a mail address")
        if any(c in address for c in '\r\n<>,;"\\ '):
            raise ValidationError("rua", f"{text!r}: not a mail address")
        return ReportURI("mailto", address)
    if scheme == "https":
        parts = urlsplit(text)
        if not parts.hostname:
            raise ValidationError("rua", f"{text!r}: an https URI needs a host")
        return ReportURI("https", text)
    return None


def parse_record(text: str) -> ReportRecord:
    """A ``_smtp._tls`` TXT record (RFC 8460 §3), e.g.
    ``v=TLSRPTv1; rua=mailto:tlsrpt@example.net,https://r.example.net/v1``.

    Raises ValidationError naming the field (``v``, ``rua``, or an
    extension's name) and the reason for a record that breaks the grammar,
    has no ``rua``, or names no URI this service can deliver to (mailto,
    https).
    """
    if not text.startswith(VERSION):
        raise ValidationError("v", f"the record must start with {VERSION}")
    rest = text[len(VERSION) :]
    fields = rest.split(";")
    if fields[0].strip(_WSP):
        raise ValidationError("v", f"{VERSION} must be followed by ';'")
    fields = fields[1:]
    # one trailing delimiter is allowed (the last field is then empty)
    if fields and not fields[-1].strip(_WSP):
        fields = fields[:-1]
    if not fields:
        raise ValidationError("rua", "the record has no rua field")
    rua: list[ReportURI] | None = None
    for raw in fields:
        field = raw.strip(_WSP)
        name, eq, value = field.partition("=")
        if not eq:
            raise ValidationError(name or "record", f"{field!r}: a field is name=value")
        if name == "rua":
            if rua is not None:
                raise ValidationError("rua", "rua is given twice")
            rua = []
            for item in value.split(","):
                uri = _uri(item.strip(_WSP))
                if uri is not None:
                    rua.append(uri)
            if not rua:
                raise ValidationError("rua", "no mailto: or https: URI")
        elif not _EXT_NAME.fullmatch(name):
            raise ValidationError(name or "record", f"{name!r} is not a field name")
        elif not _EXT_VALUE.fullmatch(value):
            raise ValidationError(name, f"{value!r} is not a field value")
    if rua is None:
        raise ValidationError("rua", "the record has no rua field")
    return ReportRecord(tuple(rua))


def select_record(records: Iterable[str]) -> ReportRecord | None:
    """The domain's reporting record from all its ``_smtp._tls`` TXT
    records: those starting with ``v=TLSRPTv1``; when that is not exactly
    one, the domain asks for no reports (§3). Raises ValidationError for
    the one record when it is bad."""
    found = [r for r in records if r.startswith(VERSION)]
    if len(found) != 1:
        return None
    return parse_record(found[0])


def day_range(day: str) -> tuple[datetime, datetime]:
    """The first and the last second of a UTC day (``YYYY-MM-DD``)."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1) - timedelta(seconds=1)


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _policy(count: TLSCount) -> dict[str, Any]:
    policy: dict[str, Any] = {"policy-type": count.policy_type}
    if count.policy_string:
        policy["policy-string"] = list(count.policy_string)
    policy["policy-domain"] = count.domain
    if count.mx_host:
        policy["mx-host"] = list(count.mx_host)
    return policy


def build_report(
    counts: Sequence[TLSCount],
    *,
    domain: str,
    day: str,
    organization: str,
    report_id: str,
    contact: str | None = None,
) -> dict[str, Any]:
    """The aggregate report (RFC 8460 §4) of ``domain``'s sessions on
    ``day``: one ``policies`` entry per policy applied, with its summary and
    its failure details. Counts of other days or domains are left out."""
    start, end = day_range(day)
    groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[TLSCount]] = {}
    for count in counts:
        if count.domain == domain and count.day == day:
            key = (count.policy_type, count.policy_string, count.mx_host)
            groups.setdefault(key, []).append(count)
    policies = []
    # a fixed order: a report sent again is the same report
    for key in sorted(groups):
        group = groups[key]
        successes = sum(c.count for c in group if not c.result_type)
        failed = sorted(
            (c for c in group if c.result_type),
            key=lambda c: (c.result_type, c.receiving_mx, c.receiving_ip, c.sending_ip),
        )
        entry: dict[str, Any] = {
            "policy": _policy(group[0]),
            "summary": {
                "total-successful-session-count": successes,
                "total-failure-session-count": sum(c.count for c in failed),
            },
        }
        if failed:
            entry["failure-details"] = [_detail(c) for c in failed]
        policies.append(entry)
    report: dict[str, Any] = {
        "organization-name": organization,
        "date-range": {"start-datetime": _stamp(start), "end-datetime": _stamp(end)},
    }
    if contact:
        report["contact-info"] = contact
    report["report-id"] = report_id
    report["policies"] = policies
    return report


def _detail(count: TLSCount) -> dict[str, Any]:
    detail: dict[str, Any] = {"result-type": count.result_type}
    if count.sending_ip:
        detail["sending-mta-ip"] = count.sending_ip
    if count.receiving_mx:
        detail["receiving-mx-hostname"] = count.receiving_mx
    if count.receiving_ip:
        detail["receiving-ip"] = count.receiving_ip
    detail["failed-session-count"] = count.count
    if count.reason_code:
        detail["failure-reason-code"] = count.reason_code
    return detail


def encode_report(report: dict[str, Any]) -> bytes:
    """The report as gzipped JSON (``application/tlsrpt+gzip``); the same
    report gives the same bytes (no time stamp in the gzip header)."""
    data = json.dumps(report, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return gzip.compress(data, mtime=0)


def report_filename(submitter: str, domain: str, day: str, unique: str | None = None) -> str:
    """RFC 8460 §5.3: ``sender!policy-domain!begin!end[!unique-id].json.gz``
    with the times in seconds since the epoch."""
    start, end = day_range(day)
    parts = [submitter, domain, str(int(start.timestamp())), str(int(end.timestamp()))]
    if unique:
        parts.append(unique)
    return "!".join(parts) + ".json.gz"
