"""Postfix with OpenDKIM relaying to the bench sink: the figure the engine
is compared with (``mailer bench --postfix``).

A private Postfix instance (its own configuration, queue and data
directories under a scratch directory, listening on a loopback port)
relays everything to the bench sink over STARTTLS
(``smtp_tls_security_level = encrypt``) and has every message signed by
an OpenDKIM milter (RSA-2048, relaxed/relaxed) with
``milter_default_action = tempfail``, so a message the milter did not see
is not delivered and cannot count. Postfix's ``smtp-source`` injects
(``-s 20 -l 4500``, one connection per message, as the published figure
was taken); the time is from the first injection to the last message's
arrival at the sink, read from the sink's own log. Before the timed run
one message goes to a recording sink and its signature is verified, so a
milter that passes mail unsigned fails the measurement instead of
flattering Postfix. Nothing leaves the machine.

Debian's ``postfix`` (with ``smtp-source``), ``opendkim`` and
``opendkim-tools`` packages are needed; without them the bench fails
with an error naming what is missing. It is not run in CI.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mailer.errors import MailerError
from mailer.message.signing import records_dnsfunc, verify
from mailer.sink.runner import Sink, pick_port

__all__ = [
    "INJECT_LENGTH",
    "INJECT_SESSIONS",
    "PostfixRelay",
    "PostfixRun",
    "find_tools",
    "sink_arrivals",
]

# smtp-source's parallel sessions and payload bytes (the published figure's)
INJECT_SESSIONS = 20
INJECT_LENGTH = 4500
SENDER = "postfix-bench@bench.test"
PROBE_DOMAIN = "probe.bench.test"
PACKAGES = "postfix opendkim opendkim-tools"
SBIN = "/usr/sbin:/sbin"
_LINE = re.compile(r"^(?P<at>\d+\.\d+) \S+ (?P<tls>\S+) from=<(?P<sender>[^>]*)>")


@dataclass(frozen=True)
class Tools:
    postfix: str
    smtp_source: str
    opendkim: str


@dataclass(frozen=True)
class PostfixRun:
    messages: int
    seconds: float

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds


def find_tools(search: str | None = None) -> Tools:
    """The programs the comparison runs, looked for on ``search`` (default:
    ``PATH`` and the sbin directories Debian puts them in). Raises
    MailerError naming the missing one and the packages that bring it."""
    if search is None:
        search = f"{os.environ.get('PATH', '')}:{SBIN}"
    found: dict[str, str] = {}
    for name in ("postfix", "smtp-source", "opendkim"):
        path = shutil.which(name, path=search)
        if path is None:
            raise MailerError(
                f"bench --postfix needs {name}, which is not installed "
                f"(Debian packages: {PACKAGES})"
            )
        found[name] = path
    return Tools(found["postfix"], found["smtp-source"], found["opendkim"])


def sink_arrivals(log: Path, sender: str) -> list[tuple[float, str]]:
    """(arrival time, TLS version or "plain") of every message from
    ``sender`` in a bench sink's log, in the order received (pure over the
    file's text)."""
    arrivals = []
    for line in log.read_text().splitlines():
        match = _LINE.match(line)
        if match is not None and match["sender"] == sender:
            arrivals.append((float(match["at"]), match["tls"]))
    return arrivals


def main_cf(root: Path, *, listen: int, sink: int, milter: int) -> str:
    """Postfix's main.cf for the private instance (pure)."""
    return f"""\
compatibility_level = 3.6
queue_directory = {root / "spool"}
data_directory = {root / "data"}
maillog_file = {root / "maillog"}
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
# no reverse look-ups of 127.0.0.1: whatever the box's resolver does must
# not slow Postfix down
smtpd_peername_lookup = no
relayhost = [127.0.0.1]:{sink}
transport_maps = texthash:{root / "etc" / "transport"}
smtp_tls_security_level = encrypt
smtpd_milters = inet:127.0.0.1:{milter}
non_smtpd_milters = inet:127.0.0.1:{milter}
milter_default_action = tempfail
# the listener is {listen}, in master.cf
"""


# Postfix's stock services, none chrooted (the scratch queue has no
# chroot set-up); smtpd on the instance's own loopback port.
_MASTER_CF = """\
127.0.0.1:{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def opendkim_conf(root: Path, *, port: int, domain: str, selector: str, key: Path) -> str:
    """OpenDKIM's configuration: sign as ``domain``/``selector`` with
    ``key``, RSA-2048 relaxed/relaxed, From over-signed (pure)."""
    return f"""\
Syslog no
Mode s
Domain {domain}
Selector {selector}
KeyFile {key}
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
OversignHeaders From
Socket inet:{port}@127.0.0.1
PidFile {root / "opendkim.pid"}
# the scratch directory lies under the world-writable /tmp, which OpenDKIM
# would otherwise refuse; the key itself is 0600
RequireSafeKeys false
"""


def _wait_listening(
    port: int, what: str, process: subprocess.Popen[bytes] | None, log: Path
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise MailerError(f"postfix bench: {what} is not listening on 127.0.0.1:{port}: {said}")


class PostfixRelay:
    """``with PostfixRelay(...) as relay``: the private Postfix and OpenDKIM,
    started and checked (a probe message signed and verified), stopped and
    removed at the end. Raises MailerError when a program is missing, when
    they do not start or when the probe is not signed."""

    def __init__(
        self,
        sink_port: int,
        *,
        domain: str,
        selector: str,
        key_pem: bytes,
        key_record: str,
        tools: Tools | None = None,
    ) -> None:
        self.tools = tools or find_tools()
        self._sink_port = sink_port
        self._domain = domain
        self._selector = selector
        self._key_pem = key_pem
        self._key_record = key_record
        self._stack = contextlib.ExitStack()
        self.port = 0
        self.root = Path()

    def __enter__(self) -> PostfixRelay:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _start(self) -> None:
        # The postfix user must reach its queue: a directory of its own
        # outside the bench's private (0700) work directory.
        root = Path(tempfile.mkdtemp(prefix="mailer-postfix-"))
        self._stack.callback(shutil.rmtree, root, ignore_errors=True)
        root.chmod(0o755)
        self.root = root
        config = root / "etc"
        config.mkdir()
        # postfix start makes the queue's subdirectories, owned as it wants;
        # its data directory is the mail owner's
        (root / "spool").mkdir(mode=0o755)
        (root / "data").mkdir(mode=0o700)
        shutil.chown(root / "data", user="postfix")
        key = root / "dkim.key"
        key.touch(0o600)
        key.write_bytes(self._key_pem)
        self.port = pick_port(("127.0.0.1",))
        milter = pick_port(("127.0.0.1",))
        probe = self._stack.enter_context(Sink(starttls=True, hostname="mx.bench.test"))
        (config / "main.cf").write_text(
            main_cf(root, listen=self.port, sink=self._sink_port, milter=milter)
        )
        (config / "transport").write_text(f"{PROBE_DOMAIN} smtp:[127.0.0.1]:{probe.port}\n")
        (config / "master.cf").write_text(_MASTER_CF.format(listen=self.port))
        (root / "opendkim.conf").write_text(
            opendkim_conf(root, port=milter, domain=self._domain, selector=self._selector, key=key)
        )
        log = (root / "opendkim.log").open("wb")
        self._stack.callback(log.close)
        dkim = subprocess.Popen(
            [self.tools.opendkim, "-f", "-x", str(root / "opendkim.conf")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._stack.callback(_end, dkim)
        _wait_listening(milter, "opendkim", dkim, root / "opendkim.log")
        self._postfix("start")
        self._stack.callback(self._postfix, "stop", check=False)
        _wait_listening(self.port, "postfix", None, root / "maillog")
        self._probe(probe)

    def _postfix(self, verb: str, *, check: bool = True) -> None:
        done = subprocess.run(
            [self.tools.postfix, "-c", str(self.root / "etc"), verb],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise MailerError(f"postfix bench: postfix {verb}: {done.stdout}{done.stderr}".strip())

    def _inject(self, count: int, recipient: str) -> None:
        done = subprocess.run(
            [
                self.tools.smtp_source,
                *("-s", str(INJECT_SESSIONS), "-l", str(INJECT_LENGTH), "-m", str(count)),
                *("-f", SENDER, "-t", recipient, f"127.0.0.1:{self.port}"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise MailerError(f"postfix bench: smtp-source: {done.stdout}{done.stderr}".strip())

    def _probe(self, probe: Sink) -> None:
        """One message through the whole path to the recording sink: it must
        arrive over TLS with a DKIM signature that verifies."""
        self._inject(1, f"probe@{PROBE_DOMAIN}")
        try:
            [received] = probe.wait_for(1, timeout=30)
        except TimeoutError as exc:
            raise MailerError(
                f"postfix bench: the probe message did not arrive: {self._log_tail()}"
            ) from exc
        if received.tls_version is None:
            raise MailerError("postfix bench: the probe message came without TLS")
        name = f"{self._selector}._domainkey.{self._domain}"
        checks = verify(received.data, dnsfunc=records_dnsfunc({name: self._key_record}))
        if not checks or not all(check.ok for check in checks):
            raise MailerError(f"postfix bench: the probe message is not signed: {checks}")

    def _log_tail(self) -> str:
        log = self.root / "maillog"
        return log.read_text()[-2000:] if log.exists() else "(no maillog)"

    def run(
        self, sink_log: Path, messages: int, *, recipient: str, timeout: float = 600
    ) -> PostfixRun:
        """Inject ``messages`` with smtp-source and time them to their arrival
        at the bench sink (whose log is ``sink_log``). Raises MailerError when
        not all arrive within ``timeout`` seconds or one came without TLS."""
        before = len(sink_arrivals(sink_log, SENDER))
        start = time.time()
        self._inject(messages, recipient)
        deadline = time.monotonic() + timeout
        while True:
            arrivals = sink_arrivals(sink_log, SENDER)[before:]
            if len(arrivals) >= messages:
                break
            if time.monotonic() > deadline:
                raise MailerError(
                    f"postfix bench: {len(arrivals)} of {messages} messages arrived: "
                    f"{self._log_tail()}"
                )
            time.sleep(0.2)
        if any(tls == "plain" for _, tls in arrivals):
            raise MailerError("postfix bench: a message reached the sink without TLS")
        return PostfixRun(messages, arrivals[messages - 1][0] - start)


def _end(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
