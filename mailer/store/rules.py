"""Rules both store backends apply the same way (pure): the WHERE clause of
a send listing, which states a replay may touch, a hold's normalised value,
and how a schema script splits into statements."""

from __future__ import annotations

from dataclasses import replace

from mailer.errors import ValidationError
from mailer.reasons import State
from mailer.store.models import HOLD_KINDS, SendFilter


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
    if flt.account is not None:
        clauses.append(f"account = {placeholder}")
        params.append(flt.account)
    if flt.recipient is not None:
        clauses.append(f"rcpt_key = {placeholder}")
        params.append(flt.recipient.lower())
    if flt.send_id is not None:
        clauses.append(f"id = {placeholder}")
        params.append(flt.send_id)
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
    # replace(): every other field of the filter (account among them) holds
    return replace(flt, states=flt.states or REPLAYABLE_STATES)


def hold_value(kind: str, value: str) -> str:
    """A hold's value as sends store it; raises ValidationError."""
    if kind not in HOLD_KINDS:
        raise ValidationError("kind", f"a hold is on a domain or a distribution, not {kind!r}")
    value = value.strip()
    if not value:
        raise ValidationError(kind, "empty")
    if kind == "domain":
        try:
            value = value.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValidationError("domain", f"{value!r} is not a domain name") from exc
    return value
