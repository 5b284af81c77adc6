"""Prometheus metrics of webhook delivery, in the process's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mailer_webhook_requests",
            "Webhook requests by outcome (delivered, failed, disabled) and reply class.",
            ["outcome", "status"],
            registry=registry,
        )
        self.events = Counter(
            "mailer_webhook_events",
            "Events acknowledged by webhook receivers (2xx).",
            registry=registry,
        )
        self.disabled = Counter(
            "mailer_webhook_endpoints_disabled",
            "Endpoints disabled by this process, by reason (gone, expired).",
            ["reason"],
            registry=registry,
        )
        self.refused = Counter(
            "mailer_webhook_refused",
            "Deliveries refused before connecting because the address is not allowed.",
            registry=registry,
        )
        self.latency = Histogram(
            "mailer_webhook_request_seconds",
            "Duration of one webhook request.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0),
            registry=registry,
        )
