"""Rules both store backends apply the same way (pure): the WHERE clause of
a send listing, which states a replay may touch and what a batch of replay
candidates becomes, an outcome turned into a hold while its domain is held,
a hold's normalised value, the statistics assembled from their queries'
rows, and how a schema script splits into statements. The backends run
the queries; the decisions are made here, once."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mailer.errors import ValidationError, shown
from mailer.reasons import Reason, State
from mailer.store.models import (
    HOLD_KINDS,
    DestinationCount,
    DomainStates,
    Hold,
    Outcome,
    ReasonCount,
    SendFilter,
    Stats,
    Throughput,
)
from mailer.store.rows import Row, event_row

# The identity decision that puts the customer's own address on the envelope
# (mailer.identity.sender: "spf=pass → customer sender"); every other
# decision sends with our envelope, whose bounces come back to us.
CUSTOMER_ENVELOPE_PREFIX = "spf=pass"

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


# The filters of `mailer queue list`, `mailer replay` and the console ---------

_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(field: str, text: str, now: float) -> float:
    """A point in time (epoch seconds) from ``30m``/``2h``/``1d``/``1w`` ago
    or an ISO 8601 date or date-time (UTC unless it names an offset).

    Raises ValidationError(field, ...) for anything else.
    """
    value = text.strip()
    ago = _AGO.fullmatch(value.lower())
    if ago:
        return now - float(ago.group(1)) * _UNIT[ago.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(
            field, f"{text!r} is neither a duration ago (30m, 2h, 1d) nor an ISO date-time"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _choices(field: str, given: Sequence[str], kind: type[State] | type[Reason]) -> list[str]:
    known = {member.value for member in kind}
    unknown = [value for value in given if value not in known]
    if unknown:
        raise ValidationError(field, f"unknown {field} {unknown[0]!r}")
    return list(given)


@dataclass(frozen=True)
class FilterArgs:
    """The filters as an operator gives them (command-line options, the
    console's form fields), before they are read."""

    states: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    distribution: str | None = None
    domain: str | None = None
    since: str | None = None
    until: str | None = None
    account: str | None = None

    @property
    def empty(self) -> bool:
        return self == FilterArgs()

    def build(self, now: float) -> SendFilter:
        """The send filter these arguments say (pure). Raises
        ValidationError naming the field: an unknown state or reason, an
        unreadable since/until, an until not after since."""
        states = _choices("state", self.states, State)
        reasons = _choices("reason", self.reasons, Reason)
        since = parse_when("since", self.since, now) if self.since else None
        until = parse_when("until", self.until, now) if self.until else None
        if since is not None and until is not None and since >= until:
            raise ValidationError("until", "must be later than --since")
        return SendFilter(
            states=tuple(State(s) for s in states),
            reasons=tuple(Reason(r) for r in reasons),
            distribution_id=self.distribution,
            domain=self.domain.strip().lower() if self.domain else None,
            since=since,
            until=until,
            account=self.account,
        )


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
    hidden = _space_in(value)
    if hidden is not None:
        # before IDNA: its mapping drops zero-width characters, so
        # "exa<U+200B>mple.com" would come out as another name than typed
        noun = "domain name" if kind == "domain" else "distribution id"
        raise ValidationError(
            kind, f"{shown(value)} is not a {noun}: {hidden} is a space or an invisible character"
        )
    if kind == "domain":
        try:
            ascii_name = value.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise ValidationError("domain", f"{shown(value)} is not a domain name") from exc
        if len(ascii_name) > 253 or not _HOST_NAME.fullmatch(ascii_name):
            raise ValidationError(
                "domain", f"{shown(value)} is not a domain name (letters, digits, '-' and dots)"
            )
        value = ascii_name
    return value


def _space_in(value: str) -> str | None:
    """The first space, control or invisible format character in ``value``
    as ``U+XXXX at N``, or None."""
    for index, char in enumerate(value):
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            return f"U+{ord(char):04X} at {index}"
    return None


def unless_held(
    outcome: Outcome, domain: str, distribution_id: str, held: set[tuple[str, str]]
) -> Outcome:
    """An outcome that would queue or defer a send of a held domain or
    distribution holds it instead: the hold began while it was in flight.
    ``held`` is every hold as (kind, value)."""
    if outcome.state not in (State.QUEUED, State.DEFERRED):
        return outcome
    if ("domain", domain) not in held and ("distribution", distribution_id) not in held:
        return outcome
    why = f"{outcome.state.value} ({outcome.reason.value}) while held"
    return replace(
        outcome,
        state=State.HELD,
        reason=Reason.HELD,
        detail=f"{why}: {outcome.detail}" if outcome.detail else why,
    )


@dataclass
class ReplayWork:
    """What one batch of replay candidates becomes: the sends to requeue
    (parameters of REQUEUE), their events, the account suppressions to lift,
    how many were skipped, and the cursor of the next batch."""

    requeue: list[tuple[float, float, float, str]] = field(default_factory=list)
    events: list[tuple[object, ...]] = field(default_factory=list)
    lift: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    last_id: str | None = None


def replay_work(
    rows: Sequence[Row], *, now: float, note: str | None, include_suppressed: bool, limit: int
) -> ReplayWork:
    """Replay candidates (REPLAY_CANDIDATES rows) sorted into requeues and
    skips: a globally suppressed address is never replayed, an account
    suppression only with ``include_suppressed`` (and is then lifted)."""
    work = ReplayWork()
    lift: set[tuple[str, str]] = set()
    for row in rows:
        if row["on_global"] or (row["on_account"] and not include_suppressed):
            work.skipped += 1
            continue
        if row["on_account"]:
            lift.add((row["account"], row["rcpt_key"]))
        work.requeue.append((now, now, now, row["id"]))
        work.events.append(
            event_row(
                row["id"], row["distribution_id"], now, State.QUEUED, Reason.REPLAYED, detail=note
            )
        )
    work.lift = sorted(lift)
    work.last_id = rows[-1]["id"] if len(rows) == limit else None
    return work


def stats_of(
    *,
    counts: Mapping[str, int],
    reasons: Iterable[Row],
    deferring: Iterable[Row],
    throughput: Iterable[Row],
    domains: Iterable[Row] = (),
    holds: Iterable[Hold],
    now: float,
    minutes: int,
) -> Stats:
    """The statistics from the rows of COUNT_STATES (as state → count),
    FAILURE_REASONS, DEFERRING, THROUGHPUT and DOMAIN_STATES, and the
    holds; every minute of the window is present, quiet ones with zeros;
    domains with the most sends first."""
    first, last = _minutes(now, minutes)
    per_minute: dict[int, dict[str, int]] = {m: {} for m in range(first, last + 1)}
    for r in throughput:
        per_minute.setdefault(r["minute"], {})[r["state"]] = r["n"]
    return Stats(
        {State(state): n for state, n in counts.items()},
        tuple(ReasonCount(State(r["state"]), Reason(r["reason"]), r["n"]) for r in reasons),
        tuple(DestinationCount(r["domain"], Reason(r["reason"]), r["n"]) for r in deferring),
        tuple(Throughput(minute=float(m * 60), **per_minute[m]) for m in sorted(per_minute)),
        tuple(holds),
        domain_states(domains),
    )


def domain_states(rows: Iterable[Row]) -> tuple[DomainStates, ...]:
    """DOMAIN_STATES rows (domain, state, n) per domain, the busiest first,
    states in the order of the vocabulary (pure)."""
    per: dict[str, dict[State, int]] = {}
    for r in rows:
        per.setdefault(r["domain"], {})[State(r["state"])] = r["n"]
    found = [
        DomainStates(
            domain,
            sum(states.values()),
            tuple((s, states[s]) for s in State if s in states),
        )
        for domain, states in per.items()
    ]
    return tuple(sorted(found, key=lambda d: (-d.total, d.domain)))


def window(now: float, minutes: int) -> tuple[float, float]:
    """The THROUGHPUT query's [start, end) in seconds for :func:`stats_of`."""
    first, last = _minutes(now, minutes)
    return first * 60, (last + 1) * 60


def _minutes(now: float, minutes: int) -> tuple[int, int]:
    """The first and last whole minute (since the epoch) of the window."""
    last = int(now // 60)
    return last - max(minutes, 1) + 1, last


# A host name in its ASCII form: LDH labels of 1-63 characters, not
# starting or ending with '-'.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
