"""A real HTTP receiver on loopback for the webhook tests: it records every
request (headers, raw body) and answers what the test tells it to."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

# (status, extra headers) for the n-th request (0-based)
Answer = Callable[[int], tuple[int, dict[str, str]]]


def always_ok(_: int) -> tuple[int, dict[str, str]]:
    return 204, {}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str
    status: int = 0

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)
        return events


@dataclass
class Receiver:
    host: str = "127.0.0.1"
    answer: Answer = always_ok
    requests: list[Received] = field(default_factory=list)
    # (certificate chain, key) files: serve https
    tls: tuple[Path, Path] | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    def url(self, host: str | None = None, path: str = "/hooks") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver._lock:
                    index = len(receiver.requests)
                    received = Received(
                        {k.lower(): v for k, v in self.headers.items()}, body, self.path
                    )
                    receiver.requests.append(received)
                status, extra = receiver.answer(index)
                received.status = status
                # 204 and 304 carry no body
                reply = b"" if status in (204, 304) else b"ok" if status < 300 else b"not now"
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        family_server = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            family_server = V6
        self._server = family_server((self.host, 0), Handler)
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def delivered(self) -> list[Received]:
        """The requests that were answered 2xx, in order."""
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def verified_events(self, secret: str) -> list[dict[str, Any]]:
        """Every event of every acknowledged request, each request's
        signature checked by the standardwebhooks package."""
        hook = Webhook(secret)
        events: list[dict[str, Any]] = []
        for request in self.delivered():
            events.extend(hook.verify(request.body, request.headers))
        return events
