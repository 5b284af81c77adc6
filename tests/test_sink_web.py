"""The inbox without a browser: the pure parts (HTML check, DMARC
alignment, CSP, search) and the HTTP side (fault switches over real SMTP,
preview policy, downloads, cross-site forms refused)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient
from publicsuffixlist import PublicSuffixList

from mailer.dev.certs import TestCerts
from mailer.errors import ValidationError
from mailer.sink import Faults
from mailer.sink.auth import SpfVerdict, aligned, dmarc_verdict, parse_dmarc_policy
from mailer.sink.runner import Sink
from mailer.sink.server import DevSink
from mailer.sink.verify import DkimResult, KeySource
from mailer.sink.web import create_app
from mailer.sink.web.faults import DEFER_REPLY, REJECT_REPLY
from mailer.sink.web.htmlcheck import CLIP_BYTES, check_html
from mailer.sink.web.live import Changes
from mailer.sink.web.view import matches, newest_first
from mailer.web import csp_header

PSL = PublicSuffixList()


def test_html_check_lists_links_finds_the_unsubscribe_link_and_images_without_alt() -> None:
    html = (
        "<a href='https://s.test/survey'>Zur <b>Umfrage</b></a>"
        "<a href='http://s.test/info'>Info</a>"
        "<a href='https://s.test/u/abc'><img src='https://s.test/x.png' alt='Abmelden'></a>"
        "<img src='cid:logo'><img src='data:image/png;base64,AA' alt=''>"
    )
    report = check_html(html, message_bytes=5000, list_unsubscribe=("https://s.test/u/abc",))
    assert [(link.href, link.text) for link in report.links] == [
        ("https://s.test/survey", "Zur Umfrage"),
        ("http://s.test/info", "Info"),
        ("https://s.test/u/abc", "Abmelden"),
    ]
    assert report.unsubscribe is not None
    assert report.unsubscribe.href == "https://s.test/u/abc"
    assert report.images_without_alt == ("cid:logo",)
    assert report.remote_images == ("https://s.test/x.png",)
    assert [link.href for link in report.insecure_links] == ["http://s.test/info"]
    assert not report.clipped


def test_html_check_finds_an_unsubscribe_link_by_its_words_and_flags_clipping() -> None:
    html = "<a href='https://s.test/x'>Newsletter abbestellen</a>" + "x" * CLIP_BYTES
    report = check_html(html, message_bytes=len(html))
    assert report.unsubscribe is not None
    assert report.unsubscribe.text == "Newsletter abbestellen"
    assert report.clipped
    assert check_html("<a href='https://s.test/'>Home</a>", message_bytes=1).unsubscribe is None


def _dkim(domain: str, result: str = "pass") -> DkimResult:
    return DkimResult(domain, "s1", "rsa-sha256", result, "", KeySource.DNS)


def test_dmarc_passes_on_a_relaxed_aligned_dkim_domain_and_fails_without_one() -> None:
    spf = SpfVerdict("pass", "bounces.platform.test", "192.0.2.1", "ip4:192.0.2.1", "")
    verdict = dmarc_verdict(PSL, "news.customer.test", [_dkim("customer.test")], spf, None)
    assert (verdict.result, verdict.dkim_aligned, verdict.spf_aligned) == ("pass", True, False)
    failing = dmarc_verdict(PSL, "customer.test", [_dkim("customer.test", "fail")], spf, None)
    assert failing.result == "fail"
    assert "neither" in failing.detail


def test_dmarc_strict_mode_needs_the_exact_domain() -> None:
    policy = parse_dmarc_policy("_dmarc.customer.test", "v=DMARC1; p=reject; adkim=s")
    assert (policy.policy, policy.adkim, policy.aspf) == ("reject", "s", "r")
    spf = SpfVerdict("fail", "customer.test", "192.0.2.1", None, "")
    verdict = dmarc_verdict(PSL, "news.customer.test", [_dkim("customer.test")], spf, policy)
    assert verdict.result == "fail"
    assert "p=reject" in verdict.detail
    assert aligned(PSL, "a.customer.test", "customer.test", "r")
    assert not aligned(PSL, "a.customer.test", "customer.test", "s")
    # two registrations under one public suffix are not aligned
    assert not aligned(PSL, "one.co.uk", "two.co.uk", "r")


@pytest.mark.parametrize("record", ["v=DMARC2; p=none", "v=DMARC1; p=maybe", "v=DMARC1;;p=none"])
def test_a_malformed_dmarc_record_is_refused_with_the_field(record: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_dmarc_policy("_dmarc.x.test", record)
    assert caught.value.field == "dmarc"


def test_csp_header_refuses_a_value_that_would_split_the_policy() -> None:
    assert csp_header({"default-src": "'none'", "img-src": "data:"}) == (
        "default-src 'none'; img-src data:"
    )
    with pytest.raises(ValueError, match="split"):
        csp_header({"img-src": "data:; script-src *"})


@pytest.fixture
def inbox(mailer_sink: DevSink) -> Iterator[TestClient]:
    app = create_app(mailer_sink)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client
    app.state.changes.close()


def _send(sink: DevSink, *, starttls: bool = True, html: str | None = None) -> dict[str, tuple]:
    msg = EmailMessage()
    msg["From"] = "dev@sender.test"
    msg["To"] = "someone@inbox.test"
    msg["Subject"] = "Fault rehearsal"
    msg.set_content("Hallo")
    if html is not None:
        msg.add_alternative(html, subtype="html")
        msg.add_attachment(b"a;b\n1;2\n", maintype="text", subtype="csv", filename="Ergebnis ä.csv")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        if starttls:
            client.starttls(context=ssl.create_default_context(cafile=str(sink.ca_path)))
        return client.send_message(msg)


def _flip(inbox: TestClient, name: str, state: str) -> None:
    response = inbox.post(f"/faults/{name}", data={"state": state}, follow_redirects=False)
    assert response.status_code == 303


def test_fault_switches_defer_reject_and_turn_off_again(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    _flip(inbox, "defer", "on")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(mailer_sink)
    assert refused.value.recipients["someone@inbox.test"][0] == 451
    _flip(inbox, "defer", "off")
    _flip(inbox, "reject", "on")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(mailer_sink)
    assert refused.value.recipients["someone@inbox.test"][0] == 550
    _flip(inbox, "reject", "off")
    assert _send(mailer_sink) == {}
    assert [r.reply for r in mailer_sink.refusals] == [DEFER_REPLY, REJECT_REPLY]
    assert "defer: off" in inbox.get("/").text


def test_the_no_starttls_switch_stops_offering_it_on_new_connections(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    _flip(inbox, "no-starttls", "on")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        _send(mailer_sink)
    _flip(inbox, "no-starttls", "off")
    assert _send(mailer_sink) == {}


def test_the_drop_switch_closes_without_a_reply_until_switched_off(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    _flip(inbox, "drop-after-data", "on")
    for _ in range(2):
        with pytest.raises(smtplib.SMTPServerDisconnected):
            _send(mailer_sink)
    _flip(inbox, "drop-after-data", "off")
    assert _send(mailer_sink) == {}
    assert len(mailer_sink.dropped) == 2


def test_a_bad_fault_request_names_what_is_wrong_and_changes_nothing(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    assert inbox.post("/faults/explode", data={"state": "on"}).status_code == 404
    response = inbox.post("/faults/defer", data={"state": "maybe"})
    assert response.status_code == 422
    assert "state" in response.text
    assert _send(mailer_sink) == {}


def test_forms_from_another_site_are_refused(inbox: TestClient, mailer_sink: DevSink) -> None:
    response = inbox.post(
        "/faults/defer", data={"state": "on"}, headers={"Origin": "https://evil.test"}
    )
    assert response.status_code == 403
    response = inbox.post("/clear", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403
    response = inbox.post("/clear", headers={"Origin": "null"})
    assert response.status_code == 403
    # the page's own form: Chromium says same-origin, and under the page's
    # no-referrer policy sends Origin: null with it
    own = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}
    response = inbox.post("/faults/defer", data={"state": "off"}, headers=own)
    assert response.status_code < 400
    assert _send(mailer_sink) == {}
    assert len(mailer_sink.wait_for(1)) == 1


def test_preview_raw_and_attachment_are_served_with_safe_headers(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    _send(mailer_sink, html="<p>Hi</p><script>alert(1)</script>")
    [message] = mailer_sink.wait_for(1)
    preview = inbox.get(f"/m/{message.id}/preview")
    policy = preview.headers["content-security-policy"]
    assert "script-src" not in policy
    assert "default-src 'none'" in policy
    assert "img-src data:;" in policy
    allowed = inbox.get(f"/m/{message.id}/preview?images=true")
    assert "img-src data: http: https:" in allowed.headers["content-security-policy"]
    raw = inbox.get(f"/m/{message.id}/raw.eml")
    assert raw.content == message.data
    assert raw.headers["content-disposition"].startswith("attachment;")
    page = inbox.get(f"/m/{message.id}")
    assert "Ergebnis ä.csv" in page.text
    attachment = inbox.get(f"/m/{message.id}/attachments/0")
    assert attachment.content == b"a;b\n1;2\n"
    assert attachment.headers["content-type"] == "application/octet-stream"
    assert inbox.get(f"/m/{message.id}/attachments/7").status_code == 404
    assert inbox.get("/m/nope").status_code == 404


def test_json_api_deletes_one_message(inbox: TestClient, mailer_sink: DevSink) -> None:
    _send(mailer_sink)
    [message] = mailer_sink.wait_for(1)
    listed = inbox.get("/messages").json()
    assert listed["messages"][0]["tls_cipher"]
    assert inbox.delete(f"/messages/{message.id}").status_code == 204
    assert inbox.delete(f"/messages/{message.id}").status_code == 404
    assert mailer_sink.messages == []
    assert mailer_sink.maildir is not None
    assert not [p for sub in ("new", "cur") for p in (mailer_sink.maildir / sub).iterdir()]


def test_search_matches_every_word_in_sender_recipients_or_subject(mailer_sink: DevSink) -> None:
    _send(mailer_sink)
    [message] = mailer_sink.wait_for(1)
    assert matches(message, "DEV@sender fault")
    assert matches(message, "inbox.test")
    assert not matches(message, "fault nobody")


def test_the_list_shows_the_newest_within_its_limit(mailer_sink: DevSink) -> None:
    for _ in range(3):
        _send(mailer_sink)
    kept = mailer_sink.wait_for(3)
    assert newest_first(kept, "", limit=2) == [kept[2], kept[1]]
    assert newest_first(kept, "nobody", limit=2) == []


async def test_change_notices_in_a_burst_come_as_one() -> None:
    changes = Changes()
    stream = changes.subscribe(heartbeat=5, coalesce=0.2)
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)  # subscribed
    for kind in ("message", "message", "deleted"):
        changes.publish(kind)
    assert await first == "deleted"
    changes.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


def test_the_json_api_changes_faults_by_their_flag_names(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    assert inbox.get("/faults").json()["tempfail-rate"] == 0.0
    response = inbox.patch("/faults", json={"tempfail-rate": 1, "seed": 5})
    assert response.status_code == 200
    assert (response.json()["tempfail-rate"], response.json()["seed"]) == (1, 5)
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _send(mailer_sink)
    assert refused.value.recipients["someone@inbox.test"][0] == 451
    assert inbox.delete("/faults").status_code == 204
    assert mailer_sink.faults.tempfail_rate == 0.0
    assert _send(mailer_sink) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tempfail-rate": 2}, "tempfail-rate"),
        ({"greylist": True, "slow-banner": -1}, "slow-banner"),
        ({"delay": 1}, "delay"),
        (["greylist"], "body"),
    ],
)
def test_a_bad_json_fault_names_the_field_and_changes_nothing(
    inbox: TestClient, mailer_sink: DevSink, body: object, field: str
) -> None:
    response = inbox.patch("/faults", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == field
    assert mailer_sink.faults == Faults()


def test_the_greylist_and_no_pipelining_switches_are_the_faults_of_the_same_name(
    inbox: TestClient, mailer_sink: DevSink
) -> None:
    _flip(inbox, "greylist", "on")
    _flip(inbox, "no-pipelining", "on")
    assert mailer_sink.faults == Faults(greylist=True, no_pipelining=True)
    assert 'data-switch="greylist">greylist: on' in inbox.get("/").text
    with smtplib.SMTP(mailer_sink.host, mailer_sink.port) as client:
        client.ehlo()
        assert not client.has_extn("pipelining")
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(mailer_sink)
    assert _send(mailer_sink) == {}  # the second attempt of the pair passes
    _flip(inbox, "no-pipelining", "off")
    with smtplib.SMTP(mailer_sink.host, mailer_sink.port) as client:
        client.ehlo()
        assert client.has_extn("pipelining")


def test_a_sink_without_starttls_cannot_be_switched_to_offer_it(certs: TestCerts) -> None:
    with Sink(starttls=False, certs=certs) as sink:
        assert sink.faults.no_starttls
        with pytest.raises(ValidationError) as caught:
            sink.set_faults(no_starttls=False, greylist=True)
        assert caught.value.field == "no-starttls"
        assert not sink.faults.greylist
