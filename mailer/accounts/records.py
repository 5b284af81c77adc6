"""Account records at the door: ids, names, languages, rate caps and
priorities validated, naming the field (pure)."""

from __future__ import annotations

import re

from mailer.errors import ValidationError
from mailer.store.fair import priority
from mailer.store.models import LANGUAGES, Account, AccountChange, Language

# the id the sends already carry: kept a plain token so that it fits in
# URLs, file names and the other wings' keys unchanged
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_NAME = 200
MAX_RATE_CAP = 10_000_000


def account_id(value: str, *, field: str = "id") -> str:
    if not _ID.fullmatch(value):
        raise ValidationError(
            field, "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return value


def _name(value: str) -> str:
    if not value.strip() or len(value) > MAX_NAME:
        raise ValidationError("name", f"must be 1-{MAX_NAME} characters, not blank")
    if any(ch in value for ch in "\r\n"):
        raise ValidationError("name", "must not contain CR or LF")
    return value


def _language(value: str) -> Language:
    for language in LANGUAGES:
        if value == language:
            return language
    raise ValidationError("language", f"must be one of {', '.join(LANGUAGES)}, not {value!r}")


def _rate_cap(value: int) -> int:
    if not 1 <= value <= MAX_RATE_CAP:
        raise ValidationError("rate_cap", f"must be between 1 and {MAX_RATE_CAP} sends per minute")
    return value


def new_account(
    id: str,
    name: str | None = None,
    *,
    language: str = "en",
    rate_cap: int | None = None,
    priority_name: str = "normal",
    now: float,
) -> Account:
    """A validated new account (named after its id when no name is given).
    Raises ValidationError naming the field."""
    return Account(
        id=account_id(id),
        name=_name(name if name is not None else id),
        language=_language(language),
        rate_cap=None if rate_cap is None else _rate_cap(rate_cap),
        priority=priority(priority_name),
        created_at=now,
    )


def account_change(
    *,
    name: str | None = None,
    language: str | None = None,
    rate_cap: int | None = None,
    clear_rate_cap: bool = False,
    priority_name: str | None = None,
) -> AccountChange:
    """A validated change. Raises ValidationError naming the field."""
    if clear_rate_cap and rate_cap is not None:
        raise ValidationError("rate_cap", "give a cap or clear it, not both")
    return AccountChange(
        name=None if name is None else _name(name),
        language=None if language is None else _language(language),
        rate_cap=None if rate_cap is None else _rate_cap(rate_cap),
        clear_rate_cap=clear_rate_cap,
        priority=None if priority_name is None else priority(priority_name),
    )
