"""What the connector counts for TLS reports (RFC 8460), one count per TLS
session, against real sinks on loopback: the policy's failures by result
type, successes, and no count where no TLS session was made."""

from __future__ import annotations

from collections.abc import Callable

from mailer.config import SourceConfig, TLSPolicy
from mailer.delivery.connector import Connector, RouteFailure
from mailer.delivery.tls.applied import apply_policy
from mailer.delivery.tls.counter import TLSCounter
from mailer.delivery.tls.policy import Mode, STSPolicy
from mailer.dev.certs import TestCerts
from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.sink.runner import Sink
from mailer.store.tlsrpt import TLSCount

SOURCE = SourceConfig(public_ip="192.0.2.10")


def connector(dns: DNSServer, port: int, certs: TestCerts, counter: TLSCounter) -> Connector:
    return Connector(
        Resolver([dns.address], timeout=2.0),
        helo="mailer.test",
        port=port,
        timeout=5,
        cafile=str(certs.ca_path),
        tls_counter=counter,
    )


def summary(counts: list[TLSCount]) -> dict[tuple[str, str, str], int]:
    return {(c.result_type, c.receiving_mx, c.receiving_ip): c.count for c in counts}


async def test_testing_policy_counts_one_failure_per_session_and_successes(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts, make_sink: Callable[..., Sink]
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    counter = TLSCounter()
    conn = connector(dns_server, smtp_port, certs, counter)
    # mx1 matches and shows its own certificate: a success
    ok = apply_policy(TLSPolicy.ENCRYPT, STSPolicy(Mode.TESTING, ("*.dest.test",), 86400))
    session = await conn.connect("dest.test", ok, SOURCE)
    await session.close()
    # the policy names other hosts: mx1 would have been refused, once
    other = apply_policy(TLSPolicy.ENCRYPT, STSPolicy(Mode.TESTING, ("mx.other.test",), 86400))
    session = await conn.connect("dest.test", other, SOURCE)
    await session.close()
    counts = counter.drain()
    assert {(c.policy_type, c.mx_host): c.count for c in counts if not c.result_type} == {
        ("sts", ("*.dest.test",)): 1
    }
    [failed] = [c for c in counts if c.result_type]
    assert (failed.result_type, failed.reason_code, failed.count) == (
        "validation-failure",
        "mta-sts-mismatch",
        1,
    )
    assert (failed.receiving_mx, failed.receiving_ip, failed.sending_ip) == (
        "mx1.dest.test",
        "127.0.0.2",
        "192.0.2.10",
    )
    assert failed.mx_host == ("mx.other.test",)


async def test_expired_certificate_and_no_starttls_under_enforce(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts, make_sink: Callable[..., Sink]
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test", tls_cert=certs.expired(["mx1.dest.test"]))
    make_sink("127.0.0.3", hostname="mx2.dest.test", starttls=False)
    counter = TLSCounter()
    conn = connector(dns_server, smtp_port, certs, counter)
    enforce = apply_policy(TLSPolicy.ENCRYPT, STSPolicy(Mode.ENFORCE, ("*.dest.test",), 86400))
    try:
        await conn.connect("dest.test", enforce, SOURCE)
    except RouteFailure:
        pass
    else:
        raise AssertionError("neither MX may be used under enforce")
    assert summary(counter.drain()) == {
        ("certificate-expired", "mx1.dest.test", "127.0.0.2"): 1,
        ("starttls-not-supported", "mx2.dest.test", "127.0.0.3"): 1,
    }


async def test_unreachable_hosts_are_no_session_and_plain_encrypt_is_no_policy_found(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts, make_sink: Callable[..., Sink]
) -> None:
    # mx1 (127.0.0.2) is not listening; mx2 takes the mail
    make_sink("127.0.0.3", hostname="mx2.dest.test")
    counter = TLSCounter()
    conn = connector(dns_server, smtp_port, certs, counter)
    session = await conn.connect("dest.test", TLSPolicy.ENCRYPT, SOURCE)
    await session.close()
    [count] = counter.drain()
    assert (count.policy_type, count.result_type, count.count) == ("no-policy-found", "", 1)


async def test_relay_mode_counts_nothing(
    dns_server: DNSServer, smtp_port: int, certs: TestCerts, make_sink: Callable[..., Sink]
) -> None:
    make_sink("127.0.0.2", hostname="mx1.dest.test")
    counter = TLSCounter()
    relay = Connector(
        Resolver([dns_server.address], timeout=2.0),
        helo="mailer.test",
        relay=("127.0.0.2", smtp_port),
        tls_counter=counter,
    )
    session = await relay.connect("dest.test", TLSPolicy.ENCRYPT, SOURCE)
    await session.close()
    assert relay.tls_counter is None
    assert counter.drain() == []
