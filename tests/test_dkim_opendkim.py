"""Our signatures checked by an independent verifier: OpenDKIM's test mode.

``opendkim -t FILE`` verifies a message offline when its configuration has
``TestPublicKeys``: a file of ``<selector>._domainkey.<domain> <record>``
lines stands in for DNS. With ``-vvv`` it prints the Authentication-Results
field it would add, one ``dkim=`` result per signature.

Needs Debian's ``opendkim`` and ``opendkim-tools`` packages; without them
these tests fail (they are the independent check, so never skipped).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailer.message.keys import KeyStore, SigningKey, dns_name, dns_record_value
from mailer.message.signing import OVERSIGNED_HEADERS, Signer

OURS = "netigate.test"
CUSTOMER = "customer.test"

MESSAGE = (
    b'From: "Customer AB" <survey@netigate.test>\r\n'
    b"Reply-To: info@customer.test\r\n"
    b"To: ann@example.org\r\n"
    b"Subject: A survey  about\r\n  your last visit\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <3@netigate.test>\r\n"
    b"List-Unsubscribe: <https://netigate.test/u/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Dear Ann,  \r\n\r\nplease   answer.\r\n" + b"More text.\t\r\n" * 40 + b"\r\n\r\n"
)

_RESULT = re.compile(
    r"dkim=(?P<result>\w+)[^;]*?header\.d=(?P<d>\S+)[^;]*?header\.a=(?P<a>\S+)"
    r"[^;]*?header\.s=(?P<s>\S+)"
)


def opendkim_binary() -> str:
    found = shutil.which("opendkim") or shutil.which("opendkim", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            "opendkim is not installed: the independent DKIM check needs "
            "`apt-get install -y opendkim opendkim-tools`"
        )
    return found


@dataclass(frozen=True)
class Verdict:
    domain: str
    selector: str
    algorithm: str
    result: str


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[SigningKey]]:
    store = KeyStore(tmp_path_factory.mktemp("keys"))
    store.generate(OURS, "rsa1")
    store.generate(OURS, "ed1", algorithm="ed25519")
    store.generate(CUSTOMER, "cust")
    return store.load_all()


@pytest.fixture(scope="module")
def signer(keys: dict[str, list[SigningKey]]) -> Signer:
    return Signer(keys, our_domain=OURS)


def opendkim_verify(
    message: bytes, keys: dict[str, list[SigningKey]], workdir: Path
) -> list[Verdict]:
    binary = opendkim_binary()
    public = workdir / "public-keys"
    public.write_text(
        "".join(
            f"{dns_name(k.domain, k.selector)} {dns_record_value(k)}\n"
            for ks in keys.values()
            for k in ks
        )
    )
    config = workdir / "opendkim.conf"
    config.write_text(f"Mode v\nSyslog no\nTestPublicKeys {public}\n")
    path = workdir / "message.eml"
    path.write_bytes(message)
    done = subprocess.run(
        [binary, "-x", str(config), "-vvv", "-t", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    verdicts = [
        Verdict(m["d"], m["s"].rstrip(";"), m["a"], m["result"]) for m in _RESULT.finditer(output)
    ]
    assert verdicts, f"no dkim= results in opendkim's output:\n{output}"
    return verdicts


def test_opendkim_passes_our_rsa_and_ed25519_signatures(
    tmp_path: Path, signer: Signer, keys: dict[str, list[SigningKey]]
) -> None:
    signed = signer.sign(MESSAGE, customer_domain=CUSTOMER)
    assert opendkim_verify(signed, keys, tmp_path) == [
        Verdict("customer.test", "cust", "rsa-sha256", "pass"),
        Verdict("netigate.test", "rsa1", "rsa-sha256", "pass"),
        Verdict("netigate.test", "ed1", "ed25519-sha256", "pass"),
    ]


def test_opendkim_fails_a_body_changed_after_signing(
    tmp_path: Path, signer: Signer, keys: dict[str, list[SigningKey]]
) -> None:
    signed = signer.sign(MESSAGE).replace(b"please   answer", b"please ignore")
    assert [v.result for v in opendkim_verify(signed, keys, tmp_path)] == ["fail", "fail"]


def test_opendkim_fails_a_from_prepended_after_signing(
    tmp_path: Path, signer: Signer, keys: dict[str, list[SigningKey]]
) -> None:
    signed = b"From: ceo@netigate.test\r\n" + signer.sign(MESSAGE)
    assert [v.result for v in opendkim_verify(signed, keys, tmp_path)] == ["fail", "fail"]


# At the very top, where an attacker puts a header field: readers show the
# first copy, verifiers take the bottom one for each name h= lists.
FORGED_COPIES = {
    "from": "From: ceo@netigate.test",
    "to": "To: victim@example.org",
    "cc": "Cc: other@example.org",
    "subject": "Subject: Urgent: confirm your password",
    "date": "Date: Wed, 15 Nov 2023 08:00:00 +0000",
    "message-id": "Message-ID: <forged@netigate.test>",
    "reply-to": "Reply-To: thief@evil.test",
    "list-unsubscribe": "List-Unsubscribe: <https://evil.test/u>",
    "list-unsubscribe-post": "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    "content-type": "Content-Type: text/html; charset=utf-8",
    "mime-version": "MIME-Version: 1.0",
    "feedback-id": "Feedback-ID: 1:evil:survey:netigate",
}


def test_opendkim_copies_cover_every_over_signed_header() -> None:
    assert set(FORGED_COPIES) == {name.decode() for name in OVERSIGNED_HEADERS}


@pytest.mark.parametrize("name", list(FORGED_COPIES))
def test_opendkim_fails_a_second_copy_of_a_signed_header_added_at_the_top(
    tmp_path: Path, signer: Signer, keys: dict[str, list[SigningKey]], name: str
) -> None:
    signed = signer.sign(MESSAGE, customer_domain=CUSTOMER)
    forged = FORGED_COPIES[name].encode() + b"\r\n" + signed
    assert [v.result for v in opendkim_verify(forged, keys, tmp_path)] == ["fail"] * 3
