"""Rules both store backends apply the same way (pure): the WHERE clause of
a send listing, which states a replay may touch, a hold's normalised value,
and how a schema script splits into statements."""

from __future__ import annotations

import re

from mailer.errors import ValidationError
from mailer.reasons import State
from mailer.store.models import HOLD_KINDS, SendFilter

# A suppression gives way only to a stronger one: a complaint is stronger
# than an unsubscribe, which is stronger than a bounce. Of two as strong, the
# earlier (the one on the list) stays, with its note.
SUPPRESSION_STRENGTH = {
    "suppressed-complaint": 3,
    "suppressed-unsubscribe": 2,
    "suppressed-bounce": 1,
}


def suppression_strength_sql(column: str) -> str:
    """The SQL expression ranking ``column`` (a reason) by
    :data:`SUPPRESSION_STRENGTH`, the same in both backends' upserts."""
    whens = " ".join(f"WHEN '{r}' THEN {n}" for r, n in SUPPRESSION_STRENGTH.items())
    return f"(CASE {column} {whens} ELSE 0 END)"


def replaces(new_reason: str, old_reason: str) -> bool:
    """Whether a suppression with ``new_reason`` takes the place of one with
    ``old_reason`` (pure; what the backends' upserts decide)."""
    return SUPPRESSION_STRENGTH.get(new_reason, 0) > SUPPRESSION_STRENGTH.get(old_reason, 0)


def split_statements(script: str) -> list[str]:
    """The schema scripts hold no ';' inside statements, so a split is
    enough (and keeps every statement inside the migration transaction,
    which executescript() would commit)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def send_filter(
    flt: SendFilter, after: str | None, *, placeholder: str
) -> tuple[str, list[object]]:
    """The WHERE clause of a send listing (pure; shared by the backends)."""
    clauses: list[str] = []
    params: list[object] = []

    def some(column: str, values: tuple[str, ...]) -> None:
        clauses.append(f"{column} IN ({', '.join(placeholder for _ in values)})")
        params.extend(values)

    if flt.states:
        some("state", tuple(s.value for s in flt.states))
    if flt.reasons:
        some("reason", tuple(r.value for r in flt.reasons))
    if flt.distribution_id is not None:
        clauses.append(f"distribution_id = {placeholder}")
        params.append(flt.distribution_id)
    if flt.domain is not None:
        clauses.append(f"domain = {placeholder}")
        params.append(flt.domain.lower())
    if flt.since is not None:
        clauses.append(f"updated_at >= {placeholder}")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append(f"updated_at < {placeholder}")
        params.append(flt.until)
    if after is not None:
        clauses.append(f"id > {placeholder}")
        params.append(after)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


REPLAYABLE_STATES = (State.BOUNCED, State.FAILED)


def replay_filter(flt: SendFilter) -> SendFilter:
    """``flt`` narrowed to the states a replay may touch (pure).

    Raises ValidationError("state", ...) when ``flt`` names another state:
    delivered, in-flight, queued or held sends are never replayed.
    """
    others = [s.value for s in flt.states if s not in REPLAYABLE_STATES]
    if others:
        raise ValidationError(
            "state", f"replay takes only bounced and failed sends, not {', '.join(others)}"
        )
    states = flt.states or REPLAYABLE_STATES
    return SendFilter(
        states=states,
        distribution_id=flt.distribution_id,
        domain=flt.domain,
        reasons=flt.reasons,
        since=flt.since,
        until=flt.until,
    )


def hold_value(kind: str, value: str) -> str:
    """A hold's value as sends store it; raises ValidationError."""
    if kind not in HOLD_KINDS:
        raise ValidationError("kind", f"a hold is on a domain or a distribution, not {kind!r}")
    value = value.strip()
    if not value:
        raise ValidationError(kind, "empty")
    if kind == "domain":
        try:
            ascii_name = value.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValidationError("domain", f"{value!r} is not a domain name") from exc
        if len(ascii_name) > 253 or not _HOST_NAME.fullmatch(ascii_name):
            raise ValidationError(
                "domain", f"{value!r} is not a domain name (letters, digits, '-' and dots)"
            )
        value = ascii_name
    return value


# A host name in its ASCII form: LDH labels of 1-63 characters, not
# starting or ending with '-'.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
