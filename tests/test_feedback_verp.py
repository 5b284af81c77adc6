"""Return paths with a keyed MAC, the Feedback-ID value, and DSN
parameters (RET=HDRS, ENVID) where the receiving server offers DSN."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.delivery.smtp import open_session
from mailer.dev.certs import TestCerts
from mailer.errors import ValidationError
from mailer.message.verp import (
    FeedbackIdentity,
    feedback_id,
    make_return_path,
    read_feedback_id,
    read_return_path,
)

SECRET = "0123456789abcdef-secret"
DOMAINS = frozenset({"bounces.netigate.se"})
SEND = "01a24953265533b834b3f4000002"


def test_a_return_path_names_its_send_and_verifies() -> None:
    address = make_return_path(SEND, secret=SECRET, domain="Bounces.Netigate.SE")
    assert address.startswith(f"b+{SEND}.")
    assert address.endswith("@bounces.netigate.se")
    token = read_return_path(address, secret=SECRET, domains=DOMAINS)
    assert token is not None
    assert (token.send_id, token.valid) == (SEND, True)
    # an MTA that upper-cases local parts still names the same send
    upper = read_return_path(address.upper(), secret=SECRET, domains=DOMAINS)
    assert upper is not None
    assert upper.valid


@pytest.mark.parametrize(
    "mangle",
    [
        lambda a: a.replace(SEND, SEND[:-1] + "3"),  # another send, same MAC
        lambda a: a.replace(".", ".0", 1),  # MAC changed
        lambda a: a.split("@")[0][:-2] + "@bounces.netigate.se",  # MAC cut short
    ],
)
def test_a_forged_or_mangled_token_is_recognised(mangle: Any) -> None:
    address = mangle(make_return_path(SEND, secret=SECRET, domain="bounces.netigate.se"))
    token = read_return_path(address, secret=SECRET, domains=DOMAINS)
    assert token is not None
    assert not token.valid
    other_key = make_return_path(
        SEND, secret="another-secret-entirely", domain="bounces.netigate.se"
    )
    forged = read_return_path(other_key, secret=SECRET, domains=DOMAINS)
    assert forged is not None
    assert not forged.valid


@pytest.mark.parametrize(
    "address", ["survey@netigate.se", f"b+{SEND}.abc@elsewhere.test", "b+@bounces.netigate.se", ""]
)
def test_addresses_that_are_no_return_path_of_ours_say_nothing(address: str) -> None:
    assert read_return_path(address, secret=SECRET, domains=DOMAINS) is None


def test_a_bad_send_id_or_domain_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as bad_id:
        make_return_path("a@b", secret=SECRET, domain="bounces.test")
    assert bad_id.value.field == "send_id"
    with pytest.raises(ValidationError) as bad_domain:
        make_return_path(SEND, secret=SECRET, domain="bounces.test\r\nBcc: x")
    assert bad_domain.value.field == "domain"


def test_feedback_id_keeps_its_four_fields_and_never_breaks_a_line() -> None:
    value = feedback_id(
        "{distribution}:{account}:survey:{sender}",
        distribution="d1",
        account="acme:eu\r\nX-Evil: 1",
        sender="mailer",
    )
    assert value == "d1:acme-euX-Evil- 1:survey:mailer"
    assert value.count(":") == 3
    with pytest.raises(ValidationError) as bad:
        feedback_id("{nope}", distribution="d", account="a", sender="s")
    assert bad.value.field == "feedback_id"


class _DSNServer(SMTP):
    """aiosmtpd refuses MAIL parameters it does not know; a DSN-capable
    server takes RET and ENVID (RFC 3461), recorded here."""

    def __init__(self, handler: _DSNHandler, **kw: Any) -> None:
        super().__init__(handler, **kw)
        self._dsn_handler = handler

    async def smtp_MAIL(self, arg: str) -> None:
        words = arg.split()
        dsn = [w for w in words if w.upper().startswith(("RET=", "ENVID="))]
        self._dsn_handler.mail_options.append(dsn)
        await super().smtp_MAIL(" ".join(w for w in words if w not in dsn))


class _DSNHandler:
    def __init__(self) -> None:
        self.mail_options: list[list[str]] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-DSN", responses[-1]]

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


@pytest.fixture
async def dsn_server(mailer_certs: TestCerts) -> AsyncIterator[tuple[int, _DSNHandler]]:
    handler = _DSNHandler()
    context = TestCerts.server_context(mailer_certs.issue(["127.0.0.1"]))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _DSNServer(handler, tls_context=context, loop=loop), "127.0.0.1", 0
    )
    try:
        yield server.sockets[0].getsockname()[1], handler
    finally:
        server.close()
        await server.wait_closed()


async def test_deliveries_ask_for_ret_hdrs_and_envid_where_dsn_is_offered(
    dsn_server: tuple[int, _DSNHandler],
) -> None:
    port, handler = dsn_server
    session = await open_session("127.0.0.1", "127.0.0.1", port, helo="mta.test")
    async with session:
        await session.send(
            "b+x@bounces.test", "r@dest.test", b"Subject: x\r\n\r\nx\r\n", envid=SEND
        )
        await session.send("b+x@bounces.test", "r@dest.test", b"Subject: y\r\n\r\ny\r\n")
    assert "RET=HDRS" in handler.mail_options[0]
    assert f"ENVID={SEND}" in handler.mail_options[0]
    assert not any(o.startswith(("RET=", "ENVID=")) for o in handler.mail_options[1])


TEMPLATE = "{distribution}:{account}:survey:{sender}"


def test_a_feedback_id_reads_back_as_its_distribution_and_account() -> None:
    value = feedback_id(TEMPLATE, distribution="01ab", account="acct-1", sender="mailer")
    assert read_feedback_id(TEMPLATE, value, sender="mailer") == FeedbackIdentity("01ab", "acct-1")
    # the whitespace around a header quoted as text is not part of it
    assert read_feedback_id(TEMPLATE, " 01ab:acct-1:survey:mailer\r\n", sender="mailer") == (
        FeedbackIdentity("01ab", "acct-1")
    )


def test_colons_in_the_parts_read_back_as_the_header_wrote_them() -> None:
    value = feedback_id(TEMPLATE, distribution="a:b", account="c", sender="mailer")
    assert value == "a-b:c:survey:mailer"
    assert read_feedback_id(TEMPLATE, value, sender="mailer") == FeedbackIdentity("a-b", "c")


@pytest.mark.parametrize(
    ("template", "value"),
    [
        # another sender's value, or a mail type we never write
        (TEMPLATE, "01ab:acct-1:survey:someone-else"),
        (TEMPLATE, "01ab:acct-1:newsletter:mailer"),
        # too many or too few fields, empty fields
        (TEMPLATE, "01ab:acct-1:x:survey:mailer"),
        (TEMPLATE, "01ab:survey:mailer"),
        (TEMPLATE, ":acct-1:survey:mailer"),
        (TEMPLATE, ""),
        # templates that cannot name a send: no distribution, no account,
        # a field we do not fill, a format spec
        ("{account}:{sender}", "acct-1:mailer"),
        ("{distribution}:{sender}", "01ab:mailer"),
        ("{distribution}:{account}:{campaign}", "01ab:acct-1:x"),
        ("{distribution:>8}:{account}", "    01ab:acct-1"),
        # a repeated field must repeat the same value
        ("{distribution}:{account}:{distribution}", "01ab:acct-1:01ac"),
    ],
)
def test_a_feedback_id_the_template_cannot_have_written_names_nothing(
    template: str, value: str
) -> None:
    assert read_feedback_id(template, value, sender="mailer") is None


def test_a_repeated_field_reads_back_when_it_repeats() -> None:
    template = "{distribution}:{account}:{distribution}"
    assert read_feedback_id(template, "01ab:acct-1:01ab", sender="mailer") == FeedbackIdentity(
        "01ab", "acct-1"
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab1-_:. \r\n\t\x00é€"), max_size=20))
def test_feedback_id_parts_lose_colons_and_unprintables_and_nothing_else(value: str) -> None:
    expected = "".join(c for c in value.replace(":", "-") if c.isprintable())
    assert feedback_id("{account}", distribution="d", account=value, sender="s") == expected
