"""The door: a distribution and its recipients are validated before
anything is stored. Structural problems reject the whole request; an
invalid recipient address is reported by index while the valid ones are
stored, all in one transaction."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cachetools import LRUCache

from mailer.errors import TemplateError, ValidationError
from mailer.message.addresses import check_header_value, parse_address
from mailer.message.footer import LANGUAGES
from mailer.message.templates import CompiledContent, Content, compile_content, render
from mailer.store.models import NewDistribution, NewSend

MAX_RECIPIENTS = 10_000


class Recipient(Protocol):
    """A recipient as the door reads it: a RecipientInput, or the API's
    parsed request item as it is (not copied into one)."""

    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def variables(self) -> Mapping[str, str]: ...
    @property
    def reference(self) -> str | None: ...


@dataclass(frozen=True)
class RecipientInput:
    email: str
    name: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    reference: str | None = None


@dataclass(frozen=True)
class Rejected:
    index: int
    field: str
    reason: str


@dataclass(frozen=True)
class EnqueueResult:
    distribution_id: str
    send_ids: list[str]
    rejected: list[Rejected]


class CompiledTemplates:
    """The compiled templates of the last ``size`` distinct template
    sources. A platform enqueues a large distribution as many requests with
    the same templates, and compiling them (Jinja) costs about as much as
    checking a thousand recipients. Safe to share between threads."""

    def __init__(self, size: int = 16) -> None:
        self._items: LRUCache[Content, CompiledContent] = LRUCache(size)
        self._lock = threading.Lock()

    def compile(self, content: Content) -> CompiledContent:
        """compile_content, once per source. Raises what it raises (a
        refused template is not kept)."""
        with self._lock:
            hit = self._items.get(content)
            if hit is not None:
                return hit
        compiled = compile_content(content)
        with self._lock:
            self._items[content] = compiled
        return compiled


def check_distribution(
    dist: NewDistribution, *, templates: CompiledTemplates | None = None
) -> CompiledContent:
    """Raises ValidationError naming the field. ``templates``: where
    compiled templates are kept between requests (none: compiled anew)."""
    if not dist.account.strip():
        raise ValidationError("account", "must not be empty")
    check_header_value("account", dist.account)
    check_header_value("sender.name", dist.sender_name)
    parse_address("sender.address", dist.sender_address, dist.sender_name, name_field="sender.name")
    for index, tag in enumerate(dist.tags):
        check_header_value(f"tags[{index}]", tag)
    if dist.language is not None and dist.language not in LANGUAGES:
        raise ValidationError("language", f"must be one of {', '.join(LANGUAGES)}")
    if dist.unsubscribe_one_click and not (dist.unsubscribe_url or "").startswith("https://"):
        raise ValidationError(
            "unsubscribe_one_click", "needs an unsubscribe_url starting with https://"
        )
    content = Content.of(dist)
    return compile_content(content) if templates is None else templates.compile(content)


def check_recipients(
    compiled: CompiledContent,
    recipients: Sequence[Recipient],
    *,
    service: Mapping[str, str] | None = None,
) -> tuple[list[NewSend], list[Rejected]]:
    """Splits recipients into sends to store and rejections by index.

    ``service``: variables the service itself provides at delivery (the
    unsubscribe URL), rendered with but not stored.

    An undefined template variable is a fault of the request, not of one
    recipient: raises TemplateError naming the template field and the
    recipient index.
    """
    if not recipients:
        raise ValidationError("recipients", "at least one recipient is required")
    if len(recipients) > MAX_RECIPIENTS:
        raise ValidationError(
            "recipients", f"{len(recipients)} recipients; at most {MAX_RECIPIENTS} per request"
        )
    service = service or {}
    accepted: list[NewSend] = []
    rejected: list[Rejected] = []
    # Rendering every recipient costs more than everything else at the
    # door. A recipient whose variables have the same names as one already
    # rendered, and include every name the templates refer to, cannot meet
    # an undefined variable: render once per set of names.
    rendered: set[frozenset[str]] = set()
    always = frozenset(service) | {"email", "name"}
    in_headers = compiled.in_headers
    # Field names are spelt out only for a rejection: the checks name the
    # field within the recipient, the index is put in front.
    for index, item in enumerate(recipients):
        try:
            check_header_value("name", item.name)
            address = parse_address("email", item.email, item.name, name_field="name")
            for key, value in item.variables.items():
                if not isinstance(value, str):
                    raise ValidationError(f"variables.{key}", "must be a string")
                if key in in_headers:
                    # rendered into the subject or a header: CR/LF would inject
                    check_header_value(f"variables.{key}", value)
        except TemplateError:
            raise
        except ValidationError as exc:
            rejected.append(Rejected(index, f"recipients[{index}].{exc.field}", exc.reason))
            continue
        names = always.union(item.variables)
        if names not in rendered or not compiled.referenced <= names:
            variables = {**item.variables, **service, "email": address.address, "name": item.name}
            try:
                render(compiled, variables, derive_text=False)
            except TemplateError as exc:
                raise TemplateError(exc.field, f"{exc.reason} (recipients[{index}])") from exc
            rendered.add(names)
        accepted.append(
            NewSend(address.address, address.name, dict(item.variables), item.reference)
        )
    return accepted, rejected
