"""Macro expansion (RFC 7208 §7): pure tests, no DNS."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from mailer.identity.spf_record import (
    Macro,
    MacroContext,
    PermError,
    expand,
    parse_domain_spec,
    parse_explanation,
    parse_macro_string,
    target_name,
)

# The worked example of RFC 7208 §7.4.
RFC = MacroContext(
    sender="strong-bad@email.example.com",
    domain="email.example.com",
    ip=IPv4Address("192.0.2.3"),
    helo="mx.example.org",
)
RFC6 = MacroContext(
    sender="strong-bad@email.example.com",
    domain="email.example.com",
    ip=IPv6Address("2001:db8::cb01"),
)


def x(text: str, ctx: MacroContext = RFC) -> str:
    return expand(parse_explanation(text), ctx)


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
    ],
)
def test_rfc7208_section_7_4_single_macros(macro: str, expansion: str) -> None:
    assert x(macro) == expansion


@pytest.mark.parametrize(
    ("text", "expansion"),
    [
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
        ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
        ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ],
)
def test_rfc7208_section_7_4_macro_strings(text: str, expansion: str) -> None:
    assert expand(parse_domain_spec(text), RFC) == expansion


def test_rfc7208_section_7_4_ipv6_ir_is_reversed_nibbles() -> None:
    expected = (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
    )
    assert expand(parse_domain_spec("%{ir}.%{v}._spf.%{d2}"), RFC6) == expected


def test_i_of_ipv6_is_dot_separated_nibbles_in_order() -> None:
    assert x("%{i}", RFC6) == "2.0.0.1.0.d.b.8." + "0." * 20 + "c.b.0.1"


def test_c_is_readable_address_and_v_names_the_family() -> None:
    assert x("%{c} %{v}") == "192.0.2.3 in-addr"
    assert x("%{c} %{v}", RFC6) == "2001:db8::cb01 ip6"


def test_h_is_helo_and_i_is_dotted_quad() -> None:
    assert x("%{h} %{i}") == "mx.example.org 192.0.2.3"


def test_r_t_and_p_come_from_the_context() -> None:
    ctx = MacroContext(
        sender="a@b.test",
        domain="b.test",
        ip=IPv4Address("192.0.2.1"),
        receiver="mx.receiver.test",
        timestamp=1700000000,
        validated_name="host.b.test",
    )
    assert x("%{r} %{t} %{p}", ctx) == "mx.receiver.test 1700000000 host.b.test"


def test_uppercase_macro_is_url_escaped_after_transformation() -> None:
    ctx = MacroContext(sender="~jack&jill=up-a_b3.c@e.test", domain="e.test", ip=RFC.ip)
    assert x("http://example.com/why.html?l=%{L}", ctx) == (
        "http://example.com/why.html?l=~jack%26jill%3Dup-a_b3.c"
    )
    assert x("%{S}", ctx) == "~jack%26jill%3Dup-a_b3.c%40e.test"


def test_escapes_percent_space_and_url_space() -> None:
    assert x("a%%b%_c%-d") == "a%b c%20d"


def test_multiple_delimiters_split_on_each_and_join_with_dots() -> None:
    ctx = MacroContext(sender="foo-bar+zip+quux@e.test", domain="e.test", ip=RFC.ip)
    assert x("%{l2r+-}", ctx) == "bar.foo"
    assert x("%{l+-}", ctx) == "foo.bar.zip.quux"


def test_more_digits_than_parts_keeps_all_parts() -> None:
    assert x("%{d128}") == "email.example.com"


def test_literal_text_between_macros_is_kept() -> None:
    assert x("%{l}-at-%{o}") == "strong-bad-at-email.example.com"


def test_parse_keeps_literals_and_macros_apart() -> None:
    parsed = parse_macro_string("x.%{D2r-}.y")
    assert parsed.tokens == ("x.", Macro("d", 2, True, "-", True), ".y")
    assert not parsed.uses_p
    assert parse_macro_string("%{p}.z.test").uses_p


@pytest.mark.parametrize(
    "text",
    [
        "%(ir).sbl.example.com",  # '%' followed by '('
        "foo%.sbl.example.com",  # bare '%'
        "trailing%",
        "%{ir.sbl.example.com",  # unterminated
        "%{a}.example.com",  # no such letter
        "%{}.example.com",
        "%{d0}.example.com",  # digit transformer must be nonzero
        "%{dx}.example.com",  # not a transformer or delimiter
        "%{d2r;}.example.com",
        "%{c}.example.com",  # c, r, t only in explanations
        "%{r}.example.com",
        "%{t}.example.com",
        "a b.example.com",  # space is not a macro-literal
    ],
)
def test_invalid_macro_strings_are_permerrors(text: str) -> None:
    with pytest.raises(PermError):
        parse_domain_spec(text)


def test_explanation_allows_spaces_and_c_r_t() -> None:
    assert parse_explanation("%{c} is not allowed by %{r} at %{t}").text


def test_explanation_with_non_ascii_is_permerror() -> None:
    with pytest.raises(PermError):
        parse_explanation("\ufeffExplanation")


@pytest.mark.parametrize(
    "spec",
    [
        "example.com",
        "example.com.",
        "foo.example.xn--zckzah",
        "foo:bar/baz.example.com",
        "%{d}",
        "%{ir}.%{v}._spf.%{d2}",
        "%{d}.com",
        "macro%%percent%_%_space%-url-space.example.com",
        "x.%-",
    ],
)
def test_valid_domain_specs(spec: str) -> None:
    assert parse_domain_spec(spec).text == spec


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "museum",
        "museum.",
        "abc.123",
        "111.222.33.44",
        "example.-com",
        "foo-bar",
        "example.com:8080",
        "example.com/24",
        "%{d}.",
        "x.%%-",  # ends in a literal '-' after an escaped percent
    ],
)
def test_invalid_domain_specs(spec: str) -> None:
    with pytest.raises(PermError):
        parse_domain_spec(spec)


def test_target_name_drops_trailing_dot() -> None:
    assert target_name("o.spf.example.com.") == "o.spf.example.com"


def test_target_name_over_253_loses_labels_on_the_left() -> None:
    label = "somewhat.long.exp.example.com"
    name = "foobar." + ".".join([label] * 8) + ".example.com"
    assert len(name) > 253
    truncated = target_name(name)
    assert truncated == ".".join([label] * 8) + ".example.com"
    assert len(truncated) <= 253


@pytest.mark.parametrize("name", ["", "mail.example...com", "a" * 64 + ".example.com"])
def test_target_name_refuses_names_no_query_can_carry(name: str) -> None:
    assert target_name(name) is None
