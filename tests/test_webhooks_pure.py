"""The pure parts of webhooks: Standard Webhooks signing against the
specification's test vector and an independent implementation, URL and
address rules (SSRF), reply verdicts, Retry-After and backoff."""

from __future__ import annotations

import base64
import ipaddress
import random
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mailer.api.models import ACCOUNT_EVENT_TYPES, EventOut
from mailer.errors import ValidationError
from mailer.reasons import AccountEventKind
from mailer.store.models import Event
from mailer.store.webhooks import disabled_reason_name
from mailer.webhooks import policy, signing
from mailer.webhooks.endpoints import check_types
from mailer.webhooks.payload import EVENT_TYPES, event_json, event_type

# The test vector of the Standard Webhooks specification's reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_matches_the_specification_test_vector() -> None:
    assert signing.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_signed_content_is_id_dot_timestamp_dot_body() -> None:
    assert signing.signed_content("msg_1", 7, b"[]") == b"msg_1.7.[]"


def test_verify_accepts_the_test_vector_and_rejects_a_changed_body() -> None:
    received = {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert signing.verify(SPEC_SECRET, received, SPEC_BODY, now=SPEC_TIMESTAMP + 10)
    assert not signing.verify(SPEC_SECRET, received, SPEC_BODY + b" ", now=SPEC_TIMESTAMP)
    assert not signing.verify(SPEC_SECRET, received, SPEC_BODY, now=SPEC_TIMESTAMP + 301)


def test_the_reference_library_verifies_our_headers() -> None:
    secret = signing.new_secret()
    now = int(datetime.now(UTC).timestamp())
    body = b'[{"type":"send.delivered"}]'
    headers = signing.headers([secret], "msg_abc", now, body)
    assert Webhook(secret).verify(body, headers) == [{"type": "send.delivered"}]
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_a_rotated_secret_signs_beside_the_new_one_and_either_verifies() -> None:
    old, new = signing.new_secret(), signing.new_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signing.headers([new, old], "msg_x", now, b"[]")
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(b"[]", headers)


def test_new_secrets_hold_24_random_bytes() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:])) == 24
    assert secret != signing.new_secret()


@pytest.mark.parametrize(
    "bad", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_***", "whsec_" + "QUFB", ""]
)
def test_a_malformed_secret_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        signing.secret_key(bad)
    assert caught.value.field == "secret"


# URLs --------------------------------------------------------------------


def test_https_urls_are_accepted_with_their_port() -> None:
    target = policy.parse_url("https://Hooks.Example.test:8443/in?x=1", allow_insecure=False)
    assert (target.scheme, target.host, target.port) == ("https", "hooks.example.test", 8443)
    assert policy.parse_url("https://[::1]/", allow_insecure=False).literal == (
        ipaddress.ip_address("::1")
    )


def test_http_needs_allow_insecure() -> None:
    with pytest.raises(ValidationError, match="allow_insecure"):
        policy.parse_url("http://hooks.example.test/", allow_insecure=False)
    assert policy.parse_url("http://h.test/", allow_insecure=True).port == 80


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://h.test/", "https"),
        ("https://user:pw@h.test/", "credentials"),
        ("https://h.test/#frag", "fragment"),
        ("https://h.test/a\r\nX-Injected: 1", "control"),
        ("https:///path", "no host"),
        ("https://h.test:99999/", "not a URL"),
        ("https://h.test/ä", "ASCII"),
        ("", "characters"),
    ],
)
def test_bad_urls_are_refused_naming_the_field(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as caught:
        policy.parse_url(url, allow_insecure=False)
    assert caught.value.field == "url"


# addresses (SSRF) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("100.64.0.1", "cgnat"),
        ("0.0.0.0", "this-network"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_internal_addresses_are_refused(address: str, why: str) -> None:
    assert policy.refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert policy.refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_lets_a_named_network_through() -> None:
    allowed = policy.allow_networks(("127.0.0.0/8", "::1"))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert policy.refusal(ipaddress.ip_address("::1"), allowed) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1"), allowed) == "private"


def test_a_name_with_one_internal_address_is_refused_as_a_whole() -> None:
    with pytest.raises(ValidationError, match=r"10\.0\.0\.1, a private address"):
        policy.check_addresses("h.test", ["93.184.216.34", "10.0.0.1"], ())
    first = policy.check_addresses("h.test", ["93.184.216.34", "2606:2800:220:1::1"], ())
    assert str(first) == "93.184.216.34"


# replies and retries ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, policy.Verdict.ADVANCE),
        (204, policy.Verdict.ADVANCE),
        (410, policy.Verdict.DISABLE),
        (301, policy.Verdict.RETRY),
        (404, policy.Verdict.RETRY),
        (429, policy.Verdict.RETRY),
        (500, policy.Verdict.RETRY),
        (None, policy.Verdict.RETRY),
    ],
)
def test_reply_verdicts(status: int | None, verdict: policy.Verdict) -> None:
    assert policy.verdict(status) is verdict


def test_retry_after_reads_seconds_and_http_dates_within_the_cap() -> None:
    now = 1_700_000_000.0
    assert policy.retry_after("120", now=now, cap=3600) == 120
    assert policy.retry_after("99999", now=now, cap=3600) == 3600
    date = "Tue, 14 Nov 2023 22:15:20 GMT"  # now + 120 s
    assert policy.retry_after(date, now=now, cap=3600) == pytest.approx(120)
    assert policy.retry_after("soon", now=now, cap=3600) is None
    assert policy.retry_after(None, now=now, cap=3600) is None


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(1)
    delays = [policy.backoff(n, base=5, max_delay=3600, jitter=0.2, rng=rng) for n in range(1, 14)]
    assert 4 <= delays[0] <= 6
    assert 8 <= delays[1] <= 12
    assert all(2880 <= d <= 4320 for d in delays[-3:])
    assert policy.backoff(5000, base=5, max_delay=60, jitter=0, rng=rng) == 60


# configuration ---------------------------------------------------------------


def test_webhook_settings_are_validated_naming_the_key() -> None:
    from mailer.config import load_config
    from mailer.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"webhooks": {"allow": ["10.0.0.0/33"]}})
    assert caught.value.key == "webhooks.allow"
    with pytest.raises(ConfigError, match="lease_seconds must exceed") as caught:
        load_config(environ={}, overrides={"webhooks": {"lease_seconds": 30}})
    assert caught.value.key == "webhooks"
    with pytest.raises(ConfigError) as caught:
        load_config(environ={}, overrides={"webhooks": {"batch_size": 101}})
    assert caught.value.key == "webhooks.batch_size"


def test_the_allow_list_comes_from_the_environment_as_a_list() -> None:
    from mailer.config import load_config

    config = load_config(environ={"MAILER_WEBHOOKS__ALLOW": "127.0.0.0/8,::1"})
    assert config.webhooks.allow == ("127.0.0.0/8", "::1")
    assert not config.webhooks.allow_insecure


# events without a send -------------------------------------------------------


def account_event() -> Event:
    return Event(
        seq=7,
        send_id=None,
        distribution_id=None,
        at=1_796_525_577.0,
        state=None,
        reason=None,
        detail="gone: the receiver answered 410",
        account="acme",
        kind=AccountEventKind.WEBHOOK_DISABLED,
        data={"endpoint_id": "ep1", "reason": "gone"},
    )


def test_an_accounts_event_goes_out_with_its_kind_as_type_and_no_send() -> None:
    assert event_json(account_event()) == {
        "type": "webhook.disabled",
        "seq": 7,
        "timestamp": "2026-12-06T02:52:57+00:00",
        "data": {
            "account": "acme",
            "endpoint_id": "ep1",
            "reason": "gone",
            "detail": "gone: the receiver answered 410",
        },
    }


def test_endpoints_may_ask_for_the_accounts_events_by_type() -> None:
    assert "webhook.disabled" in EVENT_TYPES
    assert check_types(["webhook.disabled", "send.delivered", "webhook.disabled"]) == (
        "webhook.disabled",
        "delivered",
    )
    # as stored and back
    assert [event_type(t) for t in ("webhook.disabled", "delivered")] == [
        "webhook.disabled",
        "send.delivered",
    ]
    with pytest.raises(ValidationError) as err:
        check_types(["webhook.enabled"])
    assert err.value.field == "event_types[0]"


def test_the_api_names_every_account_event_kind_and_leaves_out_the_send() -> None:
    assert set(ACCOUNT_EVENT_TYPES) == set(AccountEventKind)
    assert all(kind.value == name for kind, name in ACCOUNT_EVENT_TYPES.items())
    out = EventOut.of(account_event())
    assert out.type == "webhook.disabled"
    assert (out.send_id, out.distribution_id, out.state, out.reason) == (None, None, None, None)
    assert out.data == {"endpoint_id": "ep1", "reason": "gone"}
    assert out.account == "acme"


def test_a_disabled_reason_is_named_by_its_first_words() -> None:
    assert disabled_reason_name("gone: the receiver answered 410") == "gone"
    assert disabled_reason_name("expired: failing for 259200 s (last: HTTP 500)") == "expired"
    assert disabled_reason_name(None) == "other"
