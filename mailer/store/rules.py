"""Rules both store backends apply the same way (pure): the WHERE clause of
a send listing, which states a replay may touch, a hold's normalised value,
and how a schema script splits into statements."""

from __future__ import annotations

from mailer.errors import ValidationError
from mailer.reasons import Reason, State
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
    if after is not None:
        clauses.append(f"id > {placeholder}")
        params.append(after)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


REPLAYABLE_STATES = (State.BOUNCED, State.FAILED)

#: What ``Store.queue_depth`` counts, in the order of a send's life.
UNFINISHED_STATES = (State.QUEUED, State.HELD, State.SENDING, State.DEFERRED)

#: Reasons a bounced or failed send never carries: they belong to other
#: states (delivered, queued, held, suppressed, cancelled) or to the
#: bookkeeping events of a send's life, never to its final failure.
_NEVER_A_FAILURE = frozenset(
    {
        Reason.DELIVERED,
        Reason.QUEUED,
        Reason.SUPPRESSED_BOUNCE,
        Reason.SUPPRESSED_UNSUBSCRIBE,
        Reason.CANCELLED,
        Reason.REPLAYED,
        Reason.HELD,
        Reason.RELEASED,
        Reason.LEASE_EXPIRED,
    }
)
#: The reasons ``mailer replay --reason`` offers: those a bounced or failed
#: send can have.
REPLAYABLE_REASONS = tuple(r for r in Reason if r not in _NEVER_A_FAILURE)


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
            value = value.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValidationError("domain", f"{value!r} is not a domain name") from exc
    return value
