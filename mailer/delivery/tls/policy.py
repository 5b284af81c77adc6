"""MTA-STS (RFC 8461) as pure functions: the ``_mta-sts`` TXT record, the
policy file, and which MX host names a policy allows.

Nothing here does I/O. Every problem is a :class:`~mailer.errors.PolicyError`
naming the field and the reason, so that a rejected policy can be recorded
and shown as clearly as a rejected API body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from mailer.errors import PolicyError

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_BYTES",
    "Mode",
    "STSPolicy",
    "mx_allowed",
    "parse_policy",
    "parse_txt",
    "pattern_matches",
]

# RFC 8461 §3.2: max_age is at most 31557600 (about one year)
MAX_AGE_LIMIT = 31_557_600
# RFC 8461 §3.3: "senders SHOULD impose a limit on the response size";
# 64 KB is the figure the RFC's own discussion and the common resolvers use
MAX_POLICY_BYTES = 64 * 1024

# §3.1: sts-id = 1*32(ALPHA / DIGIT)
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
# §3.2: sts-policy-max-age-value = 1*10(DIGIT)
_MAX_AGE = re.compile(r"[0-9]{1,10}\Z")
# A host name label (letters, digits, hyphens, not at either end); IDNs
# appear in A-label form in a policy file (§3.2 uses RFC 5321's Domain).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
# key and value of a policy line; §3.2: sts-policy-field-delim = ":" *WSP
_FIELD = re.compile(r"([A-Za-z0-9_]{1,32}):[ \t]*(.*?)[ \t]*\Z")


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True)
class STSPolicy:
    """A parsed policy file: ``mx`` patterns are lower-case, without a
    trailing dot, and may start with ``*.`` (one leading label)."""

    mode: Mode
    mx: tuple[str, ...]
    max_age: int

    def allows(self, host: str) -> bool:
        return mx_allowed(self.mx, host)


def parse_txt(records: Iterable[str]) -> str | None:
    """The policy id of the domain's ``_mta-sts`` TXT records, or None when
    the domain publishes no usable record.

    §3.1: records not starting with ``v=STSv1`` are discarded; unless
    exactly one is left, and it is well-formed, the domain has no policy
    available. Extension fields are ignored. Never raises.
    """
    candidates = [r for r in records if re.match(r"v=STSv1[ \t]*(;|\Z)", r)]
    if len(candidates) != 1:
        return None
    policy_id = None
    for index, part in enumerate(candidates[0].split(";")):
        field = part.strip(" \t")
        if not field:
            continue
        key, eq, value = field.partition("=")
        if not eq:
            return None
        if index == 0:
            continue  # v=STSv1, checked above
        if key == "id":
            if not _ID.match(value) or policy_id is not None:
                return None
            policy_id = value
    return policy_id


def parse_policy(text: str) -> STSPolicy:
    """The policy of a policy file body (already decoded).

    Lines may end in CRLF or LF (§3.2); unknown keys are ignored; of a
    repeated key other than ``mx`` the first counts. ``version: STSv1``,
    ``mode`` and ``max_age`` are required, and at least one ``mx`` unless
    the mode is ``none``.

    Raises PolicyError("version" | "mode" | "max_age" | "mx" | "policy",
    reason) for a missing or malformed field.
    """
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(re.split(r"\r?\n", text), start=1):
        if not line.strip(" \t"):
            continue
        match = _FIELD.match(line)
        if match is None:
            raise PolicyError("policy", f"line {number} is not 'key: value': {line[:80]!r}")
        key, value = match.group(1), match.group(2)
        if key == "mx":
            mx.append(_mx_pattern(value))
        else:
            fields.setdefault(key, value)
    version = fields.get("version")
    if version != "STSv1":
        raise PolicyError("version", f"must be STSv1, got {version!r}")
    mode_text = fields.get("mode", "")
    try:
        mode = Mode(mode_text)
    except ValueError:
        raise PolicyError("mode", f"must be enforce, testing or none, got {mode_text!r}") from None
    max_age_text = fields.get("max_age")
    if max_age_text is None or not _MAX_AGE.match(max_age_text):
        raise PolicyError("max_age", f"must be a whole number of seconds, got {max_age_text!r}")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        raise PolicyError("max_age", f"{max_age} is above the limit of {MAX_AGE_LIMIT}")
    if not mx and mode is not Mode.NONE:
        raise PolicyError("mx", f"a policy in mode {mode} needs at least one mx pattern")
    return STSPolicy(mode, tuple(dict.fromkeys(mx)), max_age)


def _mx_pattern(value: str) -> str:
    """Raises PolicyError("mx", ...) unless ``value`` is a host name or
    ``*.`` followed by one (the only wildcard §4.1 allows)."""
    pattern = value.lower().removesuffix(".")
    host = pattern.removeprefix("*.")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
        raise PolicyError("mx", f"{value!r} is not a host name or a '*.' host pattern")
    if pattern != host and len(labels) < 2:
        # "*.com" would cover a whole top-level domain
        raise PolicyError("mx", f"{value!r}: a wildcard needs at least two labels after '*.'")
    return pattern


def pattern_matches(pattern: str, host: str) -> bool:
    """§4.1: a pattern matches the host name itself, or with ``*.`` any
    name with exactly one more label on the left (``*.example.com``
    matches ``mx1.example.com``, not ``example.com`` nor ``a.b.example.com``)."""
    host = host.lower().removesuffix(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


def mx_allowed(patterns: Sequence[str], host: str) -> bool:
    return any(pattern_matches(p, host) for p in patterns)
