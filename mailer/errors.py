"""The one exception tree of the service.

    MailerError
    ├── ConfigError            a configuration key is missing or invalid
    ├── ValidationError        input at the door (API body, CSV, template, address)
    │   ├── TemplateError      a template that does not compile or render
    │   └── IdempotencyConflict an Idempotency-Key reused with another request
    ├── DNSError               a lookup failed
    │   ├── DNSTemporaryError  SERVFAIL, timeout, no nameserver answered
    │   └── DNSPermanentError  NXDOMAIN, null MX, no address for the host
    ├── DeliveryError          an SMTP exchange did not end in 250
    │   ├── ConnectFailed      TCP connect refused or timed out
    │   ├── TLSUnavailable     the server does not offer STARTTLS
    │   ├── TLSFailed          the TLS handshake or certificate check failed
    │   └── SMTPReplyError     the server answered with a 4xx/5xx reply
    ├── PolicyError            a published MTA-STS policy that cannot be had or used
    ├── StoreError             the store could not do what was asked
    │   └── NotFound           no row with that id
    ├── KeyMaterialError       a DKIM key that cannot be read or used
    └── WebhookFailed          a webhook request got no HTTP reply

Third-party exceptions (aiosmtplib, dnspython, httpx, sqlite3, psycopg) are
translated into these in the one module that wraps each library.
"""

from __future__ import annotations

from mailer.reasons import Reason


def shown(value: str) -> str:
    """A value the user gave, as an error message names it: in double
    quotes and as typed. Only what cannot be printed (CR, LF, other control
    and invisible characters) is escaped; a backslash or quote stays one
    character, where ``repr`` would double it (and a name that was escaped
    once already, as DNS text, would come out escaped twice)."""
    return (
        '"'
        + "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in value
        )
        + '"'
    )


class MailerError(Exception):
    """Root of every error the service raises on purpose."""


class ConfigError(MailerError):
    """A configuration key is missing or has an invalid value."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config {key}: {reason}")
        self.key = key
        self.reason = reason


class ValidationError(MailerError):
    """Input rejected at the door; ``field`` names where, ``reason`` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class TemplateError(ValidationError):
    """A template that does not compile, reaches for internals, or uses an
    undefined variable."""


class IdempotencyConflict(ValidationError):
    """The Idempotency-Key was used before with a different request."""

    def __init__(self, key: str) -> None:
        super().__init__("Idempotency-Key", f"{key!r} was used with a different request")
        self.key = key


class DNSError(MailerError):
    """A DNS lookup failed."""

    temporary: bool = True

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class DNSTemporaryError(DNSError):
    temporary = True


class DNSPermanentError(DNSError):
    temporary = False


class DeliveryError(MailerError):
    """An SMTP exchange that did not deliver.

    ``code``/``enhanced``/``text`` carry the server's reply where there was
    one; ``reason`` is the category from the shared vocabulary and
    ``permanent`` says whether retrying can help. ``stage`` says where a
    connection that never got ready failed: ``connect``, ``greeting``,
    ``ehlo``, ``starttls`` (the command), ``tls`` (the handshake) or
    ``ehlo-tls`` (the EHLO after it); None for a failed transaction.
    """

    stage: str | None = None

    def __init__(
        self,
        reason: Reason,
        text: str,
        *,
        permanent: bool = False,
        code: int | None = None,
        enhanced: str | None = None,
    ) -> None:
        super().__init__(
            text if code is None else f"{code} {enhanced or ''} {text}".replace("  ", " ")
        )
        self.reason = reason
        self.text = text
        self.permanent = permanent
        self.code = code
        self.enhanced = enhanced


class ConnectFailed(DeliveryError):
    def __init__(self, text: str) -> None:
        super().__init__(Reason.CONNECTION, text)


class TLSUnavailable(DeliveryError):
    def __init__(self, text: str) -> None:
        super().__init__(Reason.TLS_UNAVAILABLE, text)


class TLSFailed(DeliveryError):
    """``verify_code``: OpenSSL's X509_V_ERR code of a certificate that did
    not verify (TLS reports tell an expired certificate from a wrong name)."""

    def __init__(
        self, text: str, *, certificate: bool = False, verify_code: int | None = None
    ) -> None:
        super().__init__(Reason.CERTIFICATE if certificate else Reason.TLS_HANDSHAKE, text)
        self.verify_code = verify_code


class SMTPReplyError(DeliveryError):
    """A 4xx/5xx reply; classification is done by :mod:`mailer.replycodes`."""


class PolicyError(MailerError):
    """An MTA-STS policy (RFC 8461) that could not be fetched or parsed:
    ``field`` names the policy field (``mode``, ``max_age``, ``mx`` …) or
    the step (``fetch``), ``reason`` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"mta-sts {field}: {reason}")
        self.field = field
        self.reason = reason


class StoreError(MailerError):
    """The store could not do what was asked."""


class NotFound(StoreError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident


class KeyMaterialError(MailerError):
    """A DKIM key file that is missing, unreadable or of the wrong kind."""


class WebhookFailed(MailerError):
    """A webhook request that got no HTTP reply (connect failure, TLS,
    timeout, protocol error)."""
