"""What a developer sink is told to do: where it listens, where it stores,
which certificate it shows, and which faults it rehearses. Parsed from
command-line flags by the pure functions here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mailer.errors import ValidationError
from mailer.hostport import parse_host_port
from mailer.sink.faults import Faults
from mailer.sink.smtpd import STAGES, check_reply

__all__ = [
    "DEFAULT_HOSTNAME",
    "MAX_CHECK_PROCESSES",
    "BadCert",
    "ReplyRule",
    "SinkOptions",
    "parse_listen",
    "parse_reply_rule",
]

DEFAULT_HOSTNAME = "mx.sink.test"
# Messages kept in memory for the HTTP API and the pytest fixture; the
# Maildir keeps everything.
DEFAULT_KEEP = 10_000
DEFAULT_BACKLOG = 1_000
MAX_CHECK_PROCESSES = 64

# PATTERN=CODE [ENH] [TEXT], with an optional stage prefix ("rcpt:",
# "data-command:" or "data:", the stages of the sink's scripts).
# The pattern is the shortest prefix followed by "=" and a reply code, so a
# pattern may itself contain "=" (rare in addresses, but legal).
_RULE = re.compile(
    rf"(?:(?P<stage>{'|'.join(map(re.escape, STAGES))}):)?"
    r"(?P<pattern>.+?)=(?P<reply>[45][0-9][0-9](?: .*)?)"
)
_ENHANCED = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}")


class BadCert(StrEnum):
    """A certificate a `verify` TLS policy must refuse."""

    SELF_SIGNED = "self-signed"
    EXPIRED = "expired"
    WRONG_NAME = "wrong-name"


@dataclass(frozen=True)
class ReplyRule:
    """Answer recipients matching ``pattern`` (fnmatch, case-insensitive)
    with ``reply`` at ``stage``."""

    pattern: str
    reply: str
    stage: str = "rcpt"


def parse_reply_rule(text: str) -> ReplyRule:
    """``'unknown*@*=550 5.1.1 no such user'`` → ReplyRule; a ``data:``
    prefix answers after the message instead of at RCPT, ``data-command:``
    the DATA command itself.

    Raises ValidationError("reply") unless the reply is a 4xx/5xx code,
    optionally followed by an enhanced status code of the same class and text.
    """
    match = _RULE.fullmatch(text.strip())
    if match is None:
        raise ValidationError(
            "reply", f"{text!r} is not PATTERN=CODE ENH TEXT (e.g. 'gone@*=550 5.1.1 no such user')"
        )
    reply = match["reply"]
    try:
        check_reply(reply)
    except ValueError as exc:
        raise ValidationError("reply", str(exc)) from exc
    words = reply.split(" ", 2)
    if len(words) > 1:
        enhanced = _ENHANCED.fullmatch(words[1])
        if enhanced is not None and enhanced[1] != reply[0]:
            raise ValidationError(
                "reply", f"enhanced code {words[1]} does not match reply code {reply[:3]}"
            )
    stage = match["stage"] or "rcpt"
    assert stage in STAGES
    return ReplyRule(match["pattern"], reply, stage)


def parse_listen(text: str, field: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` of a listener; port 0 means any free.

    Raises ValidationError(field) for anything else.
    """
    host, port = parse_host_port(text, field, any_port=True)
    return host, port


@dataclass(frozen=True)
class SinkOptions:
    """Everything `mailer sink` takes on its command line, validated.

    ``cert`` is a (certificate chain, private key) pair of PEM files; without
    it (and without ``bad_cert``) a certificate from a throw-away CA is
    made on start. ``maildir`` None stores nothing on disk.
    """

    host: str = "127.0.0.1"
    port: int = 0
    hostname: str = DEFAULT_HOSTNAME
    maildir: Path | None = None
    cert: tuple[Path, Path] | None = None
    bad_cert: BadCert | None = None
    replies: tuple[ReplyRule, ...] = ()
    # the faults it starts with (mailer.sink.faults: the one vocabulary);
    # faults.seed also makes bounce_after and complain repeatable
    faults: Faults = field(default_factory=Faults)
    keep: int = DEFAULT_KEEP
    # after-the-250 rehearsal: this share of messages comes back as a DSN,
    # this share as an ARF complaint, sent to the inbound listener at
    # feedback_to
    bounce_after: float = 0.0
    complain: float = 0.0
    feedback_to: tuple[str, int] | None = None
    # only mail whose envelope is at these domains comes back (None: all)
    feedback_domains: frozenset[str] | None = None
    # messages answered 250 but not yet checked and stored, at most; past
    # that the sink answers 451 (the sender retries) instead of piling up
    backlog: int = DEFAULT_BACKLOG
    # False: messages are only recorded (no DKIM, checks nor Maildir), as
    # fast as the SMTP side takes them: the sink of load tests
    check: bool = True
    # worker processes that check messages side by side (0: the sink's own
    # checking thread does, one message after another)
    check_processes: int = 0

    @property
    def starttls(self) -> bool:
        return not self.faults.no_starttls

    @property
    def pipelining(self) -> bool:
        return not self.faults.no_pipelining

    def __post_init__(self) -> None:
        """Raises ValidationError naming the flag that is out of range or
        contradicts another."""
        if not 0 <= self.port < 65536:
            raise ValidationError("listen", f"port {self.port} is out of range")
        if self.keep < 1:
            raise ValidationError("keep", "must be at least 1")
        for flag, rate in (("bounce-after", self.bounce_after), ("complain", self.complain)):
            if not 0.0 <= rate <= 1.0:
                raise ValidationError(flag, f"{rate} is not between 0 and 1")
        if self.bounce_after + self.complain > 1.0:
            raise ValidationError("complain", "--bounce-after and --complain add up to over 1")
        if (self.bounce_after or self.complain) and self.feedback_to is None:
            raise ValidationError("feedback-to", "the inbound listener to send to is needed")
        if self.backlog < 1:
            raise ValidationError("backlog", "must be at least 1")
        if not 0 <= self.check_processes <= MAX_CHECK_PROCESSES:
            raise ValidationError("check-processes", f"must be between 0 and {MAX_CHECK_PROCESSES}")
        if not self.starttls and (self.cert is not None or self.bad_cert is not None):
            raise ValidationError("no-starttls", "a certificate makes no sense without STARTTLS")
        if self.cert is not None and self.bad_cert is not None:
            raise ValidationError("bad-cert", "give either --cert/--key or --bad-cert")
        if not self.check and (self.maildir is not None or self.bounce_after or self.complain):
            raise ValidationError(
                "no-checks", "a sink that does not check stores nothing and sends nothing back"
            )
        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ValidationError("hostname", f"{self.hostname!r} is not a host name")
