"""The test kit for suites that send through mailer: a loopback DNS server
serving test zones, throw-away certificates, and SMTP sinks (the plain
recording :class:`Sink` and the checking :class:`DevSink` behind ``mailer
sink``), and the one test world (:mod:`mailer.testing.world`: domains,
zone, keys, config, recipients). The pytest plugin (``mailer.pytest_plugin``)
builds its fixtures from these."""

from __future__ import annotations

from mailer.dev.certs import CertFiles, TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.sink.faults import Faults
from mailer.sink.options import SinkOptions
from mailer.sink.record import SinkMessage
from mailer.sink.runner import Sink, pick_port
from mailer.sink.server import DevSink

__all__ = [
    "CertFiles",
    "DNSServer",
    "DevSink",
    "Faults",
    "Sink",
    "SinkMessage",
    "SinkOptions",
    "TestCerts",
    "pick_port",
]
