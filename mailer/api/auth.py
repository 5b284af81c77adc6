"""Bearer API keys for the /v1 routes."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mailer.api.errors import ApiError

_bearer = HTTPBearer(auto_error=False, description="an API key from the config's api.keys")


def key_matches(given: str, keys: Sequence[bytes]) -> bool:
    """Whether ``given`` is one of ``keys``; every key is compared, each in
    constant time, so the timing says nothing about which or how much
    matched."""
    candidate = given.encode("utf-8", "surrogateescape")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key)
    return matched


def bearer_auth(keys: Sequence[str]) -> Callable[..., Awaitable[None]]:
    """A dependency refusing requests without one of ``keys`` (401). With
    no keys configured every request is refused."""
    encoded = [key.encode("utf-8") for key in keys]

    async def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None or not key_matches(credentials.credentials, encoded):
            raise ApiError(
                401,
                "authorization",
                "a valid API key is required (Authorization: Bearer KEY)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_key
