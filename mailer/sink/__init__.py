"""The developer sink behind `mailer sink`: an SMTP server on loopback that
offers STARTTLS, stores every message in a Maildir, verifies each DKIM
signature, checks the header fields a receiver cares about, serves a small
HTTP JSON API and rehearses faults (scripted replies, greylisting, a
temporary-failure rate, dropped DATA, slow replies, no STARTTLS, bad
certificates).

    from mailer.sink import DevSink, Faults, SinkOptions

    options = SinkOptions(port=2525, faults=Faults(greylist=True))
    with DevSink(options, nameservers=["127.0.0.1:5353"]) as sink:
        [message] = sink.wait_for(1)
        assert message.dkim_pass and message.checks_ok
"""

from __future__ import annotations

from mailer.sink.checks import HeaderCheck, run_checks
from mailer.sink.faults import FAULTS, Fault, Faults
from mailer.sink.options import BadCert, ReplyRule, SinkOptions, parse_listen, parse_reply_rule
from mailer.sink.record import SinkMessage
from mailer.sink.report import format_line, message_json
from mailer.sink.server import DevSink
from mailer.sink.smtpd import Refusal
from mailer.sink.verify import DkimResult, KeySource

__all__ = [
    "FAULTS",
    "BadCert",
    "DevSink",
    "DkimResult",
    "Fault",
    "Faults",
    "HeaderCheck",
    "KeySource",
    "Refusal",
    "ReplyRule",
    "SinkMessage",
    "SinkOptions",
    "format_line",
    "message_json",
    "parse_listen",
    "parse_reply_rule",
    "run_checks",
]
