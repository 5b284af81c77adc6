"""Where a webhook may connect (SSRF): the URL's host resolved through
the service's resolver, every address checked, and the one address that
was checked handed to the connection (mailer.webhooks.transport), so no
second lookup can point it elsewhere."""

from __future__ import annotations

from mailer.dns import Resolver
from mailer.errors import DNSError, ValidationError
from mailer.webhooks.policy import IPAddress, IPNetwork, Target, check_addresses, refusal


async def checked_address(
    resolver: Resolver, target: Target, allowed: tuple[IPNetwork, ...], *, field: str = "url"
) -> IPAddress:
    """The address to connect to for ``target``, once it (or, for a name,
    every address it resolves to) is permitted.

    Raises ValidationError naming ``field`` for a refused address or a name
    that does not exist, DNSTemporaryError when the lookup failed.
    """
    literal = target.literal
    if literal is not None:
        why = refusal(literal, allowed)
        if why is not None:
            raise ValidationError(field, f"{literal} is a {why} address (not allowed)")
        return literal
    try:
        addresses = await resolver.addresses(target.host)
    except DNSError as exc:
        if exc.temporary:
            raise
        raise ValidationError(field, f"{target.host}: {exc.reason}") from exc
    return check_addresses(target.host, addresses, allowed, field=field)
