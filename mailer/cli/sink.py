"""``mailer sink``: the developer sink in the foreground, one line per
message (or JSON lines), optionally with its inbox in the browser and its
HTTP JSON API (``--http``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import click
import uvicorn

from mailer.cli.main import Context, cli, on_stop_signals, pass_ctx, run
from mailer.errors import ValidationError
from mailer.hostport import parse_host_port
from mailer.sink.faults import FAULTS, Faults
from mailer.sink.options import (
    DEFAULT_BACKLOG,
    DEFAULT_HOSTNAME,
    MAX_CHECK_PROCESSES,
    BadCert,
    SinkOptions,
    parse_listen,
    parse_reply_rule,
)
from mailer.sink.record import SinkMessage
from mailer.sink.report import (
    format_line,
    format_received,
    format_refusal,
    message_json,
    refusal_json,
)
from mailer.sink.server import DevSink
from mailer.sink.smtpd import Refusal
from mailer.sink.web import Changes, create_app

DEFAULT_LISTEN = "127.0.0.1:2525"
DEFAULT_MAILDIR = Path("var/sink/Maildir")
_API_START_TIMEOUT = 10.0


def options_from_flags(
    *,
    listen: str = DEFAULT_LISTEN,
    maildir: Path | None = DEFAULT_MAILDIR,
    cert: Path | None = None,
    key: Path | None = None,
    hostname: str = DEFAULT_HOSTNAME,
    replies: Sequence[str] = (),
    bad_cert: str | None = None,
    bounce_after: float = 0.0,
    complain: float = 0.0,
    feedback_to: str | None = None,
    backlog: int = DEFAULT_BACKLOG,
    no_checks: bool = False,
    check_processes: int = 0,
    **faults: Any,
) -> SinkOptions:
    """The sink's options from its command-line flags (pure); ``faults``
    by the names of :data:`mailer.sink.faults.FAULTS` (``tempfail_rate=``).

    Raises ValidationError naming the flag that is malformed or contradicts
    another.
    """
    if (cert is None) != (key is None):
        raise ValidationError("cert", "--cert and --key go together")
    host, port = parse_listen(listen, "listen")
    return SinkOptions(
        host=host,
        port=port,
        hostname=hostname,
        maildir=None if no_checks else maildir,
        cert=(cert, key) if cert is not None and key is not None else None,
        bad_cert=BadCert(bad_cert) if bad_cert else None,
        replies=tuple(parse_reply_rule(rule) for rule in replies),
        faults=Faults().replace(**faults),
        bounce_after=bounce_after,
        complain=complain,
        feedback_to=parse_host_port(feedback_to, "feedback-to") if feedback_to else None,
        backlog=backlog,
        check=not no_checks,
        check_processes=0 if no_checks else check_processes,
    )


def fault_options(command: Callable[..., None]) -> Callable[..., None]:
    """One option per fault of the vocabulary, named as it is: a switch for
    each true/false fault, a value for the others (checked by ``Faults``)."""
    defaults = Faults()
    for fault in reversed(FAULTS):
        flag = f"--{fault.name}"
        if fault.kind is bool:
            command = click.option(flag, is_flag=True, help=fault.help)(command)
        else:
            command = click.option(
                flag,
                type=fault.kind,
                default=getattr(defaults, fault.attr),
                metavar=fault.metavar,
                help=fault.help,
            )(command)
    return command


def describe_faults(options: SinkOptions) -> list[str]:
    """The fault rehearsals that are on, in words (pure)."""
    faults = [f"reply {r.stage}:{r.pattern} → {r.reply}" for r in options.replies]
    faults += options.faults.describe()
    if options.bounce_after or options.complain:
        assert options.feedback_to is not None
        host, port = options.feedback_to
        faults.append(
            f"returns {options.bounce_after:g} as DSN, {options.complain:g} as complaint "
            f"to {host}:{port}"
        )
    if options.bad_cert is not None:
        faults.append(f"{options.bad_cert} certificate")
    return faults


class _Printer:
    """Lines to ``out`` from the sink's threads, one at a time."""

    def __init__(
        self, out: TextIO, as_json: bool, *, checked: bool = True, quiet: bool = False
    ) -> None:
        self._out = out
        self._json = as_json
        self._checked = checked
        self._quiet = quiet
        self._lock = threading.Lock()

    def emit(self, text: str, data: dict[str, Any]) -> None:
        self._write(json.dumps(data, ensure_ascii=False) if self._json else text)

    def _write(self, line: str) -> None:
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def message(self, message: SinkMessage) -> None:
        if self._quiet:
            return
        # only the form printed is made: the JSON one parses the Subject
        if self._json:
            self._write(json.dumps(message_json(message), ensure_ascii=False))
        elif self._checked:
            self._write(format_line(message))
        else:
            self._write(format_received(message))

    def refusal(self, refusal: Refusal) -> None:
        self.emit(format_refusal(refusal), refusal_json(refusal))

    def ready(self, sink: DevSink, http: str | None) -> None:
        opts = sink.options
        faults = describe_faults(opts)
        text = (
            f"listening on {sink.address} starttls={'yes' if opts.starttls else 'no'}"
            f" maildir={opts.maildir or '-'} http={http or '-'}"
        )
        if opts.check:
            text += f" checking-processes={len(sink.check_pids)}"
        if sink.ca_path is not None and opts.starttls:
            text += f" ca={sink.ca_path}"
        if faults:
            text += " faults: " + "; ".join(faults)
        self.emit(
            text,
            {
                "event": "listening",
                "smtp": sink.address,
                "starttls": opts.starttls,
                "maildir": None if opts.maildir is None else str(opts.maildir),
                "http": http,
                "ca": None if sink.ca_path is None else str(sink.ca_path),
                "faults": faults,
                "checking_processes": len(sink.check_pids) if opts.check else None,
            },
        )


class _ApiServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `mailer sink` handles SIGTERM/SIGINT itself


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket for the API, bound now so a taken port fails
    the command at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(sink: DevSink, http: tuple[str, int] | None, printer: _Printer) -> None:
    try:
        await asyncio.to_thread(sink.start)
    except OSError as exc:
        raise click.ClickException(f"cannot start the sink on {sink.address}: {exc}") from exc
    api: _ApiServer | None = None
    api_task: asyncio.Task[None] | None = None
    changes = Changes()
    try:
        address = None
        if http is not None:
            try:
                sock = _bind(*http)
            except OSError as exc:
                raise click.ClickException(f"cannot listen on {http[0]}:{http[1]}: {exc}") from exc
            host, port = sock.getsockname()[:2]
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            api = _ApiServer(
                uvicorn.Config(
                    create_app(sink, changes=changes),
                    log_level="warning",
                    lifespan="off",
                    timeout_graceful_shutdown=5,
                )
            )
            api_task = asyncio.create_task(api.serve(sockets=[sock]))
            await _started(api, api_task)
        printer.ready(sink, address)
        stop = asyncio.Event()
        on_stop_signals(stop.set)
        await stop.wait()
    finally:
        if api is not None and api_task is not None:
            changes.close()  # open event streams end, so the server can stop
            api.should_exit = True
            await api_task
        await asyncio.to_thread(sink.stop)


async def _started(api: _ApiServer, task: asyncio.Task[None]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _API_START_TIMEOUT
    while not api.started:
        if task.done():
            task.result()  # raises what stopped it
            raise click.ClickException("the HTTP API stopped at start")
        if loop.time() > deadline:
            raise click.ClickException("the HTTP API did not start")
        await asyncio.sleep(0.02)


@cli.command()
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT")
@click.option(
    "--maildir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_MAILDIR,
    show_default=True,
    help="Store every message here (Maildir: cur/ new/ tmp/).",
)
@click.option(
    "--cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM certificate chain to present (default: one from a throw-away CA).",
)
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its PEM key."
)
@click.option("--hostname", default=DEFAULT_HOSTNAME, show_default=True, help="Greeting name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.option(
    "--http",
    default=None,
    metavar="HOST:PORT",
    help="Serve the inbox in the browser and the HTTP JSON API.",
)
@click.option(
    "--reply",
    "replies",
    multiple=True,
    metavar="'PATTERN=CODE ENH TEXT'",
    help="Answer matching recipients so (repeatable; prefix data: to answer after DATA).",
)
@fault_options
@click.option(
    "--backlog",
    type=click.IntRange(min=1),
    default=DEFAULT_BACKLOG,
    show_default=True,
    help="Messages accepted but not yet checked and stored, at most; beyond, 451.",
)
@click.option(
    "--no-checks",
    is_flag=True,
    help="Only record: no DKIM, checks, Maildir nor feedback; a short line per message "
    "(the sink of load tests).",
)
@click.option(
    "--check-processes",
    type=click.IntRange(0, MAX_CHECK_PROCESSES),
    default=None,
    metavar="N",
    help="Worker processes checking messages side by side; 0 checks in the sink's own "
    "process.  [default: the number of CPUs]",
)
@click.option("--quiet", is_flag=True, help="No line per message.")
@click.option(
    "--bad-cert",
    type=click.Choice([b.value for b in BadCert]),
    default=None,
    help="Present a certificate the `verify` TLS policy refuses.",
)
@click.option(
    "--bounce-after",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="RATE",
    help="Accept, then send back a DSN for this share of messages (to --feedback-to).",
)
@click.option(
    "--complain",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="RATE",
    help="Accept, then send an ARF complaint for this share of messages.",
)
@click.option(
    "--feedback-to",
    default=None,
    metavar="HOST:PORT",
    help="The inbound listener the DSNs and complaints go to [inbound.listen].",
)
@pass_ctx
def sink(
    ctx: Context,
    /,
    listen: str,
    maildir: Path,
    cert: Path | None,
    key: Path | None,
    hostname: str,
    as_json: bool,
    http: str | None,
    replies: tuple[str, ...],
    bad_cert: str | None,
    bounce_after: float,
    complain: float,
    feedback_to: str | None,
    backlog: int,
    no_checks: bool,
    check_processes: int | None,
    quiet: bool,
    **faults: Any,
) -> None:
    """A local SMTP sink that tells what a receiver would see.

    Every message is stored in the Maildir and printed with its TLS version,
    each DKIM signature's result (keys from the configured DNS, else from
    keys_dir) and the header checks. Fault flags rehearse what real
    receivers do. Runs until SIGTERM/SIGINT.
    """
    try:
        options = options_from_flags(
            listen=listen,
            maildir=maildir,
            cert=cert,
            key=key,
            hostname=hostname,
            replies=replies,
            bad_cert=bad_cert,
            bounce_after=bounce_after,
            complain=complain,
            feedback_to=feedback_to or ctx.config.inbound.listen,
            backlog=backlog,
            no_checks=no_checks,
            check_processes=(os.cpu_count() or 1) if check_processes is None else check_processes,
            **faults,
        )
        api_address = parse_listen(http, "http") if http else None
    except ValidationError as exc:
        raise click.BadParameter(exc.reason, param_hint=f"--{exc.field}") from exc
    config = ctx.config
    printer = _Printer(sys.stdout, as_json, checked=not no_checks, quiet=quiet)
    dev_sink = DevSink.for_config(
        config, options, on_message=printer.message, on_refusal=printer.refusal
    )
    run(_serve(dev_sink, api_address, printer))
