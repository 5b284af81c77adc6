"""Unsubscribe tokens: what a service-provided List-Unsubscribe URL
(``{public_url}/u/{token}``) carries.

A token names the account, the address, the send whose message carried it
and the language of the page to show. It is opaque: the four are sealed
with AES-256-GCM under a key derived from the server secret (HKDF-SHA256),
so the URL reveals nothing to whoever sees it (mail logs, link scanners,
proxies), and the authentication tag binds account and address, so a
token unsubscribes exactly one address from exactly one account::

    base64url(0x02 || 12-octet nonce || AES-GCM(JSON [account, address, send id, language]))

Links sent before had the readable form
``base64url(JSON [account, address, send id]) "." base64url(HMAC-SHA256)``;
they still work (a token with a dot is read as one). The send id only
says where the request came from (the event is recorded on that send).
Tokens do not expire: an unsubscribe link must keep working for as long as
the mail is read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mailer.errors import ValidationError
from mailer.store.models import Distribution, Send

__all__ = [
    "UnsubscribeLinks",
    "UnsubscribeToken",
    "legacy_token",
    "links_from_config",
    "read_token",
    "seal_token",
]

# Keeps these MACs apart from anything else the same secret might sign.
_DOMAIN = b"mailer unsubscribe v1\x00"
_KDF_INFO = b"mailer unsubscribe v2 aes-256-gcm"
_VERSION = b"\x02"
_NONCE = 12
_MAX_TOKEN = 2048


@dataclass(frozen=True)
class UnsubscribeToken:
    account: str
    address: str
    send_id: str
    # the page's language ("de", "en"); None: the browser's choice
    language: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Raises ValueError for text that is not unpadded base64url."""
    if not text or any(c in text for c in "=+/"):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + payload, hashlib.sha256).digest()


def _aead(secret: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KDF_INFO).derive(secret)
    return AESGCM(key)


def seal_token(secret: bytes, token: UnsubscribeToken) -> str:
    """The opaque URL-safe text of ``token``."""
    return _seal(_aead(secret), token)


def _seal(aead: AESGCM, token: UnsubscribeToken) -> str:
    payload = json.dumps(
        [token.account, token.address.lower(), token.send_id, token.language],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    nonce = os.urandom(_NONCE)
    return _b64(_VERSION + nonce + aead.encrypt(nonce, payload, _VERSION))


def legacy_token(secret: bytes, token: UnsubscribeToken) -> str:
    """A token in the readable format of links sent before the opaque one
    (no language): what such links carry, so that they can be tested."""
    payload = json.dumps(
        [token.account, token.address.lower(), token.send_id],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(secret: bytes, text: str) -> UnsubscribeToken:
    """The token ``text`` stands for, in either format.

    Raises ValidationError("token", ...) when it is malformed or was not
    made with ``secret`` (tags and MACs compared in constant time).
    """
    return _read(secret, _aead(secret), text)


def _malformed() -> ValidationError:
    return ValidationError("token", "malformed unsubscribe token")


def _read(secret: bytes, aead: AESGCM, text: str) -> UnsubscribeToken:
    if len(text) > _MAX_TOKEN or text.count(".") > 1:
        raise _malformed()
    if "." in text:
        return _read_legacy(secret, text)
    try:
        data = _unb64(text)
    except (ValueError, binascii.Error) as exc:
        raise _malformed() from exc
    if len(data) < 1 + _NONCE + 16 or data[:1] != _VERSION:
        raise _malformed()
    try:
        payload = aead.decrypt(data[1 : 1 + _NONCE], data[1 + _NONCE :], _VERSION)
    except InvalidTag as exc:
        raise ValidationError("token", "invalid unsubscribe token") from exc
    account, address, send_id, rest = _parts(payload, 4)
    language = rest[0]
    if language is not None and not isinstance(language, str):
        raise ValidationError("token", "unsupported unsubscribe token")
    return UnsubscribeToken(account, address, send_id, language)


def _read_legacy(secret: bytes, text: str) -> UnsubscribeToken:
    encoded, _, signature = text.partition(".")
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (ValueError, binascii.Error) as exc:
        raise _malformed() from exc
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise ValidationError("token", "invalid unsubscribe token")
    account, address, send_id, _ = _parts(payload, 3)
    return UnsubscribeToken(account, address, send_id)


def _parts(payload: bytes, count: int) -> tuple[str, str, str, list[object]]:
    """Account, address, send id and the rest of the JSON list inside an
    authentic token: made by us, so well-formed unless the format changed."""
    try:
        parts = json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise ValidationError("token", "unsupported unsubscribe token") from exc
    if (
        not isinstance(parts, list)
        or len(parts) != count
        or not all(isinstance(part, str) for part in parts[:3])
    ):
        raise ValidationError("token", "unsupported unsubscribe token")
    return parts[0], parts[1], parts[2], parts[3:]


class UnsubscribeLinks:
    """The service's own unsubscribe URL of a send: the Preparer's
    ``unsubscribe`` hook."""

    def __init__(self, secret: str | bytes, public_url: str) -> None:
        self.secret = secret.encode("utf-8") if isinstance(secret, str) else secret
        self.public_url = public_url.rstrip("/")
        # the key is derived once, not per message
        self._aead = _aead(self.secret)

    def token(self, account: str, address: str, send_id: str, language: str | None = None) -> str:
        return _seal(self._aead, UnsubscribeToken(account, address, send_id, language))

    def url(self, account: str, address: str, send_id: str, language: str | None = None) -> str:
        return f"{self.public_url}/u/{self.token(account, address, send_id, language)}"

    def read(self, text: str) -> UnsubscribeToken:
        """Raises ValidationError("token", ...) as :func:`read_token`."""
        return _read(self.secret, self._aead, text)

    def __call__(self, send: Send, distribution: Distribution) -> str:
        return self.url(send.account, send.recipient, send.id, distribution.language)


def links_from_config(
    secret: str | None, public_url: str | None, *, enabled: bool = True
) -> UnsubscribeLinks | None:
    """Links when they are ``enabled`` (``api.unsubscribe``) and both the
    secret and the public URL are configured (``api.secret``,
    ``api.public_url``), else None."""
    if not enabled or secret is None or public_url is None:
        return None
    return UnsubscribeLinks(secret, public_url)
