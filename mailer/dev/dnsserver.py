"""A small authoritative-style DNS server for tests and local development.

It serves a records mapping over UDP and TCP on one loopback port from a
background daemon thread with its own event loop, so sync tests, async
tests and worker subprocesses can all query it.  Tests change the data and
inject failures while it runs::

    with DNSServer({"example.test": {"MX": [(10, "mx.example.test")]},
                    "mx.example.test": {"A": ["127.0.0.1"], "ttl": 60}}) as server:
        nameservers = [server.address]       # "127.0.0.1:PORT"
        server.fail("example.test")          # SERVFAIL from now on
        server.heal("example.test")
        server.secure()                      # AD bit on every answer from now on
        server.secure("mx.example.test", on=False)   # ... but not for this name

TLSA records take their presentation form (``"3 1 1 <hex>"``). The AD bit
is set only when the query asks for it (AD or DO, RFC 6840 §5.7), as a
validating resolver does, so the server stands in for one.

Run in the foreground (until SIGTERM/SIGINT)::

    python -m mailer.dev.dnsserver --listen 127.0.0.1:5353 --zone zone.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.TXT
import dns.rrset

from mailer.errors import ValidationError
from mailer.hostport import parse_host_port
from mailer.loop import ServerThread

Records = dict[str, Any]

_IN = dns.rdataclass.IN
_MAX_CHAIN = 8
_UDP_MAX = 512
_TCP_MAX = 65535


def to_name(name: str) -> dns.name.Name:
    """Absolute :class:`dns.name.Name` for ``name`` (trailing dot optional,
    Unicode labels IDNA-encoded). Raises ``ValueError`` for an invalid name."""
    try:
        return dns.name.from_text(name.rstrip(".") + ".")
    except dns.exception.DNSException as exc:
        raise ValueError(f"invalid DNS name {name!r}: {exc}") from exc


def txt_strings(value: str | Sequence[str]) -> list[bytes]:
    """The character-strings of one TXT record.

    A ``str`` is UTF-8 encoded and split into 255-byte pieces (as publishers
    do for long SPF/DKIM records); a tuple gives the strings explicitly.
    Raises ``ValueError`` for an explicit string longer than 255 bytes.
    """
    if isinstance(value, str):
        data = value.encode()
        return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    strings = [s.encode() for s in value]
    for s in strings:
        if len(s) > 255:
            raise ValueError(f"TXT character-string longer than 255 bytes: {s[:20]!r}...")
    return strings or [b""]


def make_rdatas(rdtype: str, values: Sequence[Any]) -> list[dns.rdata.Rdata]:
    """Rdata objects for ``values`` of ``rdtype`` (see the module docstring for
    the accepted shapes). Raises ``ValueError`` for a value of the wrong shape."""
    try:
        kind = dns.rdatatype.from_text(rdtype.upper())
    except dns.exception.DNSException as exc:
        raise ValueError(f"unknown record type {rdtype!r}") from exc
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        # A bare string is one value, never a sequence of characters.
        values = [values]
    if not values:
        raise ValueError(f"no {rdtype} values given (remove() deletes an RRset)")
    rdatas: list[dns.rdata.Rdata] = []
    for value in values:
        try:
            rdatas.append(_make_rdata(kind, value))
        except (dns.exception.DNSException, TypeError, ValueError) as exc:
            raise ValueError(f"invalid {rdtype} value {value!r}: {exc}") from exc
    return rdatas


def _make_rdata(kind: dns.rdatatype.RdataType, value: Any) -> dns.rdata.Rdata:
    if kind == dns.rdatatype.MX:
        preference, exchange = value
        if not isinstance(preference, int) or not isinstance(exchange, str):
            raise TypeError("MX values are (preference, exchange) pairs")
        return dns.rdata.from_text(_IN, kind, f"{preference} {to_name(exchange)}")
    if kind == dns.rdatatype.TXT:
        if not isinstance(value, str | tuple | list):
            raise TypeError("TXT values are str or tuple[str, ...]")
        return dns.rdtypes.ANY.TXT.TXT(_IN, kind, txt_strings(value))
    if not isinstance(value, str):
        raise TypeError(f"{dns.rdatatype.to_text(kind)} values are strings")
    return dns.rdata.from_text(_IN, kind, value, origin=dns.name.root, relativize=False)


class _Zone:
    """The served data and the injected faults; shared between the test's
    thread and the server's thread, hence the lock."""

    def __init__(self, default_ttl: int, negative_ttl: int) -> None:
        self.default_ttl = default_ttl
        self.negative_ttl = negative_ttl
        self.lock = threading.Lock()
        self.nodes: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self.failing: dict[
            tuple[dns.name.Name, dns.rdatatype.RdataType | None], dns.rcode.Rcode
        ] = {}
        self.dropped: set[dns.name.Name] = set()
        # the AD bit: per name, else the default
        self.secure_default = False
        self.secure: dict[dns.name.Name, bool] = {}
        self.queries: list[tuple[str, str]] = []

    def respond(self, wire: bytes, *, udp: bool) -> bytes | None:
        """The reply to a query in wire form, ``None`` to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not even an ID to answer to
        if query.flags & dns.flags.QR:
            return None
        response = self._answer(query)
        if response is None:
            return None
        # UDP answers stop at 512 bytes even when the client offers a bigger
        # EDNS buffer: that keeps the TC -> TCP path exercised by small data.
        try:
            return response.to_wire(max_size=_UDP_MAX if udp else _TCP_MAX)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query, our_payload=_UDP_MAX)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        response = dns.message.make_response(query, our_payload=_UDP_MAX)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.question else dns.rcode.FORMERR)
            return response
        question = query.question[0]
        qname, qtype = question.name, question.rdtype
        with self.lock:
            self.queries.append(
                (qname.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(qtype))
            )
            if qname in self.dropped:
                return None
            rcode = self.failing.get((qname, qtype), self.failing.get((qname, None)))
            if rcode is not None:
                response.set_rcode(rcode)
                return response
            self._fill(response, qname, qtype)
            asked = query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO
            if asked and self.secure.get(qname, self.secure_default):
                response.flags |= dns.flags.AD
        return response

    def _fill(
        self, response: dns.message.Message, qname: dns.name.Name, qtype: dns.rdatatype.RdataType
    ) -> None:
        name = qname
        for _ in range(_MAX_CHAIN):
            node = self.nodes.get(name)
            if node is None:
                break
            if qtype == dns.rdatatype.ANY:
                response.answer.extend(node.values())
                return
            if qtype in node:
                response.answer.append(node[qtype])
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is None:
                break
            response.answer.append(cname)
            name = cast(dns.rdtypes.ANY.CNAME.CNAME, cname[0]).target
        exists = name in self.nodes or any(
            other.is_subdomain(name) and other != name for other in self.nodes
        )
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(self._soa_for(name))

    def _soa_for(self, name: dns.name.Name) -> dns.rrset.RRset:
        """The SOA of the closest enclosing name that has one; otherwise a
        synthetic one at the top-level label, so negative answers always
        carry a negative TTL."""
        apex = name
        while True:
            soa = self.nodes.get(apex, {}).get(dns.rdatatype.SOA)
            if soa is not None:
                return soa
            if len(apex) <= 2:
                break
            apex = apex.parent()
        mname = dns.name.from_text("ns", origin=apex)
        rname = dns.name.from_text("hostmaster", origin=apex)
        text = f"{mname} {rname} 1 3600 600 86400 {self.negative_ttl}"
        rdata = dns.rdata.from_text(_IN, dns.rdatatype.SOA, text)
        return dns.rrset.from_rdata(apex, self.negative_ttl, rdata)

    def set(self, name: str, rdtype: str, values: Sequence[Any], ttl: int | None) -> None:
        owner = to_name(name)
        kind = dns.rdatatype.from_text(rdtype.upper())
        rrset = dns.rrset.from_rdata_list(
            owner, self.default_ttl if ttl is None else ttl, make_rdatas(rdtype, values)
        )
        with self.lock:
            self.nodes.setdefault(owner, {})[kind] = rrset

    def remove(self, name: str, rdtype: str | None) -> None:
        owner = to_name(name)
        with self.lock:
            node = self.nodes.get(owner)
            if node is None:
                return
            if rdtype is not None:
                node.pop(dns.rdatatype.from_text(rdtype.upper()), None)
            if rdtype is None or not node:
                del self.nodes[owner]


class DNSServer:
    """Authoritative-style DNS server on loopback, UDP and TCP on one port.

    ``records`` maps names to ``{rdtype: values, "ttl": seconds}``. A name not
    present answers NXDOMAIN; a present name without the type (or an empty
    non-terminal) answers NODATA with an SOA; CNAMEs in the data are
    followed. UDP answers bigger than 512 bytes come back truncated (TC) so
    clients retry over TCP. ``negative_ttl`` (default ``default_ttl``) is the
    SOA minimum of the synthetic SOA sent with negative answers.
    """

    def __init__(
        self,
        records: Mapping[str, Records] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_ttl: int = 300,
        negative_ttl: int | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self._zone = _Zone(default_ttl, default_ttl if negative_ttl is None else negative_ttl)
        self.queries = self._zone.queries
        self._listener: _Listener | None = None
        self._server = ServerThread("dnsserver", self._open, self._close)
        if records:
            self.update(records)

    # -- data -------------------------------------------------------------

    def set(self, name: str, rdtype: str, values: Sequence[Any], ttl: int | None = None) -> None:
        """Replace the ``rdtype`` RRset of ``name``. Raises ``ValueError`` for
        values of the wrong shape."""
        self._zone.set(name, rdtype, values, ttl)

    def update(self, records: Mapping[str, Records]) -> None:
        """Set every RRset in ``records``; other RRsets stay. Raises ``ValueError``."""
        for name, entry in records.items():
            ttl = entry.get("ttl")
            for rdtype, values in entry.items():
                if rdtype != "ttl":
                    self.set(name, rdtype, values, ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove one RRset of ``name``, or the whole name."""
        self._zone.remove(name, rdtype)

    def fail(self, name: str, rcode: str = "SERVFAIL", *, rdtype: str | None = None) -> None:
        """Answer every query for ``name`` (only of ``rdtype`` if given) with ``rcode``."""
        kind = None if rdtype is None else dns.rdatatype.from_text(rdtype.upper())
        code = dns.rcode.from_text(rcode.upper())
        with self._zone.lock:
            self._zone.failing[(to_name(name), kind)] = code

    def secure(self, name: str | None = None, *, on: bool = True) -> None:
        """Set (``on``) or clear the AD bit on answers for ``name``, or on
        every answer without a setting of its own when ``name`` is None."""
        with self._zone.lock:
            if name is None:
                self._zone.secure_default = on
            else:
                self._zone.secure[to_name(name)] = on

    def drop(self, name: str) -> None:
        """Never answer queries for ``name``: the client times out."""
        with self._zone.lock:
            self._zone.dropped.add(to_name(name))

    def heal(self, name: str) -> None:
        """Undo :meth:`fail` and :meth:`drop` for ``name``."""
        owner = to_name(name)
        with self._zone.lock:
            self._zone.dropped.discard(owner)
            for key in [key for key in self._zone.failing if key[0] == owner]:
                del self._zone.failing[key]

    # -- lifecycle --------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as the config's ``nameservers`` list takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread (nothing when already serving).
        Raises ``OSError`` if the port cannot be bound for both UDP and TCP."""
        if not self._server.running:
            self._server.start()

    def stop(self) -> None:
        """Stop serving and close both sockets; the port is kept for a restart."""
        self._server.stop()

    def __enter__(self) -> DNSServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> DNSServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- the server thread ------------------------------------------------

    async def _open(self) -> None:
        self._listener = _Listener(self._zone)
        self._port = await self._listener.open(self.host, self._port)

    async def _close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
            self._listener = None


class _Listener:
    """The UDP endpoint and TCP server of one running :class:`DNSServer`."""

    def __init__(self, zone: _Zone) -> None:
        self.zone = zone
        self.transport: asyncio.BaseTransport | None = None
        self.server: asyncio.Server | None = None
        self.streams: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def open(self, host: str, port: int) -> int:
        """Bind both protocols and return the port."""
        udp, tcp = _bind_pair(host, port)
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self.zone), sock=udp
        )
        self.server = await asyncio.start_server(self._serve_stream, sock=tcp)
        return int(udp.getsockname()[1])

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.server is not None:
            self.server.close()
        # Closing a stream ends its reader with EOF (cancelling it instead
        # trips an asyncio 3.11 stream callback); a few loop turns let
        # connections accepted just now reach their handler first.
        for _ in range(3):
            await asyncio.sleep(0)
            for writer in list(self.streams.values()):
                writer.close()
            await asyncio.gather(*list(self.streams), return_exceptions=True)
        current = asyncio.current_task()
        rest = [task for task in asyncio.all_tasks() if task is not current]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.streams[task] = writer
        try:
            while True:
                header = await reader.readexactly(2)
                wire = await reader.readexactly(int.from_bytes(header, "big"))
                reply = self.zone.respond(wire, udp=False)
                if reply is not None:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, or the server is stopping
        finally:
            del self.streams[task]
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, zone: _Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.zone.respond(data, udp=True)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def _bind_pair(host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same port; with port 0, retry until
    a port free for both protocols turns up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(64)
        except OSError as exc:
            udp.close()
            tcp.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")


def load_zone(path: str) -> dict[str, Records]:
    """Records from a JSON file (MX as ``[pref, host]``, explicit TXT strings
    as lists). Raises ``ValueError`` for a file of the wrong shape."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected an object of name -> {{rdtype: values}}")
    zone: dict[str, Records] = {}
    for name, entry in data.items():
        records: Records = {}
        for rdtype, values in entry.items():
            if rdtype.upper() in ("MX", "TXT") and isinstance(values, list):
                values = [tuple(v) if isinstance(v, list) else v for v in values]
            records[rdtype] = values
        zone[name] = records
    return zone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailer.dev.dnsserver", description="Serve test DNS data."
    )
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0 = any free)")
    parser.add_argument("--zone", help="JSON file: {name: {rdtype: values, ttl: n}}")
    args = parser.parse_args(argv)
    try:
        host, port = parse_host_port(args.listen, "--listen", any_port=True)
    except ValidationError as exc:
        parser.error(str(exc))
    records = load_zone(args.zone) if args.zone else {}
    # Blocked before the server thread starts, so it inherits the mask and
    # only sigwait() below ever sees the signals.
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    server = DNSServer(records, host=host, port=port)
    server.start()
    print(f"listening on {server.address}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.sigwait(signals)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
