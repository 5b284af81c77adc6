"""API keys: random tokens kept as SHA-256 digests.

A token carries 256 random bits, so a plain SHA-256 is enough to keep it
(no salt or slow hash needed: there is nothing to guess), and checking a
request is one digest and one indexed lookup. The token is shown once, when
it is made; the store and the logs only ever see its digest or its id.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mailer.store.base import Store
from mailer.store.models import ApiKey, new_id

# Recognisable in a leaked-secret scan; the rest is 43 URL-safe characters.
KEY_PREFIX = "mk_"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: one account, or an operator (any account).
    ``key_id`` is the stored key's id (None for a configured key)."""

    account: str | None
    operator: bool
    key_id: str | None = None

    def sees(self, account: str) -> bool:
        """Whether this principal may see an object of ``account``."""
        return self.operator or account == self.account


def new_token() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The SHA-256 of a token, hex (pure)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def key_matches(given: str, keys: Sequence[bytes]) -> bool:
    """Whether ``given`` is one of ``keys``; every key is compared, each in
    constant time, so the timing says nothing about which or how much
    matched."""
    candidate = given.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


async def authenticate(store: Store, token: str, configured: Sequence[bytes]) -> Principal | None:
    """The principal of ``token``: an operator for a key from the config
    (the dev shortcut), the key's account for a stored key that is not
    revoked, else None. Asks the store every time, so a revocation counts
    at once. Raises StoreError when the store fails."""
    if key_matches(token, configured):
        return Principal(account=None, operator=True)
    key = await store.api_key(digest(token))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(account=key.account, operator=key.operator, key_id=key.id)


async def create_key(
    store: Store, account: str, *, operator: bool, name: str | None, now: float
) -> tuple[ApiKey, str]:
    """Make and record a key for ``account``; returns the record and the
    token (the only time it exists outside the caller's hands). Raises
    NotFound for an unknown account."""
    token = new_token()
    key = ApiKey(id=new_id(), account=account, operator=operator, name=name, created_at=now)
    await store.add_api_key(key, digest(token))
    return key, token
