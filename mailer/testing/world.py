"""The one test world: the domains, DNS zone, DKIM keys, config and
recipients that the pytest plugin's fixtures (``mailer.pytest_plugin``)
and this project's own tests are built from.

- ``mailer.test`` is the platform: our signing domain (an RSA key,
  selector ``rsa1``, and an Ed25519 one, ``ed1``) and, with
  :func:`platform_region`, the neutral sender's domain;
- ``acme.test`` is a customer with a DKIM key of its own (``cust1``);
- ``dest.test`` is where recipients are: MX ``mx1.dest.test`` (preferred)
  and ``mx2.dest.test``, on loopback addresses of their own
  (127.0.0.2 and .3), and ``dead.dest.test`` (127.0.0.9) where nothing
  listens.

Without :func:`spf_records` the customer publishes no SPF (the neutral
sender, "spf=none"); with them the platform may send for the customer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailer.config import Config, load_config
from mailer.enqueue import RecipientInput
from mailer.message.keys import KeyStore, dns_record_value

__all__ = [
    "CUSTOMER_DOMAIN",
    "CUSTOMER_SELECTOR",
    "DEST_DOMAIN",
    "ED25519_SELECTOR",
    "MX_HOST",
    "OUR_DOMAIN",
    "PLATFORM_IP",
    "SELECTOR",
    "build_config",
    "dest_zone",
    "dkim_zone",
    "make_keys",
    "merge",
    "numbered",
    "people",
    "platform_region",
    "spf_records",
]

#: Our signing domain, the platform.
OUR_DOMAIN = "mailer.test"
#: A customer with a DKIM key of its own.
CUSTOMER_DOMAIN = "acme.test"
#: The recipients' domain.
DEST_DOMAIN = "dest.test"
#: The preferred MX of DEST_DOMAIN, and the name on a sink's certificate.
MX_HOST = f"mx1.{DEST_DOMAIN}"
#: Selectors: our RSA key, our Ed25519 key, the customer's RSA key.
SELECTOR = "rsa1"
ED25519_SELECTOR = "ed1"
CUSTOMER_SELECTOR = "cust1"
#: The address the platform sends from when SPF is to pass (loopback).
PLATFORM_IP = "127.0.0.1"


def make_keys(root: Path) -> Path:
    """A key store under ``root``: RSA and Ed25519 for our domain, RSA for
    the customer; returns ``root``. Raises KeyMaterialError when it cannot
    be written."""
    store = KeyStore(root)
    store.generate(OUR_DOMAIN, SELECTOR)
    store.generate(OUR_DOMAIN, ED25519_SELECTOR, algorithm="ed25519")
    store.generate(CUSTOMER_DOMAIN, CUSTOMER_SELECTOR)
    return root


def dkim_zone(keys_dir: Path) -> dict[str, dict[str, Any]]:
    """The TXT records publishing every key of ``keys_dir``. Raises
    KeyMaterialError for an unreadable key."""
    return {
        f"{info.selector}._domainkey.{info.domain}": {"TXT": [dns_record_value(info)]}
        for info in KeyStore(keys_dir).list()
    }


def dest_zone(mx1: str = "127.0.0.2", mx2: str = "127.0.0.3") -> dict[str, dict[str, Any]]:
    """DEST_DOMAIN with its two MX hosts at ``mx1`` and ``mx2``, and a host
    where nothing listens."""
    return {
        DEST_DOMAIN: {"MX": [(10, MX_HOST), (20, f"mx2.{DEST_DOMAIN}")]},
        MX_HOST: {"A": [mx1]},
        f"mx2.{DEST_DOMAIN}": {"A": [mx2]},
        f"dead.{DEST_DOMAIN}": {"A": ["127.0.0.9"]},
    }


def spf_records(ip: str = PLATFORM_IP) -> dict[str, dict[str, Any]]:
    """SPF that lets ``ip`` send for the platform and, through its include,
    for the customer."""
    spf = f"v=spf1 include:_spf.{OUR_DOMAIN} -all"
    return {
        f"_spf.{OUR_DOMAIN}": {"TXT": [f"v=spf1 ip4:{ip} -all"]},
        OUR_DOMAIN: {"TXT": [spf]},
        CUSTOMER_DOMAIN: {"TXT": [spf]},
    }


def platform_region() -> dict[str, Any]:
    """Both regions pointed at OUR_DOMAIN (the region's platform host, SPF
    include and neutral sender), for ``regions`` in :func:`build_config`."""
    region = {
        "platform_host": OUR_DOMAIN,
        "spf_include": f"_spf.{OUR_DOMAIN}",
        "neutral_sender": f"survey@{OUR_DOMAIN}",
    }
    return {"azure": region, "de": region}


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top, tables merged key by key (pure)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(
    directory: Path,
    nameserver: str,
    smtp_port: int,
    keys_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """The test world's config: a SQLite file in ``directory``, DNS from
    ``nameserver`` (``host:port``), SMTP to ``smtp_port``, signing for
    OUR_DOMAIN with the keys of ``keys_dir`` (unsigned without it), quick
    retries and timeouts; ``overrides`` deep-merged on top. The
    developer's ``MAILER_*`` variables are not read. Raises ConfigError."""
    base: dict[str, Any] = {
        "hostname": OUR_DOMAIN,
        "database": str(directory / "mailer.sqlite3"),
        "keys_dir": str(keys_dir or directory / "no-keys"),
        "dkim": {"domain": OUR_DOMAIN, "required": keys_dir is not None},
        "outbound_ip": "192.0.2.10",
        "nameservers": [nameserver],
        "smtp_port": smtp_port,
        "retry": {"base": 0.2, "factor": 1.0, "jitter": 0.0, "max_delay": 0.2, "max_age": 60},
        "worker": {
            "poll_interval": 0.1,
            "idle_timeout": 0.1,
            "lease_seconds": 30,
            "smtp_timeout": 5,
            "dns_timeout": 1,
        },
    }
    return load_config(environ={}, overrides=merge(base, overrides or {}))


def people(*names: str, domain: str = DEST_DOMAIN) -> list[RecipientInput]:
    """One recipient per name: ``name@domain`` (or the name itself when it
    is an address), displayed as the local part, with ``token`` = the
    local part for the templates."""
    found = []
    for name in names:
        address = name if "@" in name else f"{name}@{domain}"
        local = address.partition("@")[0]
        found.append(RecipientInput(address, local, {"token": local}))
    return found


def numbered(n: int, domain: str = DEST_DOMAIN) -> list[RecipientInput]:
    """``person0@domain`` … with non-ASCII display names and tokens
    ``t0`` …, for tests that need many recipients."""
    return [
        RecipientInput(f"person{i}@{domain}", f"Jürgen Weiß {i}", {"token": f"t{i}"})
        for i in range(n)
    ]
