"""Prometheus metrics: counted by the engine, served for ``mailer worker``
on the configured port, one registry per Metrics."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from mailer.api.metrics import ApiMetrics
from mailer.app import App
from mailer.config import load_config
from mailer.dev.dnsserver import DNSServer
from mailer.errors import ConfigError
from mailer.metrics import Metrics, MetricsServer, destination_label, parse_request_line
from mailer.reasons import Reason, State
from mailer.sink.runner import pick_port
from mailer.store.models import Attempt, Send
from mailer.store.sqlite.store import SQLiteStore
from tests.conftest import SURVEY, make_config, run_until_settled
from tests.kit import people

DOCS = Path(__file__).parent.parent / "docs" / "operations.md"


async def test_engine_counts_outcomes_attempts_latency_and_tls_failures(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int, make_sink
) -> None:
    dns_server.set("notls.test", "MX", [(10, "mx.notls.test")])
    dns_server.set("mx.notls.test", "A", ["127.0.0.5"])
    make_sink("127.0.0.5", starttls=False)
    make_sink("127.0.0.2").script("gone@dest.test", "550 5.1.1 No such user")
    make_sink("127.0.0.3")
    config = make_config(
        tmp_path, dns_server, smtp_port, retry={"max_age": 0.5},
        metrics={"destinations": ["notls.test"]},
    )  # fmt: skip
    async with App(config) as app:
        await app.enqueue(
            SURVEY, [*people("anna", "bert", "gone"), *people("x", domain="notls.test")]
        )
        await run_until_settled(app)
        sample = app.metrics.registry.get_sample_value
        assert sample("mailer_sends_total", {"state": "delivered", "reason": "delivered"}) == 2
        assert sample("mailer_sends_total", {"state": "bounced", "reason": "mailbox-unknown"}) == 1
        assert sample("mailer_sends_total", {"state": "failed", "reason": "expired"}) == 1
        assert sample("mailer_attempts_total", {"reason": "delivered"}) == 2
        # notls.test is configured by name: it gets a label of its own
        tls = sample(
            "mailer_tls_failures_total", {"destination": "notls.test", "reason": "tls-unavailable"}
        )
        assert tls is not None
        assert tls >= 1
        assert sample("mailer_attempts_total", {"reason": "tls-unavailable"}) == tls
        assert sample("mailer_delivery_latency_seconds_count") == 2
        assert sample("mailer_attempt_duration_seconds_count") == 3 + tls


async def test_worker_serves_metrics_on_the_configured_port_until_the_app_closes(
    tmp_path: Path, dns_server: DNSServer, smtp_port: int
) -> None:
    port = pick_port(["127.0.0.1"])
    config = make_config(tmp_path, dns_server, smtp_port, worker={"metrics_port": port})
    url = f"http://127.0.0.1:{port}"
    async with App(config) as app:
        await app.enqueue(SURVEY, people("anna", "bert"))
        await app.store.hold("domain", "held.test", now=0.0)
        await app.enqueue(SURVEY, people("cora", domain="held.test"))
        await app.engine()  # built, not run: the endpoint is up
        async with httpx.AsyncClient() as client:
            scraped = await client.get(f"{url}/metrics")
            missing = await client.get(f"{url}/")
            posted = await client.post(f"{url}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert 'mailer_queue_depth{state="queued"} 2.0' in scraped.text
    assert 'mailer_queue_depth{state="held"} 1.0' in scraped.text
    assert 'mailer_queue_depth{state="deferred"} 0.0' in scraped.text
    # finished sends are not queue depth
    assert 'mailer_queue_depth{state="delivered"}' not in scraped.text
    # the process's own metrics are exported beside ours
    assert "process_cpu_seconds_total" in scraped.text
    assert "process_resident_memory_bytes" in scraped.text
    assert "# TYPE mailer_delivery_latency_seconds histogram" in scraped.text
    assert missing.status_code == 404
    assert posted.status_code == 405
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/metrics")


async def test_metrics_server_answers_503_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")  # never opened
    async with (
        MetricsServer(Metrics(), store, "127.0.0.1", 0) as server,
        httpx.AsyncClient() as client,
    ):
        response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
    assert response.status_code == 503
    assert "not open" in response.text


def test_every_metrics_object_has_a_registry_of_its_own() -> None:
    one, two = Metrics(), Metrics()
    send = Send(
        id="s1",
        distribution_id="d1",
        account="acme",
        recipient="a@dest.test",
        domain="dest.test",
        name="",
        variables={},
        reference=None,
        message_id="<s1@h>",
        state=State.SENDING,
        reason=Reason.QUEUED,
        due_at=0.0,
        attempts=0,
        created_at=100.0,
        updated_at=100.0,
    )
    attempt = Attempt(101.0, 101.5, Reason.CERTIFICATE, mx_host="mx.dest.test")
    one.finished(send, State.DEFERRED, Reason.CERTIFICATE, attempt, now=101.5)
    labels = {"state": "deferred", "reason": "certificate"}
    assert one.registry.get_sample_value("mailer_sends_total", labels) == 1
    assert two.registry.get_sample_value("mailer_sends_total", labels) is None
    assert REGISTRY.get_sample_value("mailer_sends_total", labels) is None
    # dest.test is not a configured large provider: its label is "other"
    failures = {"destination": "other", "reason": "certificate"}
    assert one.registry.get_sample_value("mailer_tls_failures_total", failures) == 1
    assert one.registry.get_sample_value("mailer_attempt_duration_seconds_sum") == 0.5
    # only deliveries feed the latency histogram
    assert one.registry.get_sample_value("mailer_delivery_latency_seconds_count") == 0


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", ("GET", "/metrics")),
        (b"POST /metrics?x=1 HTTP/1.0\r\n\r\n", ("POST", "/metrics?x=1")),
        (b"garbage\r\n\r\n", ("", "")),
        (b"GET /metrics\r\n\r\n", ("", "")),
    ],
)
def test_request_line_parsing(head: bytes, expected: tuple[str, str]) -> None:
    assert parse_request_line(head) == expected


def test_destination_label_is_bounded_to_the_configured_providers() -> None:
    metrics = Metrics(destinations=["gmail.com"])
    send = Send(
        id="s1", distribution_id="d1", account="acme", recipient="a@x.test", domain="x.test",
        name="", variables={}, reference=None, message_id="<s1@h>", state=State.SENDING,
        reason=Reason.QUEUED, due_at=0.0, attempts=0, created_at=100.0, updated_at=100.0,
    )  # fmt: skip
    attempt = Attempt(101.0, 101.5, Reason.TLS_HANDSHAKE)
    for n in range(50):
        domain = f"customer{n}.test" if n else "gmail.com"
        metrics.finished(
            replace(send, domain=domain), State.DEFERRED, Reason.TLS_HANDSHAKE, attempt, now=102.0
        )
    sampled = {
        s.labels["destination"]
        for family in metrics.registry.collect()
        if family.name == "mailer_tls_failures"
        for s in family.samples
        if s.name == "mailer_tls_failures_total"
    }
    assert sampled == {"gmail.com", "other"}
    assert destination_label("GMAIL.com".lower(), frozenset({"gmail.com"})) == "gmail.com"
    assert destination_label("example.org", frozenset({"gmail.com"})) == "other"


def test_metrics_destinations_config_rejects_what_would_unbound_the_label() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.destinations"):
        load_config(environ={}, overrides={"metrics": {"destinations": ["other"]}})
    many = [f"d{n}.test" for n in range(101)]
    with pytest.raises(ConfigError, match=r"metrics\.destinations"):
        load_config(environ={}, overrides={"metrics": {"destinations": many}})
    config = load_config(environ={}, overrides={"metrics": {"destinations": ["Mail.Example."]}})
    assert config.metrics.destinations == ("mail.example",)


def test_every_exported_metric_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", DOCS.read_text(), flags=re.MULTILINE))
    exported: set[str] = set()
    for registry in (Metrics().registry, ApiMetrics().registry):
        for family in registry.collect():
            exported.update(
                s.name
                for s in family.samples
                if not s.name.endswith(("_bucket", "_count", "_sum", "_created"))
            )
    exported = {
        name.removesuffix("_total") + "_total" if name.endswith("_total") else name
        for name in exported
    }
    histograms = {"mailer_delivery_latency_seconds", "mailer_attempt_duration_seconds"}
    assert exported | histograms <= documented
