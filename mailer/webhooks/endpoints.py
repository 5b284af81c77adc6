"""Managing an account's webhook endpoints: the one door for the API and
the CLI. Input is validated here (each error names its field); a URL is
checked for where it points when it is registered or changed."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailer.config import Config
from mailer.dns import Resolver
from mailer.errors import ValidationError
from mailer.store.base import Store
from mailer.store.webhooks import DeliveryRecord, Endpoint, EndpointPatch, NewEndpoint
from mailer.webhooks import policy, signing
from mailer.webhooks.guard import checked_address
from mailer.webhooks.payload import EVENT_TYPES, new_webhook_id, state_of, test_body
from mailer.webhooks.transport import PinnedClient, Reply, ssl_context

MAX_DESCRIPTION = 500
MAX_ACCOUNT = 200


def check_account(account: str) -> str:
    """Raises ValidationError (``account``)."""
    if not account or len(account) > MAX_ACCOUNT or not account.isprintable():
        raise ValidationError("account", f"must be 1 to {MAX_ACCOUNT} printable characters")
    return account


def check_types(types: Sequence[str]) -> tuple[str, ...]:
    """Event types as stored (state names); empty means every event.
    Raises ValidationError (``event_types``)."""
    out: list[str] = []
    for index, name in enumerate(types):
        if name not in EVENT_TYPES:
            raise ValidationError(
                f"event_types[{index}]", f"unknown event type {name!r}; known: {EVENT_TYPES}"
            )
        if state_of(name) not in out:
            out.append(state_of(name))
    return tuple(out)


def check_description(text: str | None) -> str | None:
    """Raises ValidationError (``description``)."""
    if text is None:
        return None
    if len(text) > MAX_DESCRIPTION or any(c in text for c in "\r\n\0"):
        raise ValidationError("description", f"at most {MAX_DESCRIPTION} characters, one line")
    return text


@dataclass(frozen=True)
class Created:
    endpoint: Endpoint
    secret: str  # shown once


class Webhooks:
    """Endpoints of accounts over ``store``."""

    def __init__(
        self,
        config: Config,
        store: Store,
        resolver: Resolver,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = config.webhooks
        self.store = store
        self.resolver = resolver
        self.clock = clock
        self.allowed = policy.allow_networks(self.cfg.allow)

    async def check_url(self, url: str) -> policy.Target:
        """Raises ValidationError (``url``) for a URL that is not https
        (unless allowed), or whose host resolves to a refused address;
        DNSTemporaryError when the lookup failed."""
        target = policy.parse_url(url, allow_insecure=self.cfg.allow_insecure)
        await checked_address(self.resolver, target, self.allowed)
        return target

    async def add(
        self,
        account: str,
        url: str,
        *,
        event_types: Sequence[str] = (),
        description: str | None = None,
    ) -> Created:
        """Register an endpoint; its secret is in the answer, once. Raises
        ValidationError naming the field, storing nothing."""
        new = NewEndpoint(
            account=check_account(account),
            url=url,
            secret=signing.new_secret(),
            event_types=check_types(event_types),
            description=check_description(description),
        )
        await self.check_url(url)
        endpoint = await self.store.webhooks.create(new, now=self.clock())
        return Created(endpoint, new.secret)

    async def endpoints(self, account: str | None) -> list[Endpoint]:
        return await self.store.webhooks.endpoints(account=account)

    async def get(self, endpoint_id: str, account: str | None) -> Endpoint:
        """Raises NotFound."""
        return await self.store.webhooks.get(endpoint_id, account=account)

    async def update(
        self,
        endpoint_id: str,
        account: str | None,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint:
        """Change what is given. Raises ValidationError naming the field,
        NotFound."""
        types = None if event_types is None else check_types(event_types)
        patch = EndpointPatch(
            url=url, event_types=types, description=check_description(description), enabled=enabled
        )
        await self.store.webhooks.get(endpoint_id, account=account)
        if url is not None:
            await self.check_url(url)
        return await self.store.webhooks.update(
            endpoint_id, patch, account=account, now=self.clock()
        )

    async def remove(self, endpoint_id: str, account: str | None) -> None:
        """Raises NotFound."""
        await self.store.webhooks.delete(endpoint_id, account=account)

    async def rotate(self, endpoint_id: str, account: str | None) -> Created:
        """A new secret; the old one signs beside it for the rotation
        overlap. Raises NotFound."""
        secret = signing.new_secret()
        now = self.clock()
        endpoint = await self.store.webhooks.rotate(
            endpoint_id,
            secret,
            account=account,
            previous_until=now + self.cfg.rotation_overlap,
            now=now,
        )
        return Created(endpoint, secret)

    async def replay(self, endpoint_id: str, account: str | None, cursor: int) -> Endpoint:
        """Send the account's events after ``cursor`` again (a feed
        ``seq``). Raises ValidationError (``from``), NotFound."""
        if cursor < 0:
            raise ValidationError("from", "must be a feed cursor (0 or more)")
        return await self.store.webhooks.rewind(
            endpoint_id, cursor, account=account, now=self.clock()
        )

    async def deliveries(
        self, endpoint_id: str, account: str | None, *, limit: int = 100, before: int | None = None
    ) -> list[DeliveryRecord]:
        """Raises NotFound."""
        return await self.store.webhooks.deliveries(
            endpoint_id, account=account, limit=limit, before=before
        )

    async def test(self, endpoint_id: str, account: str | None) -> Reply:
        """POST one signed ``webhook.test`` event now, outside the feed.
        Raises ValidationError (``url``) for a refused address, NotFound,
        WebhookFailed when there is no reply, DNSTemporaryError."""
        endpoint = await self.store.webhooks.get(endpoint_id, account=account)
        target = policy.parse_url(endpoint.url, allow_insecure=self.cfg.allow_insecure)
        address = await checked_address(self.resolver, target, self.allowed)
        now = self.clock()
        body = test_body(endpoint.account, now)
        headers = signing.headers(endpoint.signing_secrets(now), new_webhook_id(), int(now), body)
        client = PinnedClient(
            str(address),
            ssl_context(self.cfg.cafile),
            connect_timeout=self.cfg.connect_timeout,
            read_timeout=self.cfg.read_timeout,
        )
        try:
            return await client.post(endpoint.url, headers, body)
        finally:
            await client.close()


__all__ = ["Created", "Webhooks"]
