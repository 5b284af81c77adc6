"""The console's form fields read and checked (pure): each bad field is a
ValidationError naming it, so the page can say which and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailer.errors import ValidationError
from mailer.store.rules import FilterArgs, hold_value

__all__ = ["FILTER_FIELDS", "filter_args", "filter_query", "one_line", "optional"]

FILTER_FIELDS = ("state", "reason", "distribution", "domain", "since", "until", "account")
MAX_FIELD = 500


def one_line(field: str, value: str, *, limit: int = MAX_FIELD) -> str:
    """``value`` stripped; raises ValidationError for CR or LF (never in a
    header, an event or a log line) or a value longer than ``limit``."""
    if any(ch in value for ch in "\r\n"):
        raise ValidationError(field, "must not contain CR or LF")
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")
    return value.strip()


def optional(form: Mapping[str, str], field: str) -> str | None:
    """A single-line field, None when left empty."""
    value = one_line(field, form.get(field, ""))
    return value or None


def filter_args(
    single: Mapping[str, str], states: Sequence[str], reasons: Sequence[str]
) -> FilterArgs:
    """The queue filters of a form or query; the domain is checked as a
    domain name here, so a typo is named rather than matching nothing."""
    for field, values in (("state", states), ("reason", reasons)):
        for value in values:
            one_line(field, value)
    domain = optional(single, "domain")
    return FilterArgs(
        states=tuple(s for s in states if s),
        reasons=tuple(r for r in reasons if r),
        distribution=optional(single, "distribution"),
        domain=hold_value("domain", domain) if domain else None,
        since=optional(single, "since"),
        until=optional(single, "until"),
        account=optional(single, "account"),
    )


def filter_query(args: FilterArgs) -> list[tuple[str, str]]:
    """The filters as query parameters (for links and hidden fields)."""
    pairs = [("state", s) for s in args.states] + [("reason", r) for r in args.reasons]
    for name, value in (
        ("distribution", args.distribution),
        ("domain", args.domain),
        ("since", args.since),
        ("until", args.until),
        ("account", args.account),
    ):
        if value:
            pairs.append((name, value))
    return pairs
