"""SPF: the record parser (pure) and check_host() against zones served by the
loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network

import pytest

from mailer.dev.dnsserver import DNSServer
from mailer.dns import Resolver
from mailer.errors import ValidationError
from mailer.identity.check_host import SPFOutcome, SPFResult, check_host
from mailer.identity.spf_record import PermError, is_spf_record, parse_record

AZURE_IP = "192.0.2.10"  # the test stand-in for our Azure outbound address
DE_IP = "198.51.100.20"  # ... and for the German one
OTHER_IP = "203.0.113.5"

ZONE: dict[str, dict[str, object]] = {
    # Our region includes, with test addresses per region.
    "_spf.netigate.se": {"TXT": [f"v=spf1 ip4:{AZURE_IP} ip4:192.0.2.11 -all"]},
    "_spf.ntgt.de": {"TXT": [f"v=spf1 ip4:{DE_IP} -all"]},
    "azure.test": {"TXT": ["v=spf1 include:_spf.netigate.se ~all", "some-verification=abc"]},
    "de.test": {"TXT": ["v=spf1 mx include:_spf.ntgt.de ~all"], "MX": [(10, "mx.de.test")]},
    "mx.de.test": {"A": [OTHER_IP]},
    "listed.test": {"TXT": [f"v=spf1 ip4:{AZURE_IP} -all"]},
    "softfail.test": {"TXT": [f"v=spf1 ip4:{OTHER_IP} ~all"]},
    "fail.test": {"TXT": [f"v=spf1 ip4:{OTHER_IP} -all"]},
    "neutral.test": {"TXT": ["v=spf1 ?all"]},
    "empty.test": {"TXT": ["v=spf1"]},
    "norecord.test": {"TXT": ["some-verification=abc", "v=spf10 +all"], "A": [AZURE_IP]},
    "joined.test": {"TXT": [("v=spf1", " ip4:192.0.2.0/24", " -all")]},
    "unjoined.test": {"TXT": [("v=spf1", "ip4:192.0.2.0/24")]},
    "two.test": {"TXT": ["v=spf1 -all", f"v=spf1 ip4:{AZURE_IP} +all"]},
    "broken.test": {"TXT": ["v=spf1 ip4:192.0.2.10/33 -all"]},
    "nonascii.test": {"TXT": ["v=spf1 a:\u00efgarbage.example.com -all"]},
    # Lookup limits.
    "loop-a.test": {"TXT": ["v=spf1 include:loop-b.test -all"]},
    "loop-b.test": {"TXT": ["v=spf1 include:loop-a.test -all"]},
    "self-redirect.test": {"TXT": ["v=spf1 ip4:203.0.113.0/24 redirect=self-redirect.test"]},
    "ten.test": {
        "TXT": [f"v=spf1 a mx a mx a mx a mx a ptr ip4:{AZURE_IP} -all"],
        "A": [OTHER_IP],
        "MX": [(10, "ten.test")],
    },
    "eleven.test": {
        "TXT": [f"v=spf1 a mx a mx a mx a mx a ptr a ip4:{AZURE_IP} -all"],
        "A": [OTHER_IP],
        "MX": [(10, "eleven.test")],
    },
    "nested-eleven.test": {"TXT": [f"v=spf1 a include:eight.test a ip4:{AZURE_IP} -all"]},
    "eight.test": {"TXT": ["v=spf1 a a a a a a a a"], "A": [OTHER_IP]},
    "void-two.test": {"TXT": ["v=spf1 a:nx1.void.test a:nx2.void.test ?all"]},
    "void-three.test": {"TXT": ["v=spf1 a:nx1.void.test exists:nx2.void.test mx:nx3.void.test"]},
    "void.test": {"A": [OTHER_IP]},
    "many-mx.test": {
        "TXT": ["v=spf1 mx -all"],
        "MX": [(i, f"mx{i}.many-mx.test") for i in range(11)],
    },
    "null-mx.test": {"TXT": ["v=spf1 mx ?all"], "MX": [(0, ".")]},
    # Modifiers.
    "redirect.test": {"TXT": ["v=spf1 exp=no.exp.test redirect=_spf.redirect.test"]},
    "_spf.redirect.test": {"TXT": ["v=spf1 ip4:192.0.2.0/28 -all exp=why.exp.test"]},
    "redirect-none.test": {"TXT": ["v=spf1 redirect=norecord.test"]},
    "redirect-unused.test": {"TXT": ["v=spf1 redirect=loop-a.test ~all"]},
    "exp.test": {"TXT": ["v=spf1 -all exp=why.exp.test"]},
    "why.exp.test": {"TXT": ["%{i} may not send for %{d} (ask %{l} at %{o})"]},
    "no.exp.test": {"TXT": ["never shown"]},
    "include-exp.test": {"TXT": ["v=spf1 include:exp.test -all exp=own.exp.test"]},
    "own.exp.test": {"TXT": ["rejected by include-exp"]},
    "bad-exp.test": {"TXT": ["v=spf1 -all exp=bad.exp.test"]},
    "bad.exp.test": {"TXT": ["The %{x}-files"]},
    "two-exp.test": {"TXT": ["v=spf1 -all exp=twice.exp.test"]},
    "twice.exp.test": {"TXT": ["one", "two"]},
    # include results.
    "include-none.test": {"TXT": ["v=spf1 include:norecord.test -all"]},
    "include-perm.test": {"TXT": ["v=spf1 include:broken.test -all"]},
    "include-temp.test": {"TXT": ["v=spf1 include:servfail.test -all"]},
    "include-fail.test": {"TXT": ["v=spf1 include:fail.test ?all"]},
    "servfail.test": {"TXT": ["v=spf1 +all"]},
    "mech-temp.test": {"TXT": ["v=spf1 a:servfail.test -all"]},
    # a / mx with CIDR lengths, IPv6.
    "cidr.test": {"TXT": ["v=spf1 a:hosts.cidr.test/24 -all"]},
    "no-cidr.test": {"TXT": ["v=spf1 a:hosts.cidr.test -all"]},
    "mx-cidr.test": {"TXT": ["v=spf1 mx/24 -all"], "MX": [(5, "hosts.cidr.test")]},
    "dual.test": {"TXT": ["v=spf1 a:hosts.cidr.test/24//64 -all"]},
    "hosts.cidr.test": {"A": ["192.0.2.200"], "AAAA": ["2001:db8:10::dead:beef"]},
    "v6.test": {"TXT": ["v=spf1 ip6:2001:db8:10::/48 -all"]},
    "v6-a.test": {"TXT": ["v=spf1 a -all"], "AAAA": ["2001:db8:20::25"], "A": [OTHER_IP]},
    # ptr and %{p}.
    "10.2.0.192.in-addr.arpa": {"PTR": ["out.sender.test.", "forged.other.test."]},
    "out.sender.test": {"A": [AZURE_IP]},
    "forged.other.test": {"A": [OTHER_IP]},
    "ptr.test": {"TXT": ["v=spf1 ptr:sender.test -all"]},
    "ptr-forged.test": {"TXT": ["v=spf1 ptr:other.test -all"]},
    "p-macro.test": {"TXT": ["v=spf1 exists:%{p}.allowed.p-macro.test -all"]},
    "out.sender.test.allowed.p-macro.test": {"A": ["127.0.0.2"]},
    # HELO identity.
    "helo.test": {"TXT": ["v=spf1 exists:%{l}.%{h}.seen.helo.test -all"]},
    "postmaster.helo.test.seen.helo.test": {"A": ["127.0.0.2"]},
}


@pytest.fixture
def dns() -> Iterator[DNSServer]:
    with DNSServer(ZONE) as server:
        server.fail("servfail.test")
        yield server


@pytest.fixture
def resolver(dns: DNSServer) -> Resolver:
    return Resolver([dns.address], timeout=2.0)


async def spf(
    resolver: Resolver,
    domain: str,
    ip: str = AZURE_IP,
    *,
    sender: str | None = None,
    helo: str | None = None,
) -> SPFOutcome:
    return await check_host(resolver, ip, domain, sender or f"alice@{domain}", helo=helo)


# --- parser (pure) -------------------------------------------------------------


def test_parse_record_reads_mechanisms_qualifiers_and_modifiers() -> None:
    record = parse_record(
        "v=spf1 +a mx/24 -ip4:192.0.2.0/24 ~ip6:2001:DB8::/32 ?ptr:x.test "
        "include:_spf.netigate.se exists:%{i}.x.test redirect=r.test exp=e.test foo=bar -all"
    )
    kinds = [(m.qualifier, m.kind) for m in record.mechanisms]
    assert kinds == [
        (SPFResult.PASS, "a"),
        (SPFResult.PASS, "mx"),
        (SPFResult.FAIL, "ip4"),
        (SPFResult.SOFTFAIL, "ip6"),
        (SPFResult.NEUTRAL, "ptr"),
        (SPFResult.PASS, "include"),
        (SPFResult.PASS, "exists"),
        (SPFResult.FAIL, "all"),
    ]
    assert record.mechanisms[1].cidr4 == 24
    assert record.mechanisms[2].network == IPv4Network("192.0.2.0/24")
    assert record.mechanisms[3].network == IPv6Network("2001:db8::/32")
    assert record.mechanisms[5].text == "include:_spf.netigate.se"
    assert record.redirect is not None
    assert record.redirect.text == "r.test"
    assert record.explanation is not None
    assert record.explanation.text == "e.test"
    assert [name for name, _ in record.unknown_modifiers] == ["foo"]


def test_parse_record_dual_cidr_and_host_bits() -> None:
    record = parse_record("v=spf1 a:h.test/24//64 ip4:192.0.2.77/24")
    assert (record.mechanisms[0].cidr4, record.mechanisms[0].cidr6) == (24, 64)
    assert record.mechanisms[1].network == IPv4Network("192.0.2.0/24")


@pytest.mark.parametrize(
    "text",
    [
        "v=spf1",
        "V=SpF1 ~all",
        "v=spf1  a   -all  ",
        "v=spf1 moo.cow-far_out=man:dog/cat ip4:192.0.2.1 -all",
        "v=spf1 default=+",
        "v=spf1 a:foo:bar/baz.example.com",
        "v=spf1 a:foo.example.xn--zckzah -all",
        "v=spf1 a//0 mx//128 ip6:::1.1.1.1/0",
        "v=spf1 include:o.spf.example.com. ~all",
    ],
)
def test_valid_records_parse(text: str) -> None:
    assert parse_record(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "v=spf1 ip4:192.0.2.1 -all moo",  # unknown mechanism anywhere
        "v=spf1 -all.",
        "v=spf1 -all:foobar",
        "v=spf1 -all/8",
        "v=spf1 ptr/0 -all",
        "v=spf1 a/33 -all",
        "v=spf1 a//129 -all",
        "v=spf1 a/24/64 -all",
        "v=spf1 a: -all",
        "v=spf1 a:example.com:8080",
        "v=spf1 a:abc.123",
        "v=spf1 a:museum",
        "v=spf1 mx:example.-com",
        "v=spf1 include: -all",
        "v=spf1 include -all",
        "v=spf1 include:ip5.example.com/24 -all",
        "v=spf1 exists",
        "v=spf1 exists:mail.example.com/24",
        "v=spf1 ip4",
        "v=spf1 ip4:192.0.2.1/33",
        "v=spf1 ip4:192.0.2.1/032",
        "v=spf1 ip4:192.0.2.1//32",
        "v=spf1 ip4:192.0.2.1:8080",
        "v=spf1 ip4:192.0.2",
        "v=spf1 ip4:192.0.2.01",
        "v=spf1 ip6",
        "v=spf1 ip6:::1.1.1.1/129",
        "v=spf1 ip6:::1.1.1.1//33",
        "v=spf1 ip6::CAFE::BABE",
        "v=spf1 moo.cow/far_out=man:dog/cat",
        "v=spf1 1up=foo",
        "v=spf1 =all",
        "v=spf1 redirect:r.test",
        "v=spf1 exp= -all",
        "v=spf1 ?all redirect=",
        "v=spf1 redirect=-all ?all",
        "v=spf1 -all foo=%abc",
        "v=spf1 exp=a.test -all exp=b.test",
        "v=spf1 redirect=a.test redirect=b.test",
        "v=spf1 a:%{a}.example.com -all",
        "v=spf1 -exists:%(ir).sbl.example.com ?all",
        "v=spf1 -all exp=%{r}.example.com",
        "v=spf1 a:ctrl.example.com\rptr -all",
        "v=spf1 a:example.net \x96all",
        "v=spf1 a:foo.example.com\x00",
    ],
)
def test_syntax_errors_are_permerrors(text: str) -> None:
    with pytest.raises(PermError):
        parse_record(text)


@pytest.mark.parametrize(
    ("text", "spf"),
    [
        ("v=spf1", True),
        ("v=spf1 -all", True),
        ("V=SPF1 -all", True),
        ("v=spf10", False),
        ("v=spf1mx", False),
        ("spf1 -all", False),
        ("google-site-verification=x", False),
    ],
)
def test_record_selection_needs_exact_version_section(text: str, spf: bool) -> None:
    assert is_spf_record(text) is spf


# --- check_host against the loopback DNS server ------------------------------


async def test_our_region_include_passes_for_our_azure_ip(resolver: Resolver) -> None:
    outcome = await spf(resolver, "azure.test")
    assert outcome.result is SPFResult.PASS
    assert outcome.mechanism == "include:_spf.netigate.se"
    assert outcome.domain == "azure.test"
    assert outcome.lookups == 1


async def test_german_include_passes_for_de_ip_and_softfails_for_azure_ip(
    resolver: Resolver,
) -> None:
    de = await spf(resolver, "de.test", DE_IP)
    azure = await spf(resolver, "de.test", AZURE_IP)
    assert (de.result, de.mechanism) == (SPFResult.PASS, "include:_spf.ntgt.de")
    assert (azure.result, azure.mechanism) == (SPFResult.SOFTFAIL, "~all")


async def test_our_ip_listed_with_ip4_passes(resolver: Resolver) -> None:
    outcome = await spf(resolver, "listed.test")
    assert (outcome.result, outcome.mechanism) == (SPFResult.PASS, f"ip4:{AZURE_IP}")
    assert outcome.lookups == 0


@pytest.mark.parametrize(
    ("domain", "result", "mechanism"),
    [
        ("softfail.test", SPFResult.SOFTFAIL, "~all"),
        ("fail.test", SPFResult.FAIL, "-all"),
        ("neutral.test", SPFResult.NEUTRAL, "?all"),
        ("empty.test", SPFResult.NEUTRAL, None),
        ("joined.test", SPFResult.PASS, "ip4:192.0.2.0/24"),
    ],
)
async def test_qualifier_of_the_matching_mechanism_is_the_result(
    resolver: Resolver, domain: str, result: SPFResult, mechanism: str | None
) -> None:
    outcome = await spf(resolver, domain)
    assert (outcome.result, outcome.mechanism) == (result, mechanism)


@pytest.mark.parametrize(
    "domain", ["norecord.test", "nxdomain.test", "unjoined.test", "single-label", "a..b.test"]
)
async def test_no_record_nxdomain_or_invalid_domain_is_none(
    resolver: Resolver, domain: str
) -> None:
    outcome = await spf(resolver, domain)
    assert outcome.result is SPFResult.NONE
    assert outcome.mechanism is None


async def test_two_spf_records_are_permerror(resolver: Resolver) -> None:
    outcome = await spf(resolver, "two.test")
    assert outcome.result is SPFResult.PERMERROR
    assert "2 v=spf1 records" in outcome.explanation


@pytest.mark.parametrize("domain", ["broken.test", "nonascii.test"])
async def test_syntax_error_in_published_record_is_permerror(
    resolver: Resolver, domain: str
) -> None:
    outcome = await spf(resolver, domain)
    assert outcome.result is SPFResult.PERMERROR
    assert domain in outcome.explanation


@pytest.mark.parametrize("domain", ["loop-a.test", "self-redirect.test"])
async def test_include_and_redirect_loops_end_as_permerror_at_the_lookup_limit(
    resolver: Resolver, domain: str
) -> None:
    outcome = await spf(resolver, domain)
    assert outcome.result is SPFResult.PERMERROR
    assert outcome.lookups == 11
    assert "more than 10 DNS lookups" in outcome.explanation


async def test_ten_lookups_are_allowed(resolver: Resolver, dns: DNSServer) -> None:
    outcome = await spf(resolver, "ten.test")
    assert (outcome.result, outcome.lookups) == (SPFResult.PASS, 10)


@pytest.mark.parametrize("domain", ["eleven.test", "nested-eleven.test"])
async def test_eleventh_lookup_is_permerror(resolver: Resolver, domain: str) -> None:
    outcome = await spf(resolver, domain)
    assert (outcome.result, outcome.lookups) == (SPFResult.PERMERROR, 11)


async def test_two_void_lookups_are_allowed(resolver: Resolver) -> None:
    outcome = await spf(resolver, "void-two.test")
    assert (outcome.result, outcome.void_lookups) == (SPFResult.NEUTRAL, 2)


async def test_third_void_lookup_is_permerror(resolver: Resolver) -> None:
    outcome = await spf(resolver, "void-three.test")
    assert (outcome.result, outcome.void_lookups) == (SPFResult.PERMERROR, 3)
    assert "void" in outcome.explanation


async def test_more_than_ten_mx_names_is_permerror(resolver: Resolver) -> None:
    outcome = await spf(resolver, "many-mx.test")
    assert outcome.result is SPFResult.PERMERROR
    assert "11 MX records" in outcome.explanation


async def test_null_mx_names_no_host(resolver: Resolver) -> None:
    outcome = await spf(resolver, "null-mx.test")
    assert (outcome.result, outcome.mechanism) == (SPFResult.NEUTRAL, "?all")


async def test_redirect_takes_the_target_result_and_its_exp(resolver: Resolver) -> None:
    inside = await spf(resolver, "redirect.test", "192.0.2.5")
    outside = await spf(resolver, "redirect.test", OTHER_IP, sender="bob@customer.test")
    assert (inside.result, inside.mechanism) == (SPFResult.PASS, "ip4:192.0.2.0/28")
    assert inside.domain == "redirect.test"
    assert outside.result is SPFResult.FAIL
    # exp= of the redirecting record is dropped; the target's is used.
    assert outside.explanation == (
        f"{OTHER_IP} may not send for _spf.redirect.test (ask bob at customer.test)"
    )


async def test_redirect_to_domain_without_record_is_permerror(resolver: Resolver) -> None:
    outcome = await spf(resolver, "redirect-none.test")
    assert outcome.result is SPFResult.PERMERROR
    assert "norecord.test has no SPF record" in outcome.explanation


async def test_redirect_is_not_followed_when_all_matches(resolver: Resolver) -> None:
    outcome = await spf(resolver, "redirect-unused.test")
    assert (outcome.result, outcome.lookups) == (SPFResult.SOFTFAIL, 0)


async def test_exp_gives_the_expanded_explanation_on_fail(resolver: Resolver) -> None:
    outcome = await spf(resolver, "exp.test", OTHER_IP)
    assert outcome.result is SPFResult.FAIL
    assert outcome.explanation == f"{OTHER_IP} may not send for exp.test (ask alice at exp.test)"


async def test_exp_of_an_included_record_is_not_used(resolver: Resolver) -> None:
    outcome = await spf(resolver, "include-exp.test")
    assert (outcome.result, outcome.mechanism) == (SPFResult.FAIL, "-all")
    assert outcome.explanation == "rejected by include-exp"


@pytest.mark.parametrize("domain", ["bad-exp.test", "two-exp.test"])
async def test_unusable_exp_falls_back_to_the_plain_reason(resolver: Resolver, domain: str) -> None:
    outcome = await spf(resolver, domain)
    assert outcome.result is SPFResult.FAIL
    assert outcome.explanation == f"{AZURE_IP} matched -all in the SPF record of {domain}"


@pytest.mark.parametrize(
    ("domain", "result"),
    [
        ("include-none.test", SPFResult.PERMERROR),
        ("include-perm.test", SPFResult.PERMERROR),
        ("include-temp.test", SPFResult.TEMPERROR),
    ],
)
async def test_include_of_none_permerror_and_temperror(
    resolver: Resolver, domain: str, result: SPFResult
) -> None:
    assert (await spf(resolver, domain)).result is result


async def test_include_of_fail_does_not_match(resolver: Resolver) -> None:
    outcome = await spf(resolver, "include-fail.test")
    assert (outcome.result, outcome.mechanism) == (SPFResult.NEUTRAL, "?all")


@pytest.mark.parametrize("domain", ["servfail.test", "mech-temp.test"])
async def test_servfail_is_temperror(resolver: Resolver, domain: str) -> None:
    outcome = await spf(resolver, domain)
    assert outcome.result is SPFResult.TEMPERROR
    assert "servfail.test" in outcome.explanation


async def test_unanswered_query_is_temperror(dns: DNSServer) -> None:
    dns.drop("softfail.test")
    quick = Resolver([dns.address], timeout=0.3)
    assert (await spf(quick, "softfail.test")).result is SPFResult.TEMPERROR


@pytest.mark.parametrize(
    ("domain", "ip", "result"),
    [
        ("cidr.test", AZURE_IP, SPFResult.PASS),
        ("no-cidr.test", AZURE_IP, SPFResult.FAIL),
        ("no-cidr.test", "192.0.2.200", SPFResult.PASS),
        ("mx-cidr.test", AZURE_IP, SPFResult.PASS),
        ("mx-cidr.test", OTHER_IP, SPFResult.FAIL),
        ("dual.test", "2001:db8:10::1", SPFResult.PASS),
        ("dual.test", "2001:db8:11::1", SPFResult.FAIL),
        ("cidr.test", "2001:db8:10::dead:beef", SPFResult.PASS),  # /128 by default
        ("cidr.test", "2001:db8:10::1", SPFResult.FAIL),
    ],
)
async def test_a_and_mx_apply_cidr_lengths(
    resolver: Resolver, domain: str, ip: str, result: SPFResult
) -> None:
    assert (await spf(resolver, domain, ip)).result is result


@pytest.mark.parametrize(
    ("domain", "ip", "result"),
    [
        ("v6.test", "2001:db8:10::25", SPFResult.PASS),
        ("v6.test", "2001:db8:11::25", SPFResult.FAIL),
        ("v6-a.test", "2001:db8:20::25", SPFResult.PASS),  # AAAA for an IPv6 client
        ("v6-a.test", OTHER_IP, SPFResult.PASS),
        ("listed.test", f"::ffff:{AZURE_IP}", SPFResult.PASS),  # mapped = IPv4
        ("v6.test", f"::ffff:{AZURE_IP}", SPFResult.FAIL),  # ip6: never matches it
    ],
)
async def test_ipv6_clients(resolver: Resolver, domain: str, ip: str, result: SPFResult) -> None:
    assert (await spf(resolver, domain, ip)).result is result


async def test_ptr_matches_only_validated_names(resolver: Resolver) -> None:
    assert (await spf(resolver, "ptr.test")).result is SPFResult.PASS
    assert (await spf(resolver, "ptr-forged.test")).result is SPFResult.FAIL


async def test_only_ten_ptr_names_are_checked(resolver: Resolver, dns: DNSServer) -> None:
    names = [f"h{i}.ptr-limit.test" for i in range(11)]
    dns.set("77.2.0.192.in-addr.arpa", "PTR", [f"{name}." for name in names])
    for name in names:
        dns.set(name, "A", [OTHER_IP])
    dns.set("ptr-limit.test", "TXT", ["v=spf1 ptr -all"])
    outcome = await spf(resolver, "ptr-limit.test", "192.0.2.77")
    assert outcome.result is SPFResult.FAIL
    forward = [name for name, rdtype in dns.queries if rdtype == "A" and name in names]
    assert len(forward) == 10


async def test_p_macro_uses_the_validated_name_and_counts_a_lookup(resolver: Resolver) -> None:
    outcome = await spf(resolver, "p-macro.test")
    assert outcome.result is SPFResult.PASS
    assert outcome.lookups == 2  # exists + the PTR behind %{p}


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("%{i}", f"{AZURE_IP}.q.test"),
        ("%{ir}.%{v}", "10.2.0.192.in-addr.q.test"),
        ("%{s}", "alice@macro.test.q.test"),
        ("%{l}", "alice.q.test"),
        ("%{o}", "macro.test.q.test"),
        ("%{d}", "macro.test.q.test"),
        ("%{h}", "mail.client.test.q.test"),
        ("%{d1r}", "macro.q.test"),
    ],
)
async def test_macros_expand_into_the_queried_name(
    resolver: Resolver, dns: DNSServer, spec: str, name: str
) -> None:
    dns.set("macro.test", "TXT", [f"v=spf1 exists:{spec}.q.test -all"])
    dns.set(name, "A", ["127.0.0.2"])
    outcome = await spf(resolver, "macro.test", helo="mail.client.test")
    assert (outcome.result, outcome.mechanism) == (SPFResult.PASS, f"exists:{spec}.q.test")


async def test_d_is_the_included_domain_and_o_stays_the_sender_domain(
    resolver: Resolver, dns: DNSServer
) -> None:
    dns.set("outer.test", "TXT", ["v=spf1 include:inner.test -all"])
    dns.set("inner.test", "TXT", ["v=spf1 exists:%{d}.%{o}.q.test -all"])
    dns.set("inner.test.outer.test.q.test", "A", ["127.0.0.2"])
    assert (await spf(resolver, "outer.test")).result is SPFResult.PASS


async def test_null_sender_checks_postmaster_at_helo(resolver: Resolver) -> None:
    outcome = await check_host(resolver, AZURE_IP, "ignored.test", "", helo="helo.test")
    assert (outcome.result, outcome.domain) == (SPFResult.PASS, "helo.test")


async def test_empty_local_part_becomes_postmaster(resolver: Resolver, dns: DNSServer) -> None:
    dns.set("pm.test", "TXT", ["v=spf1 exists:%{l}.pm.test -all"])
    dns.set("postmaster.pm.test", "A", ["127.0.0.2"])
    outcome = await check_host(resolver, AZURE_IP, "pm.test", "@pm.test")
    assert outcome.result is SPFResult.PASS


async def test_ttl_is_the_smallest_ttl_consulted(resolver: Resolver, dns: DNSServer) -> None:
    dns.set("ttl.test", "TXT", ["v=spf1 include:_spf.ttl.test -all"], ttl=900)
    dns.set("_spf.ttl.test", "TXT", [f"v=spf1 ip4:{AZURE_IP}"], ttl=120)
    outcome = await spf(resolver, "ttl.test")
    assert outcome.result is SPFResult.PASS
    assert 100 <= outcome.ttl <= 120


async def test_invalid_client_ip_is_a_validation_error(resolver: Resolver) -> None:
    with pytest.raises(ValidationError):
        await check_host(resolver, "not-an-ip", "azure.test", "alice@azure.test")
