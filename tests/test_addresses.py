from __future__ import annotations

import pytest
from email_validator import validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.errors import ValidationError
from mailer.message.addresses import (
    MAX_DISPLAY_NAME,
    Address,
    _plain_address,
    check_header_value,
    normalise_display_name,
    parse_address,
)


@pytest.mark.parametrize("value", ["Umfrage – Müller GmbH", "a\tb", "", "日本語"])
def test_header_value_without_controls_is_returned_unchanged(value: str) -> None:
    assert check_header_value("subject", value) is value


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nBcc: x@evil.example", "trailing\n"])
def test_cr_or_lf_in_header_value_is_header_injection(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_header_value("from.name", value)
    assert info.value.field == "from.name"
    assert info.value.reason == "contains CR/LF (header injection)"


@pytest.mark.parametrize(
    ("value", "code"), [("a\x00b", "U+0000"), ("\x1b[31m", "U+001B"), ("x\x7f", "U+007F")]
)
def test_other_control_characters_are_rejected_with_their_code_point(value: str, code: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_header_value("subject", value)
    assert info.value.field == "subject"
    assert code in info.value.reason


def test_idn_domain_is_stored_in_ascii_and_lower_case() -> None:
    address = parse_address("to", "Anna.Schmidt@Müller.DE", "Anna Schmidt")
    assert address == Address("Anna.Schmidt@xn--mller-kva.de", "Anna Schmidt")
    assert address.domain == "xn--mller-kva.de"
    assert address.local == "Anna.Schmidt"


def test_non_ascii_local_part_is_refused_because_smtputf8_is_not_used() -> None:
    with pytest.raises(ValidationError) as info:
        parse_address("to", "jörg@example.de")
    assert info.value.field == "to"
    assert "SMTPUTF8" in info.value.reason


@pytest.mark.parametrize(
    "value", ["no-at-sign", "a..b@example.de", "a@nodot", "a@[192.0.2.1]", "a b@example.de", "   "]
)
def test_malformed_address_names_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_address("reply_to", value)
    assert info.value.field == "reply_to"
    assert info.value.reason


def test_cr_lf_in_address_or_name_names_the_right_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_address("from", "a@example.de\r\nBcc: x@evil.example")
    assert info.value.field == "from"
    with pytest.raises(ValidationError) as info:
        parse_address("from", "a@example.de", "Evil\nBcc: x@evil.example")
    assert info.value.field == "from.name"
    assert "header injection" in info.value.reason


def test_surrounding_blanks_of_the_address_are_ignored() -> None:
    assert parse_address("to", "  a@example.de\t").address == "a@example.de"


def test_display_name_blanks_are_normalised() -> None:
    assert parse_address("to", "a@example.de", "  Anna \t Schmidt ").name == "Anna Schmidt"
    assert normalise_display_name("Müller  GmbH") == "Müller GmbH"
    assert normalise_display_name("Müller GmbH") == "Müller GmbH"


def test_overlong_display_name_is_refused() -> None:
    parse_address("to", "a@example.de", "x" * MAX_DISPLAY_NAME)
    with pytest.raises(ValidationError) as info:
        parse_address("to", "a@example.de", "x" * (MAX_DISPLAY_NAME + 1))
    assert info.value.field == "to.name"


def test_test_domains_are_admitted_other_special_use_names_are_not() -> None:
    assert parse_address("to", "a@customer.test").domain == "customer.test"
    with pytest.raises(ValidationError):
        parse_address("to", "a@customer.invalid")
    with pytest.raises(ValidationError):
        parse_address("to", "a@localhost")


_ATOM = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-.", min_size=1, max_size=12)
_LABEL = st.text(alphabet="abz019-XN", min_size=1, max_size=12)
_TLD = st.sampled_from(
    ["de", "se", "com", "test", "local", "localhost", "onion", "c", "x1", "invalid"]
)


@given(
    local=st.lists(_ATOM, min_size=1, max_size=3).map(".".join),
    labels=st.lists(_LABEL, min_size=0, max_size=3),
    tld=_TLD,
)
@settings(max_examples=400, deadline=None)
def test_fast_path_accepts_only_what_email_validator_accepts_with_the_same_result(
    local: str, labels: list[str], tld: str
) -> None:
    candidate = "@".join([local, ".".join([*labels, tld])])
    fast = _plain_address(candidate)
    if fast is None:
        return
    valid = validate_email(
        candidate, check_deliverability=False, allow_smtputf8=False, test_environment=True
    )
    assert fast == valid.ascii_email


def test_plain_addresses_take_the_fast_path_and_odd_ones_the_full_check() -> None:
    assert _plain_address("Anna.Berg+survey@Example.DE") == "Anna.Berg+survey@example.de"
    assert _plain_address("anna@xn--mller-kva.de") is None  # IDN: full check
    assert _plain_address('"quoted"@example.de') is None
    assert _plain_address("anna@localhost") is None
    assert parse_address("to", "anna@xn--mller-kva.de").domain == "xn--mller-kva.de"
