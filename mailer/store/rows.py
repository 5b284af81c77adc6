"""Database rows to the store's typed values, for every backend (pure),
and typed values to the parameters both backends write them with: new
sends as one JSON array, and a batch of outcomes.

A row is anything indexable by column name: ``sqlite3.Row`` or a psycopg
``dict_row``. JSON columns arrive as text from SQLite and decoded from
PostgreSQL's jsonb; :func:`_json` takes either."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from mailer.errors import ValidationError
from mailer.reasons import AccountEventKind, Reason, State
from mailer.store.models import (
    Account,
    ApiKey,
    Attempt,
    CachedPolicy,
    Distribution,
    Event,
    FeedbackEffect,
    Hold,
    IdempotencyRecord,
    Inbound,
    NewSend,
    Outcome,
    Send,
    Suppression,
)

Row = Mapping[str, Any]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def distribution(row: Row) -> Distribution:
    return Distribution(
        id=row["id"],
        account=row["account"],
        sender_address=row["sender_address"],
        sender_name=row["sender_name"],
        subject=row["subject"],
        html=row["html"],
        text=row["text"],
        unsubscribe_url=row["unsubscribe_url"],
        send_at=row["send_at"],
        tags=tuple(_json(row["tags"])),
        created_at=row["created_at"],
        unsubscribe_one_click=bool(row["unsubscribe_one_click"]),
        language=row["language"],
        priority=row["priority"],
    )


def account(row: Row) -> Account:
    return Account(
        id=row["id"],
        name=row["name"],
        language=row["language"],
        rate_cap=row["rate_cap"],
        priority=row["priority"],
        created_at=row["created_at"],
    )


def api_key(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        account=row["account"],
        operator=bool(row["operator"]),
        name=row["name"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def send(row: Row) -> Send:
    return Send(
        id=row["id"],
        distribution_id=row["distribution_id"],
        account=row["account"],
        recipient=row["recipient"],
        domain=row["domain"],
        name=row["name"],
        variables=dict(_json(row["variables"])),
        reference=row["reference"],
        message_id=row["message_id"],
        state=State(row["state"]),
        reason=Reason(row["reason"]),
        due_at=row["due_at"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_code=row["last_code"],
        last_enhanced=row["last_enhanced"],
        last_text=row["last_text"],
        identity=row["identity"],
        replayed_at=row["replayed_at"],
    )


def attempt(row: Row) -> Attempt:
    return Attempt(
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        reason=Reason(row["reason"]),
        mx_host=row["mx_host"],
        address=row["address"],
        tls_version=row["tls_version"],
        tls_cipher=row["tls_cipher"],
        code=row["code"],
        enhanced=row["enhanced"],
        text=row["text"],
        tls_policy=row["tls_policy"],
    )


def cached_policy(row: Row) -> CachedPolicy:
    return CachedPolicy(
        domain=row["domain"],
        policy_id=row["policy_id"],
        mode=row["mode"],
        mx=tuple(_json(row["mx"])),
        max_age=row["max_age"],
        fetched_at=row["fetched_at"],
        expires_at=row["expires_at"],
    )


def cached_policy_row(policy: CachedPolicy) -> Params:
    """The parameters of one policy upsert (domain, policy_id, mode, mx as
    JSON text, max_age, fetched_at, expires_at)."""
    return (
        policy.domain,
        policy.policy_id,
        policy.mode,
        json.dumps(list(policy.mx)),
        policy.max_age,
        policy.fetched_at,
        policy.expires_at,
    )


# The feed's columns over ``events e`` LEFT JOIN ``sends s`` and
# ``distributions d`` (an account's event has no send: its own account).
FEED_COLUMNS = (
    "e.seq, e.send_id, e.distribution_id, e.at, e.state, e.reason, e.code, e.enhanced, e.text, "
    "e.detail, coalesce(e.account, s.account) AS account, s.reference, d.tags, e.kind, e.data"
)


def event(row: Row) -> Event:
    """A row of :data:`FEED_COLUMNS`."""
    state, reason, kind, data = row["state"], row["reason"], row["kind"], row["data"]
    return Event(
        seq=row["seq"],
        send_id=row["send_id"],
        distribution_id=row["distribution_id"],
        at=row["at"],
        state=None if state is None else State(state),
        reason=None if reason is None else Reason(reason),
        code=row["code"],
        enhanced=row["enhanced"],
        text=row["text"],
        detail=row["detail"],
        account=row["account"],
        reference=row["reference"],
        tags=tuple(_json(row["tags"]) or ()),
        kind=None if kind is None else AccountEventKind(kind),
        data=None if data is None else _json(data),
    )


def suppression(row: Row) -> Suppression:
    return Suppression(
        account=row["account"],
        address=row["address"],
        reason=Reason(row["reason"]),
        created_at=row["created_at"],
        detail=row["detail"],
    )


def idempotency_record(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        account=row["account"],
        key=row["key"],
        body_hash=row["body_hash"],
        distribution_id=row["distribution_id"],
        send_ids=tuple(_json(row["send_ids"])),
        data=row["data"],
        created_at=row["created_at"],
    )


def hold(row: Row) -> Hold:
    return Hold(
        kind=row["kind"], value=row["value"], created_at=row["created_at"], note=row["note"]
    )


# atext of RFC 5322 §3.2.3: a Message-ID is made of dot-atom text on both sides
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")


def make_message_id(send_id: str, domain: str) -> str:
    """``<send_id@domain>``; stable for a send, so a retried delivery carries
    the same Message-ID.

    Raises ValidationError("send_id" | "domain", reason) when either part
    cannot appear in a msg-id (dot-atom, ASCII domain).
    """
    if not _DOT_ATOM.match(send_id):
        raise ValidationError("send_id", "not usable in a Message-ID (dot-atom text required)")
    # the right of a msg-id is dot-atom text (RFC 5322 §3.6.4): a host name
    # such as "localhost" will do
    if not _DOT_ATOM.match(domain):
        raise ValidationError("domain", "not usable in a Message-ID (dot-atom text required)")
    return f"<{send_id}@{domain.lower()}>"


def new_sends_json(ids: Sequence[str], sends: Sequence[NewSend], *, hostname: str) -> str:
    """``sends`` under ``ids`` as one JSON array of
    [id, recipient, rcpt_key, domain, name, variables, reference, message_id]
    per send: a whole batch is inserted by one statement (sql.INSERT_SENDS_JSON,
    pg_sql.INSERT_SENDS_JSON). Raises ValueError for a string that is not
    valid Unicode."""
    rows = [
        (
            send_id,
            item.recipient,
            item.recipient.lower(),
            item.recipient.rpartition("@")[2].lower(),
            item.name,
            dict(item.variables),
            item.reference,
            make_message_id(send_id, hostname),
        )
        for send_id, item in zip(ids, sends, strict=True)
    ]
    # pydantic-core's encoder: far faster than the json module (docs/performance.md)
    return to_json(rows).decode("utf-8")


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
        done.tls_policy,
    )


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


def account_event_row(
    at: float, account: str, kind: AccountEventKind, data: Mapping[str, str], detail: str | None
) -> Params:
    """The parameters of one account event insert (at, account, kind,
    detail, data as JSON text)."""
    return (at, account, kind.value, detail, json.dumps(dict(data), sort_keys=True))


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


# After the 250 (mailer.feedback) --------------------------------------------


@dataclass
class FeedbackRows:
    """The statement parameters that apply a returned message's effects:
    late bounces (send update), suppressions and events, per send row read
    in the same transaction."""

    bounce: list[Params] = field(default_factory=list)
    suppress: list[Params] = field(default_factory=list)
    events: list[Params] = field(default_factory=list)

    def add(self, row: Row, effect: FeedbackEffect, now: float) -> None:
        state = State(row["state"])
        if effect.bounce and state is State.DELIVERED:
            # BOUNCE_DELIVERED's parameters; only a delivered send turns
            # bounced (a later bounce of a bounced send is an event only)
            self.bounce.append(
                (effect.reason.value, effect.code, effect.enhanced, effect.text, now, row["id"])
            )
            state = State.BOUNCED
        self.events.append(
            event_row(
                row["id"],
                row["distribution_id"],
                now,
                state,
                effect.reason,
                code=effect.code,
                enhanced=effect.enhanced,
                text=effect.text,
                detail=effect.detail,
            )
        )
        if effect.suppress is not None:
            address = (effect.address or row["recipient"]).lower()
            self.suppress.append(
                (row["account"], address, effect.suppress.value, now, effect.detail)
            )


def inbound(row: Row, *, recipients: Sequence[str]) -> Inbound:
    """A stored returned message from its row (``raw`` when selected)."""
    raw = row["raw"] if "raw" in row.keys() else None  # noqa: SIM118 - sqlite3.Row has no `in`
    return Inbound(
        id=row["id"],
        received_at=row["received_at"],
        mail_from=row["mail_from"],
        recipients=tuple(recipients),
        size=row["size"],
        tls=bool(row["tls"]),
        peer=row["peer"],
        processed_at=row["processed_at"],
        kind=row["kind"],
        layout=row["layout"],
        send_id=row["send_id"],
        matched_by=row["matched_by"],
        problem=row["problem"],
        report=row["report"],
        raw=bytes(raw) if raw is not None else None,
    )
