from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import re
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.errors import ValidationError
from mailer.message.addresses import (
    MAX_DISPLAY_NAME,
    Address,
    normalise_display_name,
    parse_address,
)
from mailer.message.compose import build_message
from mailer.message.templates import Rendered
from mailer.store.rows import make_message_id

SUBJECT = "Umfrage zur Zufriedenheit – Müller GmbH"
HTML = (
    "<html><body><h1>Umfrage zur Zufriedenheit</h1>\n"
    + "<p>Sehr geehrte Frau Schmidt, wir laden Sie herzlich zu unserer Umfrage ein – "
    "die Beantwortung dauert nur fünf Minuten.</p>\n"
    * 10
    + '<p><a href="https://u.example/unsub?t=abc">Abmelden</a></p></body></html>\n'
)
TEXT = "Sehr geehrte Frau Schmidt,\n\nbitte nehmen Sie an unserer Umfrage teil: https://s.example/r/abc\n"
DATE = datetime(2024, 5, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=2)))
UNSUBSCRIBE = ("https://u.example/unsub?t=abc", "mailto:unsub@netigate.se?subject=abc")


def _build(
    subject: str = SUBJECT,
    text: str = TEXT,
    html: str | None = HTML,
    **overrides: Any,
) -> bytes:
    kwargs: dict[str, Any] = {
        "from_": Address("survey@netigate.se", "Müller GmbH"),
        "to": parse_address("to", "anna.schmidt@müller.de", "Anna Schmidt"),
        "reply_to": Address("info@mueller.de", "Müller GmbH Kundenservice"),
        "message_id": make_message_id("01HXSEND0001", "netigate.se"),
        "date": DATE,
        "list_unsubscribe": UNSUBSCRIBE,
    }
    kwargs.update(overrides)
    return build_message(Rendered(subject, text, html, None), **kwargs)


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


def _crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


def test_multipart_alternative_has_text_then_html_decoding_to_the_rendered_content() -> None:
    message = _parse(_build())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    # MIME's canonical text form has CRLF line breaks; that is what decodes.
    assert parts[0].get_content() == _crlf(TEXT)
    assert parts[1].get_content() == _crlf(HTML)


def test_german_subject_and_display_names_round_trip() -> None:
    raw = _build()
    message = _parse(raw)
    assert message["Subject"] == SUBJECT
    assert message["From"].addresses[0].display_name == "Müller GmbH"
    assert message["From"].addresses[0].addr_spec == "survey@netigate.se"
    assert message["Reply-To"].addresses[0].display_name == "Müller GmbH Kundenservice"
    assert message["To"].addresses[0].display_name == "Anna Schmidt"
    # Headers themselves are pure ASCII: encoded-words, no raw UTF-8.
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert b"=?utf-8?" in head


def test_idn_recipient_domain_appears_in_ascii() -> None:
    message = _parse(_build())
    assert message["To"].addresses[0].addr_spec == "anna.schmidt@xn--mller-kva.de"


def test_identity_and_list_headers_are_present() -> None:
    message = _parse(_build())
    assert message["Message-ID"] == "<01HXSEND0001@netigate.se>"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"] == "Wed, 01 May 2024 12:30:05 +0200"
    assert message["Date"].datetime == DATE
    assert message["List-Unsubscribe"] == (
        "<https://u.example/unsub?t=abc>, <mailto:unsub@netigate.se?subject=abc>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


@pytest.mark.parametrize(
    "offset", [timedelta(0), timedelta(hours=-5), timedelta(hours=5, minutes=30)]
)
def test_date_is_what_the_stdlib_formats(offset: timedelta) -> None:
    date = datetime(2023, 12, 31, 23, 59, 59, tzinfo=timezone(offset))
    raw = _build(date=date)
    assert f"\r\nDate: {email.utils.format_datetime(date)}\r\n".encode() in raw


def test_naive_date_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        _build(date=datetime(2024, 5, 1, 12))
    assert info.value.field == "date"


def test_one_click_needs_an_https_url_and_the_flag() -> None:
    assert "List-Unsubscribe-Post" not in _parse(_build(list_unsubscribe=UNSUBSCRIBE[1:]))
    assert "List-Unsubscribe-Post" not in _parse(_build(one_click=False))
    message = _parse(_build(list_unsubscribe=()))
    assert "List-Unsubscribe" not in message
    assert "List-Unsubscribe-Post" not in message


def test_reply_to_only_when_given() -> None:
    assert "Reply-To" not in _parse(_build(reply_to=None))


def test_without_html_the_message_is_a_single_text_part() -> None:
    message = _parse(_build(html=None, text="Hallo Jörg, bitte antworten Sie."))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content() == "Hallo Jörg, bitte antworten Sie."


def test_only_crlf_line_endings_and_no_line_over_998_octets() -> None:
    long_line = "<p>" + "Zufriedenheit ü " * 400 + "</p>"  # one line of ~6,800 octets
    subject = "Sehr lange Betreffzeile mit Umlauten äöü " * 12
    for raw in (_build(), _build(html=long_line, text=long_line, subject=subject)):
        assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = _parse(_build(html=long_line, text=long_line, subject=subject))
    assert message["Subject"] == subject
    assert _body(message, "html") == long_line


def test_unbreakable_ascii_subject_longer_than_a_line_is_encoded() -> None:
    subject = "x" * 1500
    raw = _build(subject=subject)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert _parse(raw)["Subject"] == subject


def test_long_headers_are_folded_to_78_characters() -> None:
    raw = _build(subject="Bitte nehmen Sie an unserer Umfrage zur Zufriedenheit teil " * 3)
    head = raw.split(b"\r\n\r\n", 1)[0]
    subject_lines = re.search(rb"Subject: .*?\r\n(?=\S)", head + b"\r\nX", re.DOTALL)
    assert subject_lines is not None
    assert all(len(line) <= 78 for line in subject_lines.group().split(b"\r\n"))


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        ("Plain ASCII survey text\n", "7bit"),
        ("ASCII, but with a NUL \x00 in it\n", "base64"),
        ("ASCII without a final line break", "base64"),
        ("ASCII with an overlong line " + "x" * 1000 + "\n", "base64"),
        (
            "Sehr geehrte Frau Müller, bitte nehmen Sie an unserer Umfrage teil.\n",
            "base64",
        ),
        ("Пожалуйста, примите участие в опросе\n", "base64"),
    ],
)
def test_transfer_encoding_is_chosen_by_content(body: str, encoding: str) -> None:
    message = _parse(_build(html=None, text=body))
    assert message["Content-Transfer-Encoding"] == encoding
    assert message.get_content() == _crlf(body)


def test_ascii_html_part_goes_as_7bit_even_without_a_final_line_break() -> None:
    ascii_html = "<p>Please take part in our survey.</p>"
    part = _parse(_build(html=ascii_html)).get_body(("html",))
    assert part is not None
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert part.get_content() == ascii_html


def test_line_endings_of_any_kind_become_crlf() -> None:
    message = _parse(_build(html=None, text="eins\r\nzwei\rdrei\nvier\n"))
    assert message.get_content() == "eins\r\nzwei\r\ndrei\r\nvier\r\n"


def test_boundary_is_random_per_message() -> None:
    boundaries = {_parse(_build()).get_boundary() for _ in range(5)}
    assert len(boundaries) == 5


def test_message_id_is_stable_per_send() -> None:
    assert make_message_id("01HX.SEND-1", "NetiGate.se") == "<01HX.SEND-1@netigate.se>"
    assert make_message_id("01HX.SEND-1", "netigate.se") == make_message_id(
        "01HX.SEND-1", "netigate.se"
    )


@pytest.mark.parametrize(
    ("send_id", "domain", "field"),
    [("a b", "x.de", "send_id"), ("a>", "x.de", "send_id"), ("a", "müller.de", "domain")],
)
def test_message_id_parts_are_validated(send_id: str, domain: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        make_message_id(send_id, domain)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Umfrage\r\nBcc: victim@example.de"}, "subject"),
        ({"from_": Address("survey@netigate.se", "Müller\nBcc: x@evil.example")}, "from.name"),
        ({"to": Address("a@example.de", "Anna\r")}, "to.name"),
        ({"reply_to": Address("a@example.de", "x\ny")}, "reply_to.name"),
        ({"to": Address("a@example.de>\r\nBcc: x@evil.example")}, "to.address"),
        (
            {"list_unsubscribe": ["https://u.example/\r\nBcc: x@evil.example"]},
            "list_unsubscribe[0]",
        ),
        (
            {"extra_headers": [("X-Campaign", "a\r\nBcc: x@evil.example")]},
            "extra_headers[0].X-Campaign",
        ),
        ({"message_id": "<a@b>\r\nBcc: x@evil.example"}, "message_id"),
    ],
)
def test_cr_lf_in_any_header_value_names_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        _build(**overrides)
    assert info.value.field == field


@pytest.mark.parametrize(
    "url",
    ["http://u.example/", "https://u.example/a b", "https://u.example/<x>", "ftp://u.example/"],
)
def test_list_unsubscribe_urls_are_validated(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        _build(list_unsubscribe=[url])
    assert info.value.field == "list_unsubscribe[0]"


def test_extra_headers_are_added_but_cannot_replace_composed_ones() -> None:
    message = _parse(
        _build(extra_headers=[("Feedback-ID", "c1:survey:netigate"), ("X-Kampagne", "Frühling")])
    )
    assert message["Feedback-ID"] == "c1:survey:netigate"
    assert message["X-Kampagne"] == "Frühling"
    for name in ("Bcc", "subject", "List-Unsubscribe-Post", "Bad Name", "Bad:Name"):
        with pytest.raises(ValidationError) as info:
            _build(extra_headers=[("Feedback-ID", "ok"), (name, "x")])
        assert info.value.field == "extra_headers[1]"


def test_ascii_display_name_with_specials_is_quoted() -> None:
    raw = _build(to=Address("a@example.de", 'Smith, John "JJ" \\ Jr.'))
    assert b'To: "Smith, John \\"JJ\\" \\\\ Jr." <a@example.de>\r\n' in raw
    assert _parse(raw)["To"].addresses[0].display_name == 'Smith, John "JJ" \\ Jr.'


def test_built_message_signs_and_verifies_with_dkimpy() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    raw = _build()
    signature = dkim.sign(
        raw,
        b"s1",
        b"netigate.se",
        private,
        include_headers=[
            b"from",
            b"to",
            b"subject",
            b"date",
            b"message-id",
            b"list-unsubscribe",
            b"list-unsubscribe-post",
        ],
    )
    signed = signature + raw
    assert dkim.verify(
        signed,
        dnsfunc=lambda name, timeout=5: record if name == b"s1._domainkey.netigate.se." else None,
    )


_CONTROLS = "".join(map(chr, [*range(0x09), *range(0x0A, 0x20), 0x7F]))
# Per example one alphabet, so that mostly-ASCII values (plain or folded
# headers, quoted-printable bodies with soft line breaks) are drawn as often
# as mostly non-ASCII ones (encoded-words, base64).
HEADER_TEXT = st.sampled_from([0x7F, 0x2FF, 0x10FFFF]).flatmap(
    lambda top: st.text(
        st.characters(max_codepoint=top, exclude_categories=["Cs"], exclude_characters=_CONTROLS),
        max_size=150,
    )
)
BODY_TEXT = st.sampled_from([0x7F, 0x2FF, 0x10FFFF]).flatmap(
    lambda top: st.text(
        st.characters(max_codepoint=top, exclude_categories=["Cs"], exclude_characters="\r\n"),
        max_size=2000,
    )
)


@settings(max_examples=150, deadline=None)
@given(
    subject=HEADER_TEXT,
    from_name=HEADER_TEXT.map(lambda s: s[:MAX_DISPLAY_NAME]),
    to_name=HEADER_TEXT.map(lambda s: s[:MAX_DISPLAY_NAME]),
    text=BODY_TEXT,
    html=st.none() | BODY_TEXT,
)
def test_arbitrary_unicode_round_trips_through_build_and_parse(
    subject: str, from_name: str, to_name: str, text: str, html: str | None
) -> None:
    raw = _build(
        subject=subject,
        text=text,
        html=html,
        from_=Address("survey@netigate.se", from_name),
        to=Address("anna@example.de", to_name),
    )
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = _parse(raw)
    assert str(message["Subject"]) == subject
    # Display names are compared in their normalised form (blank runs made
    # one space), the form parse_address hands out.
    assert message["From"].addresses[0].display_name == normalise_display_name(from_name)
    assert message["To"].addresses[0].display_name == normalise_display_name(to_name)
    assert _body(message, "plain") == text
    if html is not None:
        assert _body(message, "html") == html
