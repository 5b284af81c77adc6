"""PostgreSQL rows (dicts from psycopg's ``dict_row``) to the store's
typed values, and typed values to statement parameters (pure). jsonb
columns arrive already decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg.types.json import Jsonb

from mailer.reasons import Reason, State
from mailer.store.models import (
    Attempt,
    NewDistribution,
    Outcome,
)
from mailer.store.rows import Row

Params = tuple[object, ...]


def attempt_row(send_id: str, number: int, done: Attempt) -> tuple[object, ...]:
    """The parameters of one attempt insert."""
    return (
        send_id,
        number,
        done.started_at,
        done.finished_at,
        done.reason.value,
        done.mx_host,
        done.address,
        done.tls_version,
        done.tls_cipher,
        done.code,
        done.enhanced,
        done.text,
    )


def columns(rows: Sequence[Params]) -> list[list[object]]:
    """Rows turned into one list per column, for ``unnest(%s::type[], …)``."""
    return [list(column) for column in zip(*rows, strict=True)]


def event_row(
    send_id: str,
    distribution_id: str,
    at: float,
    state: State,
    reason: Reason,
    *,
    code: int | None = None,
    enhanced: str | None = None,
    text: str | None = None,
    detail: str | None = None,
) -> Params:
    """The parameters of one event insert."""
    return (send_id, distribution_id, at, state.value, reason.value, code, enhanced, text, detail)


@dataclass
class OutcomeRows:
    """The statement parameters that record a batch of outcomes: the send
    update, attempt, suppression and event of each."""

    finish: list[Params] = field(default_factory=list)
    attempts: list[Params] = field(default_factory=list)
    suppress: list[Params] = field(default_factory=list)
    events: list[Params] = field(default_factory=list)

    def add(self, row: Row, outcome: Outcome, now: float) -> None:
        """``row``: the leased send (id, distribution_id, account, rcpt_key,
        attempts, due_at)."""
        done = outcome.attempt
        number = row["attempts"] + (1 if done is not None else 0)
        if done is not None:
            self.attempts.append(attempt_row(outcome.send_id, number, done))
        code = done.code if done else None
        enhanced = done.enhanced if done else None
        text = done.text if done else outcome.detail
        due = outcome.due_at if outcome.due_at is not None else row["due_at"]
        state, reason = outcome.state, outcome.reason
        values = (state.value, reason.value, due, number, now, code, enhanced, text)
        self.finish.append((*values, outcome.identity, outcome.send_id))
        self.events.append(
            event_row(
                outcome.send_id,
                row["distribution_id"],
                now,
                state,
                reason,
                code=code,
                enhanced=enhanced,
                text=text,
                detail=outcome.detail,
            )
        )
        if outcome.suppress is not None:
            self.suppress.append(
                (row["account"], row["rcpt_key"], outcome.suppress.value, now, text)
            )


def distribution_row(dist_id: str, new: NewDistribution, now: float) -> Params:
    """The parameters of the distribution insert."""
    return (
        dist_id,
        new.account,
        new.sender_address,
        new.sender_name,
        new.subject,
        new.html,
        new.text,
        new.unsubscribe_url,
        new.send_at,
        Jsonb(list(new.tags)),
        now,
    )
