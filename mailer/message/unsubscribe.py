"""Unsubscribe tokens: what a service-provided List-Unsubscribe URL
(``{public_url}/u/{token}``) carries.

A token names the account, the address and the send whose message carried
it, signed with HMAC-SHA256 under the server secret::

    base64url(JSON ["account", "address", "send id"]) "." base64url(MAC)

The MAC binds account and address, so a token unsubscribes exactly one
address from exactly one account; the send id only says where the request
came from (the event is recorded on that send). Tokens do not expire: an
unsubscribe link must keep working for as long as the mail is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from mailer.errors import ValidationError
from mailer.store.models import Distribution, Send

# Keeps these MACs apart from anything else the same secret might sign.
_DOMAIN = b"mailer unsubscribe v1\x00"
_MAX_TOKEN = 2048


@dataclass(frozen=True)
class UnsubscribeToken:
    account: str
    address: str
    send_id: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Raises ValueError for text that is not unpadded base64url."""
    if not text or any(c in text for c in "=+/"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()


def sign_token(secret: bytes, token: UnsubscribeToken) -> str:
    """The URL-safe text of ``token``."""
    payload = json.dumps(
        [token.account, token.address.lower(), token.send_id],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(secret: bytes, text: str) -> UnsubscribeToken:
    """The token ``text`` stands for.

    Raises ValidationError("token", ...) when it is malformed or its
    signature does not match (compared in constant time).
    """
    if len(text) > _MAX_TOKEN or text.count(".") != 1:
        raise ValidationError("token", "malformed unsubscribe token")
    encoded, _, signature = text.partition(".")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise ValidationError("token", "malformed unsubscribe token") from exc
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise ValidationError("token", "invalid unsubscribe token")
    # signed by us, so well-formed unless the format changed
    try:
        account, address, send_id = json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ValidationError("token", "unsupported unsubscribe token") from exc
    if not all(isinstance(part, str) for part in (account, address, send_id)):
        raise ValidationError("token", "unsupported unsubscribe token")
    return UnsubscribeToken(account, address, send_id)


class UnsubscribeLinks:
    """The service-provided unsubscribe URL of a send: the Preparer's
    ``unsubscribe`` hook, used when a distribution has no URL of its own."""

    def __init__(self, secret: str | bytes, public_url: str) -> None:
        self.secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self.public_url = public_url.rstrip("/")

    def token(self, account: str, address: str, send_id: str) -> str:
        return sign_token(self.secret, UnsubscribeToken(account, address, send_id))

    def url(self, account: str, address: str, send_id: str) -> str:
        return f"{self.public_url}/u/{self.token(account, address, send_id)}"

    def read(self, text: str) -> UnsubscribeToken:
        """Raises ValidationError("token", ...) as :func:`read_token`."""
        return read_token(self.secret, text)

    def __call__(self, send: Send, distribution: Distribution) -> str | None:
        return self.url(send.account, send.recipient, send.id)


def links_from_config(secret: str | None, public_url: str | None) -> UnsubscribeLinks | None:
    """Links when both the secret and the public URL are configured
    (``api.secret``, ``api.public_url``), else None."""
    if secret is None or public_url is None:
        return None
    return UnsubscribeLinks(secret, public_url)
