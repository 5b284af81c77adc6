"""Configuration: one TOML file plus ``MAILER_*`` environment overrides,
validated once at start-up into frozen, typed objects.

An environment variable ``MAILER_RETRY__MAX_AGE=3600`` overrides the key
``retry.max_age``: the part after ``MAILER_`` is split on ``__`` and
lower-cased. Values are read as TOML literals (``25``, ``true``,
``["a", "b"]``) and fall back to a plain string; list-valued keys also take
a comma-separated string (``MAILER_NAMESERVERS=127.0.0.1:5353,10.0.0.1``).

Every setting can also come from a file, as Docker secrets are given:
``MAILER_API__SECRET_FILE=/run/secrets/unsubscribe`` sets ``api.secret`` to
the file's text without its trailing line end (``api.keys``: one key a line
or comma-separated; ``database``: a URL with its password).

:meth:`Config.check_production` holds what a node refuses to start with
outside ``--dev``: known, empty or short secrets, and a delivering node
that cannot build the service's one-click unsubscribe URL.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import (
    ValidationError as PydanticValidationError,
)

from mailer.errors import ConfigError, ValidationError, shown
from mailer.hostport import parse_host_port

ENV_PREFIX = "MAILER_"
CONFIG_ENV = "MAILER_CONFIG"

# The real sending IPs of the platform (seed article): configuration values
# only, never a network destination of tests or demos.
NETIGATE_IPS = ("89.45.227.221", "46.254.11.92", "89.45.227.195", "86.107.243.139")

# Secrets that were published as defaults (docker/compose.yaml and the
# docs): whoever read them could forge unsubscribe links or use the API.
KNOWN_DEFAULT_SECRETS = frozenset(
    {
        "dev-api-key-change-me",
        "dev-unsubscribe-secret-change-me",
        "bench-secret-bench-secret-bench-secret",
        "mailer",
        "secret",
        "change-me",
        "changeme",
    }
)
MIN_SECRET_BYTES = 32
# http:// is only for a public_url on this machine (``mailer serve --dev``):
# the link opens in a browser on the same machine and nowhere else
_LOOPBACK_HTTP = ("http://localhost", "http://127.", "http://[::1]")


class TLSPolicy(StrEnum):
    """How much of the server's certificate is checked; never plaintext."""

    ENCRYPT = "encrypt"  # encrypted, certificate not checked (opportunistic-but-required)
    VERIFY = "verify"  # chain to a trusted CA and the MX host name must match


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegionConfig(_Frozen):
    """What a region means to identity decisions (docs/design.md, "Regions")."""

    platform_host: str
    spf_include: str
    neutral_sender: str
    # envelope sender of neutral-sender mail; defaults to the neutral sender
    bounce_address: str | None = None
    outbound_ips: tuple[str, ...] = NETIGATE_IPS

    @property
    def envelope_sender(self) -> str:
        return self.bounce_address or self.neutral_sender


REGION_PRESETS: Mapping[str, RegionConfig] = {
    "azure": RegionConfig(
        platform_host="netigate.se",
        spf_include="_spf.netigate.se",
        neutral_sender="survey@netigate.se",
    ),
    "de": RegionConfig(
        platform_host="ntgt.de",
        spf_include="_spf.ntgt.de",
        neutral_sender="survey@ntgt.de",
    ),
}


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    """parse_host_port for a validator: pydantic names the key, the
    ValueError says why."""
    try:
        return parse_host_port(value, "address", default_port=default_port)
    except ValidationError as exc:
        raise ValueError(exc.reason) from exc


class DestinationLimits(_Frozen):
    connections: Annotated[int, Field(strict=True, ge=1, le=1000)] = 10
    messages_per_connection: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 100
    # messages per second to the destination; 0 means no limit
    rate: Annotated[float, Field(ge=0)] = 0.0


class LimitsConfig(_Frozen):
    default: DestinationLimits = DestinationLimits()
    domains: dict[str, DestinationLimits] = {}

    def for_domain(self, domain: str) -> DestinationLimits:
        return self.domains.get(domain, self.default)


class RetryConfig(_Frozen):
    # first delay in seconds, doubled (factor) per attempt up to max_delay
    base: Annotated[float, Field(gt=0)] = 300.0
    factor: Annotated[float, Field(ge=1)] = 2.0
    max_delay: Annotated[float, Field(gt=0)] = 4 * 3600.0
    jitter: Annotated[float, Field(ge=0, lt=1)] = 0.2
    max_age: Annotated[float, Field(gt=0)] = 5 * 24 * 3600.0


class TLSConfig(_Frozen):
    policy: TLSPolicy = TLSPolicy.ENCRYPT
    domains: dict[str, TLSPolicy] = {}
    # extra CA bundle trusted by the `verify` policy (besides the system's)
    cafile: Path | None = None

    def for_domain(self, domain: str) -> TLSPolicy:
        return self.domains.get(domain, self.policy)


def _is_host_name(value: str) -> bool:
    return bool(value) and not any(c in value for c in " \r\n\t") and value.isascii()


class SourceConfig(_Frozen):
    """One entry of the source-address pool: the public address the mail
    leaves from (what SPF is evaluated for and what receivers see), the
    local address connections bind to (None: the system picks, for hosts
    behind NAT or without that address), and the EHLO name (default: the
    service's ``hostname``). ``connections`` and ``rate`` (messages per
    second, 0: none) bound each destination through this address."""

    public_ip: str
    bind_address: str | None = None
    ehlo: str | None = None
    connections: Annotated[int, Field(ge=1, le=1000)] = 10
    rate: Annotated[float, Field(ge=0)] = 0.0

    @field_validator("public_ip", "bind_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value))

    @field_validator("ehlo")
    @classmethod
    def _ehlo(cls, value: str | None) -> str | None:
        if value is not None and not _is_host_name(value):
            raise ValueError("must be an ASCII host name without spaces")
        return value

    @model_validator(mode="after")
    def _same_family(self) -> SourceConfig:
        if self.bind_address is not None:
            public = ipaddress.ip_address(self.public_ip)
            local = ipaddress.ip_address(self.bind_address)
            if public.version != local.version:
                raise ValueError(
                    f"bind_address {local} and public_ip {public} are not of one IP version"
                )
        return self

    @property
    def version(self) -> int:
        """The IP version of the connections made from this entry."""
        return ipaddress.ip_address(self.bind_address or self.public_ip).version


class MTASTSConfig(_Frozen):
    """MTA-STS (RFC 8461) policy fetching and caching."""

    # the whole HTTPS fetch of one policy file
    fetch_timeout: Annotated[float, Field(gt=0, le=300)] = 30.0
    # seconds a worker reuses its answer for a domain before asking DNS for
    # the TXT id again
    recheck: Annotated[float, Field(ge=0)] = 300.0
    # seconds between background refreshes of policies near expiry
    refresh_interval: Annotated[float, Field(gt=0)] = 600.0
    # test-only: the policy host's port and an extra CA bundle, so that a
    # test can serve policies over HTTPS on loopback with its own CA
    test_port: Annotated[int, Field(ge=1, le=65535)] = 443
    test_cafile: Path | None = None


class TLSReportConfig(_Frozen):
    """SMTP TLS reporting (RFC 8460): counting every TLS session, and the
    daily reports to the domains that publish ``_smtp._tls``."""

    # count sessions into the store (on the delivery path; see mailer bench)
    count: bool = True
    # workers send the reports of finished days
    send: bool = True
    # organization-name of the reports (default: the DKIM domain)
    organization: str | None = None
    # TLS-Report-Submitter and the domain reports come from (default: the
    # DKIM domain, whose key signs the report mail)
    submitter: str | None = None
    # contact-info of the reports (default: postmaster@<submitter>)
    contact: str | None = None
    # From and envelope sender of report mail (default: noreply-tlsrpt@<submitter>)
    from_address: str | None = None
    # networks (CIDR) or addresses https report URIs may resolve to
    # although they are loopback, private, link-local, CGNAT or metadata
    allow: tuple[str, ...] = ()
    # extra CA bundle trusted for https report URIs (besides the system's)
    cafile: Path | None = None
    # how often a worker looks for reports due
    interval: Annotated[float, Field(gt=0)] = 300.0
    # a worker's hold on one report while it sends it
    lease_seconds: Annotated[float, Field(gt=0)] = 600.0
    # a report no URI took is tried again after retry_delay, doubling, at
    # most max_tries times
    retry_delay: Annotated[float, Field(gt=0)] = 1800.0
    max_tries: Annotated[int, Field(ge=1, le=100)] = 8
    # one https POST or one SMTP exchange
    timeout: Annotated[float, Field(gt=0, le=300)] = 60.0
    # days the counts (and report states) are kept once their report is done
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 30

    @field_validator("organization", "submitter", "contact", "from_address")
    @classmethod
    def _header_value(cls, value: str | None) -> str | None:
        # these go into mail header fields and the report
        if value is not None and (
            not value.strip() or any(c in value for c in "\r\n") or not value.isprintable()
        ):
            raise ValueError("must be printable text on one line (no CR/LF)")
        return value

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and ("@" not in value.strip("@") or any(c in value for c in " <>")):
            raise ValueError("must be a mail address (local@domain)")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value


class WorkerConfig(_Frozen):
    # sends leased at once by one worker: also the bound on duplicates
    # after a crash
    max_in_flight: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 500
    lease_seconds: Annotated[float, Field(gt=0)] = 300.0
    poll_interval: Annotated[float, Field(gt=0)] = 1.0
    # seconds an idle connection waits for more messages before QUIT
    idle_timeout: Annotated[float, Field(ge=0)] = 2.0
    smtp_timeout: Annotated[float, Field(gt=0)] = 60.0
    dns_timeout: Annotated[float, Field(gt=0)] = 5.0
    # Prometheus /metrics of the engine on this port (none: not served),
    # on metrics_host (all interfaces: "0.0.0.0")
    metrics_port: Annotated[int, Field(strict=True, ge=1, le=65535)] | None = None
    metrics_host: str = "127.0.0.1"


#: The mailbox providers that get a ``destination`` label of their own in
#: the metrics; every other recipient domain counts as ``other``.
LARGE_PROVIDERS: tuple[str, ...] = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "aol.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "t-online.de",
    "outlook.de",
    "hotmail.se",
    "live.se",
    "telia.com",
)


class RetentionConfig(_Frozen):
    # finished sends, their attempts and events are kept this many days
    days: Annotated[float, Field(gt=0)] = 30.0
    # sends removed per transaction: short ones keep claims flowing
    batch: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # seconds between two prunings of each worker
    interval: Annotated[float, Field(gt=0)] = 300.0


class MetricsConfig(_Frozen):
    # Recipient domains with a `destination` label of their own; the rest
    # are `other`, so that label cardinality stays bounded whatever the
    # recipient lists hold.
    destinations: tuple[str, ...] = LARGE_PROVIDERS

    @field_validator("destinations")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > 100:
            raise ValueError(f"{len(value)} domains; at most 100 keep the label bounded")
        cleaned = tuple(d.strip().rstrip(".").lower() for d in value)
        for domain in cleaned:
            if not domain or " " in domain or domain == "other":
                raise ValueError(f"{shown(domain)} is not a domain name")
        return cleaned


class DKIMConfig(_Frozen):
    # our signing domain; default: the region's platform host
    domain: str | None = None
    # refuse to start without a key for our domain (production); off only
    # for set-ups that knowingly send unsigned mail
    required: bool = True
    # let a customer address stand without SPF pass when we hold a DKIM key
    # for its domain that DNS publishes (DMARC alignment through DKIM)
    alignment: bool = False
    # threads for the private-key operations, beside the event loop: OpenSSL
    # runs them without the GIL. 0: on the loop's own thread, which is
    # cheaper when there is one worker process per core (no thread waits
    # for the GIL, nor makes the loop wait for it)
    signing_threads: Annotated[int, Field(strict=True, ge=0, le=64)] = 2


class IdentityConfig(_Frozen):
    # bounds on how long an SPF-based sender decision is reused
    min_ttl: Annotated[int, Field(strict=True, ge=0)] = 60
    max_ttl: Annotated[int, Field(strict=True, ge=1)] = 3600


class ApiConfig(_Frozen):
    """The HTTP API of ``mailer serve``."""

    # host:port the API listens on
    listen: str = "127.0.0.1:8025"
    # bearer tokens accepted on /v1 (none: every /v1 request is refused)
    keys: tuple[str, ...] = ()
    # key of the unsubscribe tokens in service-provided List-Unsubscribe
    # URLs; at least 32 bytes outside --dev
    secret: str | None = None
    # https base URL under which /u/{token} reaches this service
    public_url: str | None = None
    # the service's own one-click unsubscribe links. false: switched off,
    # messages carry only a distribution's own one-click URL, and a
    # delivering node starts without secret and public_url
    unsubscribe: bool = True
    # largest request body in bytes (413 beyond)
    max_body: Annotated[int, Field(strict=True, ge=1024, le=1 << 30)] = 16 * 1024 * 1024
    # seconds a connection has to send a complete request header (from
    # connecting, or from its previous response): slow or silent clients
    # are dropped
    header_timeout: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # seconds an idle keep-alive connection is kept after a response
    keep_alive_timeout: Annotated[int, Field(strict=True, ge=1, le=3600)] = 5
    # open connections at most; more are answered 503 and closed
    max_connections: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 1000
    # seconds an Idempotency-Key is remembered; after that it may be used anew
    idempotency_ttl: Annotated[float, Field(gt=0)] = 24 * 3600.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host_port(value, 8025)
        return value

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_text(cls, value: Any) -> Any:
        # an all-digit secret from the environment reads as a TOML integer
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            if len(key) < 16 or not key.isascii() or not key.isprintable() or " " in key:
                raise ValueError("API keys are at least 16 printable ASCII characters")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # List-Unsubscribe one-click (RFC 8058) needs an https URI
        web = value.startswith("https://") or value.startswith(_LOOPBACK_HTTP)
        if not web or any(c in value for c in ' \r\n\t<>"?#'):
            raise ValueError(
                "must be an https:// URL without query or fragment "
                "(http:// only on localhost, for development)"
            )
        return value.rstrip("/")

    @property
    def listen_address(self) -> tuple[str, int]:
        return _host_port(self.listen, 8025)


class BreakerConfig(_Frozen):
    """The per-account circuit breaker (mailer.feedback.breaker)."""

    complaint_rate: Annotated[float, Field(gt=0, le=1)] = 0.003
    bounce_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    # judged only once the window holds this many sends with our envelope
    min_sends: Annotated[int, Field(ge=1)] = 1000
    # the window: the account's last window_sends sends or window_days,
    # whichever is smaller
    window_sends: Annotated[int, Field(ge=1)] = 10_000
    window_days: Annotated[float, Field(gt=0)] = 7.0


class FeedbackConfig(_Frozen):
    """Return paths, the Feedback-ID header and what comes back."""

    # HMAC key of the tokens in return paths (VERP); without it the
    # envelope is the region's bounce address and only Message-IDs match
    secret: str | None = None
    # domain of the return paths; default bounces.<platform host>
    bounce_domain: str | None = None
    # addresses the feedback loops (ARF complaints) send to
    loop_addresses: tuple[str, ...] = ()
    # Gmail's feedback loop format campaign:customer:mailtype:senderid
    feedback_id: str = "{distribution}:{account}:survey:{sender}"
    sender_id: str = "mailer"
    breaker: BreakerConfig = BreakerConfig()

    @field_validator("secret", mode="before")
    @classmethod
    def _secret_text(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("bounce_domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in " @\r\n\t<>")):
            raise ValueError("must be a domain name")
        return value.lower().rstrip(".") if value else None

    @field_validator("loop_addresses")
    @classmethod
    def _loops(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if "@" not in item.strip("@") or any(c in item for c in " \r\n\t<>"):
                raise ValueError(f"{item!r} is not an address")
        return tuple(item.lower() for item in value)

    @field_validator("feedback_id", "sender_id")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if any(c in value for c in "\r\n") or not value.isprintable():
            raise ValueError("must be printable text on one line")
        return value

    @field_validator("feedback_id")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(distribution="d", account="a", sender="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"fields are {{distribution}}, {{account}}, {{sender}}: {exc}"
            ) from exc
        return value


class InboundConfig(_Frozen):
    """The inbound SMTP listener of returned mail (``mailer inbound``)."""

    # host:port; set, and `mailer serve` runs the listener too
    listen: str | None = None
    # the certificate STARTTLS offers (PEM); none: STARTTLS is not offered
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # largest message in bytes (552 beyond) and concurrent sessions
    max_size: Annotated[int, Field(ge=1024, le=1 << 30)] = 5 * 1024 * 1024
    max_sessions: Annotated[int, Field(ge=1, le=10_000)] = 100

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value:
            _host_port(value, 25)
        return value or None

    @property
    def listen_address(self) -> tuple[str, int] | None:
        return _host_port(self.listen, 25) if self.listen else None


class WebhooksConfig(_Frozen):
    """Signed pushes of the event feed (mailer.webhooks)."""

    # http:// endpoints (development only); https otherwise
    allow_insecure: bool = False
    # networks (CIDR) or addresses that endpoints may resolve to although
    # they are loopback, private, link-local, CGNAT or metadata ranges
    allow: tuple[str, ...] = ()
    # extra CA bundle trusted for https endpoints (besides the system's)
    cafile: Path | None = None
    # events per POST (a JSON array)
    batch_size: Annotated[int, Field(ge=1, le=100)] = 100
    connect_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=120)] = 15.0
    # a worker's hold on an endpoint; longer than one whole request
    lease_seconds: Annotated[float, Field(gt=0)] = 120.0
    # how often idle endpoints look for new events
    poll_interval: Annotated[float, Field(gt=0)] = 1.0
    # endpoints served at once by one worker
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 16
    # retry of a failing batch: first delay, doubled up to max_delay, with
    # jitter; after max_age of failing the endpoint is disabled
    retry_base: Annotated[float, Field(gt=0)] = 5.0
    retry_max_delay: Annotated[float, Field(gt=0)] = 3600.0
    retry_jitter: Annotated[float, Field(ge=0, lt=1)] = 0.2
    max_age: Annotated[float, Field(gt=0)] = 3 * 24 * 3600.0
    # a rotated secret keeps signing beside the new one this long
    rotation_overlap: Annotated[float, Field(ge=0)] = 24 * 3600.0

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @model_validator(mode="after")
    def _lease_outlives_request(self) -> WebhooksConfig:
        if self.lease_seconds <= 2 * (self.connect_timeout + self.read_timeout):
            raise ValueError(
                "lease_seconds must exceed twice connect_timeout + read_timeout, "
                "so that a lease cannot run out during a request"
            )
        return self


class Config(_Frozen):
    region: Literal["azure", "de"] = "azure"
    regions: dict[str, RegionConfig] = dict(REGION_PRESETS)
    hostname: str = "localhost"
    # the public address SPF is evaluated for
    outbound_ip: str = NETIGATE_IPS[0]
    # the local address outbound connections bind to (None: the system's
    # choice, so that a machine without the public address still sends)
    bind_address: str | None = None
    # the source-address pool; when given it replaces outbound_ip and
    # bind_address, and SPF must pass for every public address in it
    sources: tuple[SourceConfig, ...] = ()
    database: str = "var/mailer.sqlite3"
    keys_dir: Path = Path("keys")
    nameservers: tuple[str, ...] = ()
    # "trust-ad": the nameservers are validating resolvers whose AD bit is
    # believed, which turns DANE (RFC 7672) on; "off": no answer is secure
    dnssec: Literal["off", "trust-ad"] = "off"
    smtp_port: Annotated[int, Field(strict=True, ge=1, le=65535)] = 25
    # all mail to one host:port instead of the MX (developer sink); STARTTLS
    # is still required
    relay: str | None = None
    limits: LimitsConfig = LimitsConfig()
    retry: RetryConfig = RetryConfig()
    tls: TLSConfig = TLSConfig()
    worker: WorkerConfig = WorkerConfig()
    metrics: MetricsConfig = MetricsConfig()
    retention: RetentionConfig = RetentionConfig()
    dkim: DKIMConfig = DKIMConfig()
    identity: IdentityConfig = IdentityConfig()
    api: ApiConfig = ApiConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    inbound: InboundConfig = InboundConfig()
    mta_sts: MTASTSConfig = MTASTSConfig()
    tlsrpt: TLSReportConfig = TLSReportConfig()

    webhooks: WebhooksConfig = WebhooksConfig()

    @field_validator("outbound_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))

    @field_validator("bind_address")
    @classmethod
    def _bind(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        local = ipaddress.ip_address(value)
        public = info.data.get("outbound_ip")
        if public is not None and ipaddress.ip_address(public).version != local.version:
            raise ValueError(f"{local} and outbound_ip {public} are not of one IP version")
        return str(local)

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: tuple[SourceConfig, ...]) -> tuple[SourceConfig, ...]:
        seen: set[str] = set()
        for entry in value:
            if entry.public_ip in seen:
                raise ValueError(f"public_ip {entry.public_ip} is listed twice")
            seen.add(entry.public_ip)
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not value or any(c in value for c in " \r\n\t"):
            raise ValueError("must be a host name without spaces")
        return value

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _host_port(item, 53)
        return value

    @field_validator("relay")
    @classmethod
    def _relay(cls, value: str | None) -> str | None:
        if value:
            _host_port(value, 25)
        return value or None

    @model_validator(mode="after")
    def _dnssec_resolvers(self) -> Config:
        if self.dnssec == "trust-ad" and not self.nameservers:
            # the system's resolvers may be anything; an AD bit is only as
            # good as the resolver that set it and the path to it
            raise ValueError(
                "dnssec: trust-ad needs the validating resolvers' addresses in nameservers"
            )
        return self

    @model_validator(mode="after")
    def _region_known(self) -> Config:
        merged = {**REGION_PRESETS, **self.regions}
        if self.region not in merged:
            raise ValueError(f"region {self.region!r} has no settings")
        object.__setattr__(self, "regions", merged)
        return self

    @property
    def region_settings(self) -> RegionConfig:
        return self.regions[self.region]

    @property
    def dkim_domain(self) -> str:
        return self.dkim.domain or self.region_settings.platform_host

    @property
    def bounce_domain(self) -> str:
        return self.feedback.bounce_domain or f"bounces.{self.region_settings.platform_host}"

    @property
    def source_pool(self) -> tuple[SourceConfig, ...]:
        """The addresses mail leaves from, EHLO names filled in: the
        ``sources`` pool, or the one entry of ``outbound_ip`` and
        ``bind_address`` (bounded only by the destination limits)."""
        if not self.sources:
            return (
                SourceConfig(
                    public_ip=self.outbound_ip,
                    bind_address=self.bind_address,
                    ehlo=self.hostname,
                    connections=1000,
                ),
            )
        return tuple(
            entry if entry.ehlo else entry.model_copy(update={"ehlo": self.hostname})
            for entry in self.sources
        )

    @property
    def spf_addresses(self) -> tuple[str, ...]:
        """Every public address a message may leave from."""
        return tuple(entry.public_ip for entry in self.source_pool)

    @property
    def relay_address(self) -> tuple[str, int] | None:
        return _host_port(self.relay, 25) if self.relay else None

    def check_production(self, *, api: bool, delivers: bool) -> None:
        """What ``serve`` and ``worker`` check before starting outside
        ``--dev``. ``api``: the node serves the HTTP API (its keys are
        checked); ``delivers``: it runs the engine, so it must be able to
        build the service's one-click unsubscribe URL of every message
        unless ``api.unsubscribe`` is false.

        Raises ConfigError naming the setting: a missing secret or public
        URL, a secret that was published as a default, is empty, or is
        shorter than 32 bytes.
        """
        cfg = self.api
        if api:
            for index, key in enumerate(cfg.keys):
                _check_secret(f"api.keys[{index}]", key)
        # an API node reads the tokens of /u/ links, a delivering node makes them
        if cfg.unsubscribe and (api or delivers):
            for name, value in (("api.secret", cfg.secret), ("api.public_url", cfg.public_url)):
                if value is None:
                    raise ConfigError(
                        name,
                        "required to build the one-click unsubscribe URL of every message "
                        f"(MAILER_{name.upper().replace('.', '__')}); "
                        "set api.unsubscribe = false to send without it",
                    )
        if cfg.secret is not None:
            _check_secret("api.secret", cfg.secret)
        password = _database_password(self.database)
        if password is not None and password in KNOWN_DEFAULT_SECRETS:
            raise ConfigError("database", "the password is a published default; choose another")


def _check_secret(field: str, value: str) -> None:
    """Raises ConfigError(field) for a known default, empty or short secret."""
    if value in KNOWN_DEFAULT_SECRETS:
        raise ConfigError(
            field, "is a published default secret; make one, e.g. `openssl rand -base64 33`"
        )
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError(
            field,
            f"must be at least {MIN_SECRET_BYTES} bytes long outside --dev "
            f"(it has {len(value.encode('utf-8'))})",
        )


def _database_password(url: str) -> str | None:
    """The password of a postgresql:// URL; None when it has none."""
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return None if password is None else unquote(password)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


_LIST_KEYS = {("nameservers",), ("api", "keys"), ("feedback", "loop_addresses")}


_LIST_KEYS = {("nameservers",), ("api", "keys"), ("webhooks", "allow")}


#: The command line's --log-format (how a process logs, not a setting).
LOG_FORMAT_ENV = "MAILER_LOG_FORMAT"
# MAILER_* variables that are not settings: the config file's path, the
# log format, and those of the test suite and the benchmark
_NOT_SETTINGS = (CONFIG_ENV, LOG_FORMAT_ENV, "MAILER_TEST_", "MAILER_BENCH_")


_FILE_SUFFIX = "_FILE"


def _read_secret_file(variable: str, path: str) -> str:
    """The text of the file a ``MAILER_…_FILE`` variable names, without its
    trailing line end. Raises ConfigError naming the variable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(variable, f"{path} is not UTF-8 text") from exc
    return text.rstrip("\r\n")


def _env_items(environ: Mapping[str, str]) -> list[tuple[str, str, bool]]:
    """(variable name without _FILE, raw value, from a file) of every
    MAILER_* setting. Raises ConfigError when a setting is given both ways
    or its file cannot be read."""
    items: list[tuple[str, str, bool]] = []
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        if name.endswith(_FILE_SUFFIX) and len(name) > len(ENV_PREFIX) + len(_FILE_SUFFIX):
            plain = name.removesuffix(_FILE_SUFFIX)
            if plain in environ:
                raise ConfigError(name, f"{plain} is set too; set one of them")
            items.append((plain, _read_secret_file(name, raw), True))
        else:
            items.append((name, raw, False))
    return items


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw, from_file in _env_items(environ):
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            continue
        if path in _LIST_KEYS and from_file:
            value: Any = [item.strip() for item in re.split(r"[,\n]", raw) if item.strip()]
        elif from_file:
            # a secret's text as it is: never read as a TOML number or list
            value = raw
        else:
            value = _parse_env_value(raw)
        if path in _LIST_KEYS and not isinstance(value, list):
            value = [item.strip() for item in raw.split(",") if item.strip()]
        node = overrides
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return overrides


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the TOML file (``path``, else ``$MAILER_CONFIG``, else defaults),
    apply environment and explicit overrides, and validate.

    Raises ConfigError naming the first offending key.
    """
    env = os.environ if environ is None else environ
    path = path or env.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError("config", f"file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                "config", f"{path} is not UTF-8 (byte {exc.start}): save it as UTF-8"
            ) from exc
        except OSError as exc:
            raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(key, first["msg"]) from exc
