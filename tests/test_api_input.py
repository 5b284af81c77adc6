"""Bad input at the API's door: a 4xx naming the field, and nothing
stored. Through a real uvicorn server on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.api.app import create_api
from mailer.api.server import ApiServer
from mailer.app import App
from mailer.dev.dnsserver import DNSServer
from mailer.reasons import State
from tests.conftest import make_config
from tests.test_api import AUTH, KEY, PUBLIC_URL, SECRET, Served, body_for

MAX_BODY = 4 * 1024 * 1024


@pytest.fixture
async def served(tmp_path: Path, dns_server: DNSServer, smtp_port: int) -> AsyncIterator[Served]:
    config = make_config(
        tmp_path,
        dns_server,
        smtp_port,
        api={"keys": [KEY], "secret": SECRET, "public_url": PUBLIC_URL, "max_body": MAX_BODY},
    )
    async with (
        App(config) as app,
        ApiServer(create_api(app)) as server,
        httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=60) as http,
    ):
        yield Served(app, server, http)


async def nothing_stored(served: Served) -> bool:
    return await served.app.store.counts() == {} and await served.app.store.events() == []


def fields(reply: httpx.Response) -> list[str]:
    return [item["field"] for item in reply.json()["errors"]]


async def post(served: Served, body: Any) -> httpx.Response:
    return await served.http.post("/v1/distributions", json=body)


async def test_invalid_json_names_the_body(served: Served) -> None:
    reply = await served.http.post(
        "/v1/distributions",
        content=b'{"account": "acme", "sender": ',
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 422
    assert fields(reply) == ["body"]
    assert "invalid JSON" in reply.json()["errors"][0]["reason"]
    assert await nothing_stored(served)


async def test_missing_sender_names_sender(served: Served) -> None:
    body = body_for(["a@dest.test"])
    del body["sender"]
    reply = await post(served, body)
    assert reply.status_code == 422
    assert fields(reply) == ["sender"]
    assert await nothing_stored(served)


async def test_missing_sender_address_names_it(served: Served) -> None:
    reply = await post(served, body_for(["a@dest.test"], sender={"name": "HR"}))
    assert reply.status_code == 422
    assert fields(reply) == ["sender.address"]
    assert await nothing_stored(served)


@pytest.mark.parametrize("line_break", ["\r\n", "\n", "\r"])
async def test_line_break_in_subject_is_refused(served: Served, line_break: str) -> None:
    subject = f"Umfrage{line_break}Bcc: victim@elsewhere.test"
    reply = await post(served, body_for(["a@dest.test"], subject=subject))
    assert reply.status_code == 422
    assert fields(reply) == ["subject"]
    assert await nothing_stored(served)


async def test_line_break_in_sender_display_name_is_refused(served: Served) -> None:
    sender = {"address": "hr@acme.test", "name": "ACME\r\nBcc: victim@elsewhere.test"}
    reply = await post(served, body_for(["a@dest.test"], sender=sender))
    assert reply.status_code == 422
    assert fields(reply) == ["sender.name"]
    assert await nothing_stored(served)


async def test_line_break_rendered_into_the_subject_by_a_variable_is_refused(
    served: Served,
) -> None:
    body = body_for(["a@dest.test"], subject="Umfrage für {{ team }}")
    body["recipients"][0]["variables"]["team"] = "Vertrieb\r\nBcc: victim@elsewhere.test"
    reply = await post(served, body)
    assert reply.status_code == 422
    assert fields(reply) == ["recipients[0].variables.team"]
    assert await nothing_stored(served)


async def test_undefined_template_variable_names_the_template(served: Served) -> None:
    reply = await post(served, body_for(["a@dest.test"], html="<p>Hallo {{ vorname }}</p>"))
    assert reply.status_code == 422
    assert fields(reply) == ["html"]
    assert "vorname" in reply.json()["errors"][0]["reason"]
    assert await nothing_stored(served)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ name.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    ],
)
async def test_template_reaching_for_python_internals_is_refused(
    served: Served, template: str
) -> None:
    reply = await post(served, body_for(["a@dest.test"], text=template))
    assert reply.status_code == 422
    assert fields(reply) == ["text"]
    assert await nothing_stored(served)


async def test_ten_thousand_and_one_recipients_are_refused(served: Served) -> None:
    reply = await post(served, body_for([f"p{i}@dest.test" for i in range(10_001)]))
    assert reply.status_code == 422
    assert fields(reply) == ["recipients"]
    assert await nothing_stored(served)


async def test_twenty_megabyte_body_is_413(served: Served) -> None:
    body = body_for(["a@dest.test"], text="x" * (20 * 1024 * 1024))
    reply = await served.http.post(
        "/v1/distributions",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status_code == 413
    assert fields(reply) == ["body"]
    assert await nothing_stored(served)


async def test_body_streamed_without_length_past_the_limit_is_413(served: Served) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"account": "acme", "text": "'
        for _ in range(20):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    reply = await served.http.post(
        "/v1/distributions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 413
    assert fields(reply) == ["body"]
    assert await nothing_stored(served)


async def test_invalid_recipient_is_rejected_by_index_and_the_rest_accepted(
    served: Served,
) -> None:
    addresses = ["a@dest.test", "no-at-sign.dest.test", "b@dest.test", "c@@dest.test"]
    reply = await post(served, body_for(addresses))
    assert reply.status_code == 202
    accepted = reply.json()
    assert [(r["index"], r["field"]) for r in accepted["rejected"]] == [
        (1, "recipients[1].email"),
        (3, "recipients[3].email"),
    ]
    assert [s["index"] for s in accepted["sends"]] == [0, 2]
    assert await served.app.store.counts() == {State.QUEUED: 2}
    recipients = {(await served.app.store.send(s["id"])).recipient for s in accepted["sends"]}
    assert recipients == {"a@dest.test", "b@dest.test"}


async def test_internationalised_domain_is_accepted_and_utf8_local_part_rejected(
    served: Served,
) -> None:
    reply = await post(served, body_for(["juergen@bücher.test", "jürgen@bücher.test"]))
    assert reply.status_code == 202
    [send] = reply.json()["sends"]
    assert (await served.app.store.send(send["id"])).recipient == "juergen@xn--bcher-kva.test"
    [rejected] = reply.json()["rejected"]
    assert (rejected["index"], rejected["field"]) == (1, "recipients[1].email")
    assert "SMTPUTF8" in rejected["reason"]


async def test_no_valid_recipient_is_422_listing_each(served: Served) -> None:
    reply = await post(served, body_for(["nope", "also nope"]))
    assert reply.status_code == 422
    assert fields(reply) == ["recipients[0].email", "recipients[1].email"]
    assert [r["index"] for r in reply.json()["rejected"]] == [0, 1]
    assert await nothing_stored(served)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"account": ""}, "account"),
        ({"recipients": []}, "recipients"),
        ({"send_at": "2030-01-01T10:00:00"}, "send_at"),  # no time zone
        ({"tags": ["q3\r\nX-Injected: 1"]}, "tags[0]"),
        ({"unsubscribe_url": "javascript:alert(1)"}, "unsubscribe_url"),
        ({"priority": "urgent"}, "priority"),
        ({"html": None, "text": None}, "html"),
        ({"sender": {"address": "hr@acme.test", "name": 7}}, "sender.name"),
    ],
)
async def test_structural_errors_name_the_field(
    served: Served, change: dict[str, Any], field: str
) -> None:
    reply = await post(served, {**body_for(["a@dest.test"]), **change})
    assert reply.status_code == 422, reply.text
    assert field in fields(reply)
    assert await nothing_stored(served)


async def test_service_unsubscribe_variable_is_reserved(served: Served) -> None:
    body = body_for(["a@dest.test"])
    body["recipients"][0]["variables"]["unsubscribe_url"] = "https://evil.test/"
    reply = await post(served, body)
    assert reply.status_code == 422
    assert fields(reply) == ["recipients[0].variables.unsubscribe_url"]
    assert await nothing_stored(served)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": -1}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after": "x"}, "after"),
        ({"after": 2**64}, "after"),
    ],
)
async def test_bad_event_cursor_or_limit_names_it(
    served: Served, params: dict[str, Any], field: str
) -> None:
    reply = await served.http.get("/v1/events", params=params)
    assert reply.status_code == 422
    assert fields(reply) == [field]


async def test_unknown_ids_are_404_naming_the_id(served: Served) -> None:
    send = await served.http.get("/v1/sends/0000")
    dist = await served.http.get("/v1/distributions/0000")
    assert (send.status_code, fields(send)) == (404, ["send_id"])
    assert (dist.status_code, fields(dist)) == (404, ["distribution_id"])


@pytest.mark.parametrize(
    ("spelling", "field"),
    [
        ('"subject": "Umfrage \\ud800"', "subject"),
        ('"sender": {"address": "hr@acme.test", "name": "\\udc80"}', "sender.name"),
        ('"tags": ["ok", "\\ud83d"]', "tags[1]"),
    ],
)
async def test_lone_surrogate_names_the_field(served: Served, spelling: str, field: str) -> None:
    # JSON can spell a lone surrogate; it can be neither stored nor sent
    base = json.dumps(body_for(["a@dest.test"]))
    raw = base[:-1] + ", " + spelling + "}"
    reply = await served.http.post(
        "/v1/distributions", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert fields(reply) == [field]
    assert await nothing_stored(served)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"account": "acme\xff"}', "application/json", 400),  # not UTF-8
        (b"[" * 100_000, "application/json", 400),  # nested too deep to read
        (b"", "application/json", 422),
        (b'{"account": "acme"}', "text/plain", 422),
        (b'{"account": "acme"}', None, 422),
        (b"[1, 2]", "application/json", 422),
    ],
)
async def test_unreadable_or_missing_body_names_the_body(
    served: Served, content: bytes, content_type: str | None, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    reply = await served.http.post("/v1/distributions", content=content, headers=headers)
    assert reply.status_code == status, reply.text
    assert fields(reply) == ["body"]
    assert await nothing_stored(served)


async def test_json_with_a_utf8_byte_order_mark_is_read_as_before(served: Served) -> None:
    raw = b"\xef\xbb\xbf" + json.dumps(body_for(["a@dest.test"])).encode()
    reply = await served.http.post(
        "/v1/distributions", content=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 202, reply.text
    assert reply.json()["accepted"] == 1
