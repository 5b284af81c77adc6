"""Where earlier releases kept the loopback DNS server; it lives in
:mod:`mailer.dev.dnsserver` now."""

from mailer.dev.dnsserver import DNSServer, load_zone

__all__ = ["DNSServer", "load_zone"]
