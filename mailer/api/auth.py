"""Bearer API keys for the /v1 routes: who a request acts for.

A key is either one of the config's ``api.keys`` (operator keys, the dev
shortcut) or a key made by ``mailer apikeys create`` and checked by its
digest on every request (mailer.accounts), so a revoked key is refused at
once. The token never reaches a log line: only the principal travels on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailer.accounts import Principal, authenticate, key_matches
from mailer.api.errors import ApiError
from mailer.errors import NotFound
from mailer.store.base import Store

__all__ = ["Principal", "Who", "account_of", "bearer_auth", "key_matches", "operator_only"]

_bearer = HTTPBearer(
    auto_error=False,
    description="an API key from `mailer apikeys create`, or one of the config's api.keys "
    "(operator keys)",
)


def bearer_auth(store: Store, keys: Sequence[str]) -> Callable[..., Awaitable[Principal]]:
    """A dependency answering who the request acts for, refusing requests
    without a valid key (401)."""
    encoded = [key.encode("utf-8") for key in keys]

    async def require_key(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = None
        if credentials is not None:
            principal = await authenticate(store, credentials.credentials, encoded)
        if principal is None:
            raise ApiError(
                401,
                "authorization",
                "a valid API key is required (Authorization: Bearer KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        request.state.principal = principal
        return principal

    return require_key


def _principal(request: Request) -> Principal:
    # set by bearer_auth's dependency, which every /v1 router runs first
    principal: Principal = request.state.principal
    return principal


Who = Annotated[Principal, Depends(_principal)]


def account_of(principal: Principal, named: str | None, *, field: str = "account") -> str:
    """The account a request acts for: the key's own, or the one named
    (which an operator key must do). Raises ApiError(422) when an operator
    names none, and NotFound when an account's key names another account:
    to that key, other accounts do not exist."""
    if principal.operator:
        if named is None:
            if principal.account is not None:
                return principal.account
            raise ApiError(
                422, field, "an operator key must name the account", code="account-required"
            )
        return named
    assert principal.account is not None
    if named is not None and named != principal.account:
        raise NotFound("account", named)
    return principal.account


def operator_only(principal: Principal) -> None:
    """Raises ApiError(403) unless ``principal`` is an operator."""
    if not principal.operator:
        raise ApiError(403, "authorization", "this route needs an operator key")
