"""Configuration: one TOML file plus ``MAILER_*`` environment overrides,
validated once at start-up into frozen, typed objects.

An environment variable ``MAILER_RETRY__MAX_AGE=3600`` overrides the key
``retry.max_age``: the part after ``MAILER_`` is split on ``__`` and
lower-cased. Values are read as TOML literals (``25``, ``true``,
``["a", "b"]``) and fall back to a plain string; list-valued keys also take
a comma-separated string (``MAILER_NAMESERVERS=127.0.0.1:5353,10.0.0.1``).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic import (
    ValidationError as PydanticValidationError,
)

from mailer.errors import ConfigError

ENV_PREFIX = "MAILER_"
CONFIG_ENV = "MAILER_CONFIG"

# The real sending IPs of the platform (seed article): configuration values
# only, never a network destination of tests or demos.
NETIGATE_IPS = ("89.45.227.221", "46.254.11.92", "89.45.227.195", "86.107.243.139")


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
    """Split ``host:port`` / ``[v6]:port`` / ``host``; raises ValueError."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or str(default_port)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(default_port)
    if not host:
        raise ValueError(f"{value!r}: empty host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: port must be 1-65535")
    return host, int(port)


class DestinationLimits(_Frozen):
    connections: Annotated[int, Field(ge=1, le=1000)] = 10
    messages_per_connection: Annotated[int, Field(ge=1, le=100_000)] = 100
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


class WorkerConfig(_Frozen):
    # sends leased at once by one worker: also the bound on duplicates
    # after a crash
    max_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 500
    lease_seconds: Annotated[float, Field(gt=0)] = 300.0
    poll_interval: Annotated[float, Field(gt=0)] = 1.0
    # seconds an idle connection waits for more messages before QUIT
    idle_timeout: Annotated[float, Field(ge=0)] = 2.0
    smtp_timeout: Annotated[float, Field(gt=0)] = 60.0
    dns_timeout: Annotated[float, Field(gt=0)] = 5.0
    # Prometheus /metrics of the engine on this port (none: not served),
    # on metrics_host (all interfaces: "0.0.0.0")
    metrics_port: Annotated[int, Field(ge=1, le=65535)] | None = None
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
                raise ValueError(f"{domain!r} is not a domain name")
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
    signing_threads: Annotated[int, Field(ge=0, le=64)] = 2


class IdentityConfig(_Frozen):
    # bounds on how long an SPF-based sender decision is reused
    min_ttl: Annotated[int, Field(ge=0)] = 60
    max_ttl: Annotated[int, Field(ge=1)] = 3600


class ApiConfig(_Frozen):
    """The HTTP API of ``mailer serve``."""

    # host:port the API listens on
    listen: str = "127.0.0.1:8025"
    # bearer tokens accepted on /v1 (none: every /v1 request is refused)
    keys: tuple[str, ...] = ()
    # HMAC key of the unsubscribe tokens in service-provided
    # List-Unsubscribe URLs
    secret: str | None = None
    # https base URL under which /u/{token} reaches this service
    public_url: str | None = None
    # largest request body in bytes (413 beyond)
    max_body: Annotated[int, Field(ge=1024, le=1 << 30)] = 16 * 1024 * 1024

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
        if not value.startswith("https://") or any(c in value for c in ' \r\n\t<>"?#'):
            raise ValueError("must be an https:// URL without query or fragment")
        return value.rstrip("/")

    @property
    def listen_address(self) -> tuple[str, int]:
        return _host_port(self.listen, 8025)


class Config(_Frozen):
    region: Literal["azure", "de"] = "azure"
    regions: dict[str, RegionConfig] = dict(REGION_PRESETS)
    hostname: str = "localhost"
    outbound_ip: str = NETIGATE_IPS[0]
    database: str = "var/mailer.sqlite3"
    keys_dir: Path = Path("keys")
    nameservers: tuple[str, ...] = ()
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
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

    @field_validator("outbound_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))

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
    def relay_address(self) -> tuple[str, int] | None:
        return _host_port(self.relay, 25) if self.relay else None

    @property
    def is_postgres(self) -> bool:
        return self.database.startswith(("postgres://", "postgresql://"))


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


_LIST_KEYS = {("nameservers",), ("api", "keys")}


#: The command line's --log-format (how a process logs, not a setting).
LOG_FORMAT_ENV = "MAILER_LOG_FORMAT"
# MAILER_* variables that are not settings: the config file's path, the
# log format, and those of the test suite and the benchmark
_NOT_SETTINGS = (CONFIG_ENV, LOG_FORMAT_ENV, "MAILER_TEST_", "MAILER_BENCH_")


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            continue
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
    data = _merge(data, _env_overrides(env))
    if overrides:
        data = _merge(data, overrides)
    try:
        return Config.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(key, first["msg"]) from exc
