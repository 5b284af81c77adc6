"""Console sessions: an operator key exchanged for a signed cookie.

The cookie holds the SHA-256 digest of the key (never the key) and a
random CSRF nonce, signed and timestamped with itsdangerous. Nothing is
kept on the server: every request looks the key up again
(:func:`operator_of`), so a revoked key ends its sessions at the next
request, and an account's key never gets one.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

from mailer.accounts import Principal, digest
from mailer.store.base import Store

__all__ = ["LOGIN_COOKIE", "SESSION_COOKIE", "Session", "Sessions", "operator_of"]

SESSION_COOKIE = "mailer_console"
# before login: the nonce the login form must carry back
LOGIN_COOKIE = "mailer_console_login"
#: A session lasts this long after login, then the key is asked for again.
SESSION_SECONDS = 12 * 3600
LOGIN_SECONDS = 3600


@dataclass(frozen=True)
class Session:
    """What a valid cookie says: whose key (digest) and the form token."""

    key_digest: str
    csrf: str


class Sessions:
    """Signs and reads the console's cookies with ``secret`` (pure)."""

    def __init__(self, secret: str) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="mailer.ui.session")
        self._login = URLSafeTimedSerializer(secret, salt="mailer.ui.login")

    def issue(self, token: str) -> tuple[str, Session]:
        """The cookie value for a session of ``token`` (an API key)."""
        session = Session(digest(token), secrets.token_urlsafe(24))
        return self._session.dumps({"k": session.key_digest, "c": session.csrf}), session

    def read(self, cookie: str | None) -> Session | None:
        """The session a cookie carries; None when it is missing, forged or
        older than :data:`SESSION_SECONDS`."""
        if not cookie:
            return None
        try:
            data = self._session.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict):
            return None
        key, csrf = data.get("k"), data.get("c")
        if not isinstance(key, str) or not isinstance(csrf, str):
            return None
        return Session(key, csrf)

    def login_nonce(self) -> tuple[str, str]:
        """A nonce for the login form and the cookie that vouches for it."""
        nonce = secrets.token_urlsafe(24)
        return self._login.dumps(nonce), nonce

    def login_nonce_of(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            nonce = self._login.loads(cookie, max_age=LOGIN_SECONDS)
        except BadSignature:
            return None
        return nonce if isinstance(nonce, str) else None


def same_token(given: str | None, expected: str) -> bool:
    """Whether a form's CSRF token is the session's (constant time)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def operator_of(
    store: Store, key_digest: str, configured_digests: tuple[str, ...]
) -> Principal | None:
    """The operator a session's key stands for now: a configured key, or a
    stored operator key that is not revoked; else None (revoked, deleted,
    or an account's key). Raises StoreError when the store fails."""
    matched = False
    for known in configured_digests:
        matched |= hmac.compare_digest(key_digest.encode(), known.encode())
    if matched:
        return Principal(account=None, operator=True)
    key = await store.api_key(key_digest)
    if key is None or key.revoked_at is not None or not key.operator:
        return None
    return Principal(account=key.account, operator=True, key_id=key.id)
