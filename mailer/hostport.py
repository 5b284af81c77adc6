"""``HOST:PORT`` as every setting and command-line option of the service
spells an address: ``host:port``, ``[v6]:port``, and where a default port
applies a bare ``host`` or bare IPv6 address (pure)."""

from __future__ import annotations

from mailer.errors import ValidationError

__all__ = ["parse_host_port"]


def parse_host_port(
    text: str, field: str, *, default_port: int | None = None, any_port: bool = False
) -> tuple[str, int]:
    """``(host, port)`` of ``text``. Without ``default_port`` the port is
    required; ``any_port`` admits port 0 (a listener on any free port).

    Raises ValidationError(field, reason) for a missing host, a missing or
    out-of-range port, or an unclosed ``[``.
    """
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValidationError(field, f"{text!r} is not [IPv6]:PORT")
        port = rest[1:]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        # a host name, or an IPv6 address without brackets: no port given
        host, port = value, ""
    if not host:
        raise ValidationError(field, f"{text!r} has no host")
    if not port:
        if default_port is None:
            raise ValidationError(field, f"expected HOST:PORT, got {text!r}")
        return host, default_port
    lowest = 0 if any_port else 1
    if not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ValidationError(field, f"{text!r}: the port must be {lowest}-65535")
    return host, int(port)
