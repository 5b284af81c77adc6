"""Standard Webhooks signing, as pure functions.

A request carries ``webhook-id``, ``webhook-timestamp`` (integer seconds)
and ``webhook-signature``: space-separated ``v1,<base64>`` entries, each the
HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under one secret. A secret is
``whsec_`` followed by the base64 of its key bytes. While a rotated secret
is still honoured, every request carries a signature under each secret,
so a receiver that holds either one verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping

from mailer.errors import ValidationError

SECRET_PREFIX = "whsec_"
# 24 bytes as the reference libraries generate (within their 24-64 range)
SECRET_BYTES = 24
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def new_secret() -> str:
    """A fresh ``whsec_…`` secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The key bytes of a ``whsec_…`` secret. Raises ValidationError
    (field ``secret``) when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValidationError("secret", f"must start with {SECRET_PREFIX}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationError("secret", "is not base64 after whsec_") from exc
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValidationError(
            "secret", f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes of key"
        )
    return key


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """What is signed: ``{id}.{timestamp}.{body}``."""
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256>`` signature. Raises ValidationError
    for a malformed secret."""
    digest = hmac.new(
        secret_key(secret), signed_content(msg_id, timestamp, body), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per secret, space
    separated (a rotated secret signs beside the new one)."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets_)


def headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    received: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """Whether ``received`` (header names in lower case) carries a valid
    signature of ``body`` under ``secret`` with a timestamp within
    ``tolerance`` seconds of ``now``: the receiver's side, for Python
    receivers of this service. Raises ValidationError for a malformed
    secret."""
    msg_id = received.get("webhook-id")
    stamp = received.get("webhook-timestamp", "")
    given = received.get("webhook-signature")
    if not msg_id or not given or not stamp.isdigit():
        return False
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(expected, part.encode()) for part in given.split(" "))
