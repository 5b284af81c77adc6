"""One reading of HOST:PORT for settings, listeners and nameservers."""

from __future__ import annotations

import pytest

from mailer.errors import ValidationError
from mailer.hostport import parse_host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        (" mx.example.test:25 ", ("mx.example.test", 25)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
        ("dns.example.test", ("dns.example.test", 53)),
    ],
)
def test_host_and_port_with_a_default(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, "nameservers", default_port=53) == expected


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "[::1", "[::1]x", ":25", "host:x", "host:65536", "host:0", ""]
)
def test_bad_addresses_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_host_port(text, "relay")
    assert caught.value.field == "relay"


def test_port_zero_only_for_listeners() -> None:
    assert parse_host_port("127.0.0.1:0", "listen", any_port=True) == ("127.0.0.1", 0)
    with pytest.raises(ValidationError, match="1-65535"):
        parse_host_port("127.0.0.1:0", "listen")
