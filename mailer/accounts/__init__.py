"""Accounts and their API keys: who a request acts for (pure rules plus the
store calls that record and check keys)."""

from mailer.accounts.keys import (
    KEY_PREFIX,
    Principal,
    authenticate,
    create_key,
    digest,
    key_matches,
    new_token,
)
from mailer.accounts.records import account_change, new_account

__all__ = [
    "KEY_PREFIX",
    "Principal",
    "account_change",
    "authenticate",
    "create_key",
    "digest",
    "key_matches",
    "new_account",
    "new_token",
]
