"""PostgreSQL rows (dicts from psycopg's ``dict_row``) to the store's
typed values, and typed values to statement parameters (pure). jsonb
columns arrive already decoded."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg.types.json import Jsonb

from mailer.store.models import NewDistribution
from mailer.store.rows import Params


def columns(rows: Sequence[Params]) -> list[list[object]]:
    """Rows turned into one list per column, for ``unnest(%s::type[], …)``."""
    return [list(column) for column in zip(*rows, strict=True)]


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
        new.unsubscribe_one_click,
        new.language,
    )
