"""The loopback DNS server of the test kit, queried with dnspython as a client."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from mailer.dev.dnsserver import DNSServer, make_rdatas, txt_strings

ZONE = {
    "example.test": {
        "A": ["127.0.0.10"],
        "AAAA": ["::1"],
        "MX": [(10, "mx1.example.test"), (20, "MX2.Example.Test.")],
        "TXT": ["v=spf1 ip4:127.0.0.10 -all"],
        "ttl": 120,
    },
    "alias.example.test": {"CNAME": ["example.test"]},
    "dangling.example.test": {"CNAME": ["gone.example.test"]},
    "a.b.deep.test": {"A": ["127.0.0.11"]},
    "10.0.0.127.in-addr.arpa": {"PTR": ["mail.example.test"]},
    "null.test": {"MX": [(0, ".")]},
}


@pytest.fixture
def server() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as running:
        yield running


def udp(server: DNSServer, name: str, rdtype: str, timeout: float = 2.0) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=timeout)


def tcp(server: DNSServer, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=2.0)


def answer_texts(response: dns.message.Message) -> list[str]:
    return [rdata.to_text() for rrset in response.answer for rdata in rrset]


def test_answers_a_over_udp_and_tcp_on_the_same_port(server: DNSServer) -> None:
    assert server.address == f"127.0.0.1:{server.port}"
    for response in (udp(server, "example.test", "A"), tcp(server, "example.test", "A")):
        assert response.rcode() == dns.rcode.NOERROR
        assert response.flags & dns.flags.AA
        assert answer_texts(response) == ["127.0.0.10"]
        assert response.answer[0].ttl == 120


def test_names_are_case_insensitive_with_or_without_trailing_dot(server: DNSServer) -> None:
    assert answer_texts(udp(server, "EXAMPLE.Test.", "AAAA")) == ["::1"]


def test_mx_values_are_preference_exchange_pairs(server: DNSServer) -> None:
    texts = answer_texts(udp(server, "example.test", "MX"))
    assert sorted(text.lower() for text in texts) == [
        "10 mx1.example.test.",
        "20 mx2.example.test.",
    ]
    assert answer_texts(udp(server, "null.test", "MX")) == ["0 ."]


def test_ptr_answer(server: DNSServer) -> None:
    assert answer_texts(udp(server, "10.0.0.127.in-addr.arpa", "PTR")) == ["mail.example.test."]


def test_missing_name_is_nxdomain_with_soa(server: DNSServer) -> None:
    response = udp(server, "nope.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


def test_missing_type_is_nodata_with_soa_carrying_the_negative_ttl() -> None:
    with DNSServer(ZONE, negative_ttl=42) as server:
        response = udp(server, "a.b.deep.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    soa = response.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa[0].minimum == 42
    # an ancestor of the question, so resolvers take it as the zone's SOA
    assert dns.message.make_query("a.b.deep.test", "MX").question[0].name.is_subdomain(soa.name)


def test_explicit_soa_is_used_for_negative_answers() -> None:
    zone = {"zone.test": {"SOA": ["ns.zone.test. admin.zone.test. 7 1 1 1 30"]}}
    with DNSServer(zone) as server:
        response = udp(server, "missing.zone.test", "TXT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.authority[0][0].serial == 7


def test_empty_non_terminal_is_nodata_not_nxdomain(server: DNSServer) -> None:
    response = udp(server, "b.deep.test", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []


def test_cname_is_followed_within_the_data(server: DNSServer) -> None:
    response = udp(server, "alias.example.test", "A")
    assert [rrset.rdtype for rrset in response.answer] == [dns.rdatatype.CNAME, dns.rdatatype.A]
    assert answer_texts(response)[-1] == "127.0.0.10"
    dangling = udp(server, "dangling.example.test", "A")
    assert dangling.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in dangling.answer] == [dns.rdatatype.CNAME]


def test_long_txt_string_is_split_into_255_byte_strings(server: DNSServer) -> None:
    server.set("long.test", "TXT", ["x" * 300])
    (rdata,) = tcp(server, "long.test", "TXT").answer[0]
    assert [len(s) for s in rdata.strings] == [255, 45]


def test_tuple_txt_value_gives_the_strings_explicitly(server: DNSServer) -> None:
    server.set("parts.test", "TXT", [("v=DKIM1; ", "p=abc")])
    (rdata,) = udp(server, "parts.test", "TXT").answer[0]
    assert rdata.strings == (b"v=DKIM1; ", b"p=abc")


def test_udp_answer_over_512_bytes_is_truncated_and_complete_over_tcp(server: DNSServer) -> None:
    server.set("big.test", "TXT", [f"record-{i}-" + "y" * 90 for i in range(8)])
    over_udp = udp(server, "big.test", "TXT")
    assert over_udp.flags & dns.flags.TC
    assert over_udp.answer == []
    over_tcp = tcp(server, "big.test", "TXT")
    assert not over_tcp.flags & dns.flags.TC
    assert len(over_tcp.answer[0]) == 8


def test_fail_answers_with_the_rcode_until_healed(server: DNSServer) -> None:
    server.fail("example.test")
    assert udp(server, "example.test", "A").rcode() == dns.rcode.SERVFAIL
    server.fail("example.test", "REFUSED")
    assert udp(server, "example.test", "MX").rcode() == dns.rcode.REFUSED
    server.heal("example.test")
    assert answer_texts(udp(server, "example.test", "A")) == ["127.0.0.10"]


def test_fail_can_be_limited_to_one_type(server: DNSServer) -> None:
    server.fail("example.test", rdtype="AAAA")
    assert udp(server, "example.test", "AAAA").rcode() == dns.rcode.SERVFAIL
    assert udp(server, "example.test", "A").rcode() == dns.rcode.NOERROR


def test_drop_never_answers_until_healed(server: DNSServer) -> None:
    server.drop("example.test")
    with pytest.raises(dns.exception.Timeout):
        udp(server, "example.test", "A", timeout=0.3)
    server.heal("example.test")
    assert answer_texts(udp(server, "example.test", "A")) == ["127.0.0.10"]


def test_set_replaces_an_rrset_and_update_merges_names(server: DNSServer) -> None:
    server.set("example.test", "A", ["127.0.0.20", "127.0.0.21"], ttl=5)
    response = udp(server, "example.test", "A")
    assert sorted(answer_texts(response)) == ["127.0.0.20", "127.0.0.21"]
    assert response.answer[0].ttl == 5
    server.update({"example.test": {"TXT": ["new"]}, "other.test": {"A": ["127.0.0.30"]}})
    assert answer_texts(udp(server, "example.test", "TXT")) == ['"new"']
    assert answer_texts(udp(server, "example.test", "AAAA")) == ["::1"]
    assert answer_texts(udp(server, "other.test", "A")) == ["127.0.0.30"]


def test_remove_one_type_gives_nodata_and_the_whole_name_nxdomain(server: DNSServer) -> None:
    server.set("a.b.deep.test", "TXT", ["kept"])
    server.remove("a.b.deep.test", "A")
    response = udp(server, "a.b.deep.test", "A")
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])
    server.remove("a.b.deep.test")
    assert udp(server, "a.b.deep.test", "TXT").rcode() == dns.rcode.NXDOMAIN


def test_removing_the_last_rrset_removes_the_name(server: DNSServer) -> None:
    server.remove("a.b.deep.test", "A")
    assert udp(server, "a.b.deep.test", "A").rcode() == dns.rcode.NXDOMAIN


def test_removed_name_with_descendants_stays_an_empty_non_terminal(server: DNSServer) -> None:
    server.remove("example.test")
    response = udp(server, "example.test", "A")
    assert (response.rcode(), response.answer) == (dns.rcode.NOERROR, [])


def test_queries_are_logged_by_name_and_type(server: DNSServer) -> None:
    udp(server, "Example.Test", "MX")
    udp(server, "nope.test", "TXT")
    assert server.queries == [("example.test", "MX"), ("nope.test", "TXT")]


def test_restart_keeps_the_port_and_the_data() -> None:
    server = DNSServer(ZONE)
    with server:
        port = server.port
    with server:
        assert server.port == port
        assert answer_texts(udp(server, "example.test", "A")) == ["127.0.0.10"]


def test_port_taken_by_another_socket_fails_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        server = DNSServer(port=taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            server.start()


async def test_async_context_manager_serves_while_the_loop_runs() -> None:
    async with DNSServer(ZONE) as server:
        query = dns.message.make_query("example.test", "A")
        response = await dns.asyncquery.udp(query, "127.0.0.1", port=server.port, timeout=2)
    assert answer_texts(response) == ["127.0.0.10"]


def test_txt_strings_split_utf8_bytes_and_check_explicit_lengths() -> None:
    assert txt_strings("") == [b""]
    assert txt_strings("é" * 200) == ["é".encode() * 127 + b"\xc3", b"\xa9" + "é".encode() * 72]
    with pytest.raises(ValueError, match="255"):
        txt_strings(("z" * 256,))


@pytest.mark.parametrize(
    ("rdtype", "values"),
    [
        ("A", ["not-an-address"]),
        ("MX", [("10", "mx.test")]),
        ("MX", ["mx.test"]),
        ("TXT", [42]),
        ("A", []),
        ("BOGUS", ["x"]),
    ],
)
def test_values_of_the_wrong_shape_are_rejected(rdtype: str, values: list[object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any message naming the value will do
        make_rdatas(rdtype, values)


def test_command_line_serves_a_json_zone_until_sigterm(tmp_path: Path) -> None:
    zone = tmp_path / "zone.json"
    zone.write_text(
        json.dumps(
            {
                "cli.test": {"MX": [[10, "mx.cli.test"]], "TXT": [["a", "b"]], "ttl": 60},
                "mx.cli.test": {"A": ["127.0.0.40"]},
            }
        )
    )
    command = [sys.executable, "-m", "mailer.dev.dnsserver"]
    command += ["--listen", "127.0.0.1:0", "--zone", str(zone)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("listening on 127.0.0.1:")
            port = int(line.rsplit(":", 1)[1])
            query = dns.message.make_query("cli.test", "MX")
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
            assert answer_texts(response) == ["10 mx.cli.test."]
            query = dns.message.make_query("cli.test", "TXT")
            txt = dns.query.udp(query, "127.0.0.1", port=port, timeout=5)
            assert txt.answer[0][0].strings == (b"a", b"b")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_tlsa_records_in_presentation_form(server: DNSServer) -> None:
    digest = "ab" * 32
    server.set("_25._tcp.mx1.example.test", "TLSA", [f"3 1 1 {digest}", "2 0 2 " + "cd" * 64])
    assert sorted(answer_texts(tcp(server, "_25._tcp.mx1.example.test", "TLSA"))) == [
        "2 0 2 " + "cd" * 64,
        f"3 1 1 {digest}",
    ]
    with pytest.raises(ValueError, match="invalid TLSA value"):
        server.set("_25._tcp.mx1.example.test", "TLSA", ["3 1 1 not-hex"])


def ad_query(server: DNSServer, name: str, *, ad: bool = True) -> dns.message.Message:
    query = dns.message.make_query(name, "A")
    if ad:
        query.flags |= dns.flags.AD
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2.0)


def test_ad_bit_globally_per_name_and_only_when_asked(server: DNSServer) -> None:
    assert not ad_query(server, "example.test").flags & dns.flags.AD
    server.secure()
    assert ad_query(server, "example.test").flags & dns.flags.AD
    # a negative answer is as secure as the zone says
    assert ad_query(server, "missing.example.test").flags & dns.flags.AD
    # a client that did not ask (neither AD nor DO) is not told
    assert not ad_query(server, "example.test", ad=False).flags & dns.flags.AD
    do = dns.message.make_query("example.test", "A", want_dnssec=True)
    assert dns.query.udp(do, "127.0.0.1", port=server.port, timeout=2.0).flags & dns.flags.AD
    server.secure("example.test", on=False)
    assert not ad_query(server, "example.test").flags & dns.flags.AD
    assert ad_query(server, "a.b.deep.test").flags & dns.flags.AD
    server.secure(on=False)
    server.secure("a.b.deep.test")
    assert ad_query(server, "a.b.deep.test").flags & dns.flags.AD
    assert not ad_query(server, "alias.example.test").flags & dns.flags.AD
    # a failing name answers SERVFAIL without AD, as a validator does for bogus data
    server.fail("a.b.deep.test")
    response = ad_query(server, "a.b.deep.test")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert not response.flags & dns.flags.AD
