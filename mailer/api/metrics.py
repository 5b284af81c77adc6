"""Prometheus metrics of one API instance, in a registry it owns (no
process-global default registry: several apps in one process, as in tests,
keep their own counts). ``/metrics`` serves these after the app's own
(:mod:`mailer.metrics`: engine outcomes, queue depth)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

__all__ = ["ApiMetrics"]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mailer_api_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.recipients = Counter(
            "mailer_api_recipients",
            "Recipients of enqueue requests, accepted or rejected at the door",
            ["outcome"],
            registry=self.registry,
        )
        self.unsubscribes = Counter(
            "mailer_unsubscribes",
            "One-click unsubscriptions that suppressed an address",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
