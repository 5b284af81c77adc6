"""An HTTPS server on loopback that serves MTA-STS policy files
(``/.well-known/mta-sts.txt``, RFC 8461 §3.3) for tests and the bench.

Each ``mta-sts.<domain>`` host gets a :class:`Reply` (status, media type,
body, extra headers), so a test can serve a good policy, a redirect, a
wrong media type or an oversized body, change it, or take the host down.
The server runs in its own thread and presents the certificate it was
given (normally issued by :class:`mailer.dev.certs.TestCerts`).
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from mailer.dev.certs import CertFiles, TestCerts

__all__ = ["PolicyHost", "Reply", "policy_text"]

WELL_KNOWN = "/.well-known/mta-sts.txt"


def policy_text(
    mode: str, mx: list[str] | tuple[str, ...], max_age: int = 86400, *, newline: str = "\r\n"
) -> str:
    """A well-formed policy file."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return newline.join(lines) + newline


@dataclass(frozen=True)
class Reply:
    body: bytes | str
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


class PolicyHost:
    """``with PolicyHost(certs, ["mta-sts.a.test"], host="127.0.0.1") as ph:``;
    ``ph.serve("a.test", Reply(policy_text(...)))``; ``ph.port`` is the
    port to configure as ``mta_sts.test_port``. ``fetches`` counts the
    requests per domain."""

    def __init__(
        self,
        certs: TestCerts,
        names: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert: CertFiles | None = None,
    ) -> None:
        self.host = host
        self._files = cert or certs.issue(names)
        self._replies: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self.fetches: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = port

    @property
    def port(self) -> int:
        if self._server is None:
            return self._port
        return int(self._server.server_address[1])

    def serve(self, domain: str, reply: Reply) -> None:
        with self._lock:
            self._replies[domain.lower()] = reply

    def forget(self, domain: str) -> None:
        """Answer 404 for ``domain`` from now on."""
        with self._lock:
            self._replies.pop(domain.lower(), None)

    def reply_for(self, host_header: str) -> Reply:
        name = host_header.rsplit(":", 1)[0].lower() if host_header else ""
        domain = name.removeprefix("mta-sts.")
        with self._lock:
            self.fetches[domain] += 1
            return self._replies.get(domain) or Reply("not found", status=404)

    def start(self) -> PolicyHost:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != WELL_KNOWN:
                    self.send_error(404)
                    return
                reply = owner.reply_for(self.headers.get("Host", ""))
                data = reply.data
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet in tests

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self._files)
        server = ThreadingHTTPServer((self.host, self._port), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take the host down (connections are then refused)."""
        if self._server is not None:
            self._port = self.port
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> PolicyHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
