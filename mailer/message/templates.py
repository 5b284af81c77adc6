"""Survey content templates: compiled once per distribution, rendered once
per recipient.

Templates come from customers, so they run in Jinja's immutable sandbox with
strict undefined variables: a template that reaches for Python internals or
uses a variable the recipient does not have is refused with a
:class:`~mailer.errors.TemplateError` naming the field, never rendered
half-way. The HTML template is autoescaped; subject, text and unsubscribe URL
are plain text. Every ``{{ ... }}`` in the unsubscribe URL template is
percent-encoded as one URL component (Jinja's ``finalize`` hook, so it
holds however the template author writes the expression), so a recipient
variable can fill one path segment or query value but never add a query
parameter, a fragment or another host: scheme, host and separators must be
literal in the template.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from inscriptis import get_text
from inscriptis.css_profiles import CSS_PROFILES
from inscriptis.model.config import ParserConfig
from inscriptis.model.tag import CustomHtmlTagHandlerMapping
from jinja2 import StrictUndefined, Template, meta, nodes
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from mailer.errors import TemplateError, ValidationError
from mailer.message import limits
from mailer.message.addresses import check_header_value

__all__ = [
    "CompiledContent",
    "Content",
    "Rendered",
    "compile_content",
    "html_to_text",
    "render",
]

# A template can ask for `'x' * 10**9` and Jinja would even fold that constant
# while compiling; intercepted operators are neither folded nor unbounded.
_MAX_REPEAT = 100_000
_MAX_EXPONENT = 1_000

_URL_SCHEMES = ("https://", "mailto:")
_URL_FORBIDDEN = re.compile(r"[\s<>\"]")

# Private-use code points mark link text and target while inscriptis lays out
# the text, so that links can be written as "text (url)" afterwards without
# guessing where inscriptis put them.
_LINK_OPEN, _LINK_MID, _LINK_CLOSE = "\ue000", "\ue001", "\ue002"
_LINK_MARKERS = re.compile("[\ue000-\ue002]")
_LINK = re.compile("\ue000(.*?)\ue001(.*?)\ue002", re.DOTALL)
_SHOWN_LINK_SCHEMES = ("http://", "https://", "mailto:")


class _Undefined(StrictUndefined):
    """StrictUndefined whose message is the reason we report."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if not self._undefined_hint and self._undefined_obj is missing:
            return f"undefined variable {self._undefined_name!r}"
        return str(super()._undefined_message)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "+":
            if (
                isinstance(left, str | list | tuple)
                and isinstance(right, str | list | tuple)
                and len(left) + len(right) > limits.MAX_PART_CHARS
            ):
                raise SecurityError(f"value longer than {limits.MAX_PART_CHARS:,}")
            return left + right
        if operator_ == "%":
            limits.check_format(left)
            return limits.sized(left % right)
        if operator_ == "**":
            if isinstance(right, int) and abs(right) > _MAX_EXPONENT:
                raise SecurityError(f"exponent larger than {_MAX_EXPONENT}")
            return left**right
        for seq, count in ((left, right), (right, left)):
            if (
                isinstance(seq, str | list | tuple)
                and isinstance(count, int)
                and len(seq) * count > _MAX_REPEAT
            ):
                raise SecurityError(f"repetition longer than {_MAX_REPEAT}")
        return operator.mul(left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # every call of the template (functions, methods) is checked before
        # (widths, counts, format strings) and after (the result's size)
        limits.check_arguments(args, kwargs)
        if getattr(__obj, "__name__", None) in ("format", "format_map"):
            # the sandbox hands out str.format wrapped (functools.update_wrapper)
            method = getattr(__obj, "__wrapped__", __obj)
            limits.check_format(getattr(method, "__self__", None))
        return limits.sized(super().call(__context, __obj, *args, **kwargs))


def _quote_component(value: Any) -> str:
    return quote(str(value), safe="")


def _sandbox(*, autoescape: bool, finalize: Callable[[Any], Any] | None = None) -> _Sandbox:
    env = _Sandbox(
        undefined=_Undefined,
        autoescape=autoescape,
        finalize=finalize,
        auto_reload=False,
        cache_size=0,
    )
    env.filters = {
        name: limits.bounded_filter(fn, formats=name == "format")
        for name, fn in env.filters.items()
    }
    env.globals.update(limits.GLOBALS)
    return env


class HasContent(Protocol):
    """What a distribution, stored or new, carries of its templates."""

    @property
    def subject(self) -> str: ...
    @property
    def html(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...
    @property
    def unsubscribe_url(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Content:
    """Template sources of one distribution."""

    subject: str
    html: str | None
    text: str | None
    unsubscribe_url: str | None = None

    @classmethod
    def of(cls, source: HasContent) -> Content:
        """The template sources of a distribution, stored or new."""
        return cls(
            subject=source.subject,
            html=source.html,
            text=source.text,
            unsubscribe_url=source.unsubscribe_url,
        )


@dataclass(frozen=True, slots=True)
class CompiledContent:
    """Compiled templates of one distribution; immutable, render many times."""

    subject: Template
    html: Template | None
    text: Template | None
    unsubscribe_url: Template | None
    # the distribution has no text template: ``text`` (when not None) was
    # derived from the HTML template, else each rendered HTML is converted
    text_from_html: bool = False
    # every variable name the templates refer to, and those of the
    # templates that end up in header fields (subject, unsubscribe URL)
    referenced: frozenset[str] = frozenset()
    in_headers: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Rendered:
    """One recipient's message content. ``text`` is always present (derived
    from ``html`` when the distribution has no text template)."""

    subject: str
    text: str
    html: str | None
    unsubscribe_url: str | None


# Loader-based tags would reach outside the one template (and fail at render
# time with a TypeError because there is no loader), so they are refused early.
_FORBIDDEN_NODES: tuple[tuple[type[nodes.Node], str], ...] = (
    (nodes.Extends, "extends"),
    (nodes.Include, "include"),
    (nodes.Import, "import"),
    (nodes.FromImport, "from ... import"),
)


def _compile(env: _Sandbox, field: str, source: str) -> Template:
    try:
        ast = env.parse(source)
    except JinjaTemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TemplateError(field, f"syntax error{where}: {exc.message}") from exc
    for node_type, tag in _FORBIDDEN_NODES:
        if ast.find(node_type) is not None:
            raise TemplateError(field, f"'{tag}' is not allowed in templates")
    # every loop through the render's budget, every ~ size-checked
    ast = limits.Guard().visit(ast)
    ast.set_environment(env)
    template = env.from_string(ast)
    # Jinja keeps a template's globals as a ChainMap over the environment's
    # and copies them into every render's context: a plain dict of the same
    # (never changed) entries is several times cheaper to copy, per recipient
    # and template.
    template.globals = dict(template.globals)
    return template


def compile_content(content: Content) -> CompiledContent:
    """Compile the templates of a distribution once.

    Raises TemplateError(field, reason) with field "subject", "html", "text"
    or "unsubscribe_url" for a template that does not compile, and
    ValidationError("html", ...) when neither html nor text is given, or
    ValidationError("subject", ...) for an empty subject.
    """
    html = content.html if content.html and content.html.strip() else None
    text = content.text if content.text and content.text.strip() else None
    if html is None and text is None:
        raise ValidationError("html", "at least one of html or text is required")
    if not content.subject.strip():
        raise ValidationError("subject", "empty subject")
    plain = _sandbox(autoescape=False)
    url = None
    if content.unsubscribe_url is not None:
        url = _compile(
            _sandbox(autoescape=False, finalize=_quote_component),
            "unsubscribe_url",
            content.unsubscribe_url,
        )
    text_template = None if text is None else _compile(plain, "text", text)
    if text_template is None and html is not None:
        derived = derive_text_template(html)
        if derived is not None:
            text_template = _compile(plain, "html", derived)

    subject = _compile(plain, "subject", content.subject)
    html_template = None if html is None else _compile(_sandbox(autoescape=True), "html", html)

    def names(*sources: str | None) -> frozenset[str]:
        # every source compiled above, so parsing cannot fail here
        return frozenset(
            name
            for source in sources
            if source is not None
            for name in meta.find_undeclared_variables(plain.parse(source))
        )

    return CompiledContent(
        referenced=names(content.subject, html, text, content.unsubscribe_url),
        in_headers=names(content.subject, content.unsubscribe_url),
        subject=subject,
        html=html_template,
        text=text_template,
        unsubscribe_url=url,
        text_from_html=text is None,
    )


_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def derive_text_template(html: str) -> str | None:
    """The text template of an HTML template, converted once per
    distribution instead of once per recipient (the conversion costs about
    ten times the rendering).

    Only for templates whose Jinja is plain ``{{ expressions }}`` that the
    conversion carries over unchanged (text and link targets); a template
    with statements or comments, or one whose expressions the conversion
    drops or alters (inside other attributes, containing markup), returns
    None and is converted per recipient.
    """
    if "{%" in html or "{#" in html:
        return None
    derived = html_to_text(html)
    if sorted(_EXPRESSION.findall(derived)) != sorted(_EXPRESSION.findall(html)):
        return None
    return derived


def _render(template: Template, field: str, variables: Mapping[str, str]) -> str:
    try:
        return limits.render_bounded(lambda: template.generate(variables))
    except SecurityError as exc:
        raise TemplateError(field, f"unsafe template operation: {exc}") from exc
    except JinjaTemplateError as exc:
        raise TemplateError(field, str(exc)) from exc
    except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        # Errors of the sandboxed expressions themselves (1/0, int('x'), a
        # too large range()); the template is at fault, not the service.
        raise TemplateError(field, f"{type(exc).__name__}: {exc}") from exc


def _check_unsubscribe_url(url: str) -> str:
    check_header_value("unsubscribe_url", url)
    if not url.lower().startswith(_URL_SCHEMES):
        raise ValidationError("unsubscribe_url", "must be an https: or mailto: URL")
    if _URL_FORBIDDEN.search(url):
        raise ValidationError("unsubscribe_url", "contains whitespace, '<', '>' or '\"'")
    return url


def render(
    compiled: CompiledContent, variables: Mapping[str, str], *, derive_text: bool = True
) -> Rendered:
    """Render one recipient's content.

    ``variables`` are the recipient's variables (the engine includes
    ``email`` and ``name``); the rendered unsubscribe URL is added as
    ``unsubscribe_url`` for the other templates.

    Raises TemplateError(field, reason) for an undefined variable, a sandbox
    violation or an error inside a template expression;
    ValidationError("subject", ...) when the rendered subject contains CR/LF
    or other control characters; ValidationError("unsubscribe_url", ...) for
    a rendered URL that is not https:/mailto: or cannot go in a header;
    ValidationError("variables.unsubscribe_url", ...) when the recipient's
    variables try to set the reserved name.

    ``derive_text=False`` skips the per-recipient HTML conversion (the text
    is then empty): for validating variables at enqueue time.
    """
    unsubscribe = None
    if compiled.unsubscribe_url is not None:
        if "unsubscribe_url" in variables:
            raise ValidationError(
                "variables.unsubscribe_url",
                "reserved: it is rendered from the distribution's unsubscribe_url template",
            )
        unsubscribe = _check_unsubscribe_url(
            _render(compiled.unsubscribe_url, "unsubscribe_url", variables)
        )
        variables = {**variables, "unsubscribe_url": unsubscribe}
    subject = check_header_value("subject", _render(compiled.subject, "subject", variables))
    html = None if compiled.html is None else _render(compiled.html, "html", variables)
    if compiled.text is not None:
        text = _render(compiled.text, "html" if compiled.text_from_html else "text", variables)
    elif derive_text:
        assert html is not None  # compile_content guarantees one of the two
        text = html_to_text(html)
    else:
        text = ""
    return Rendered(subject=subject, text=text, html=html, unsubscribe_url=unsubscribe)


def _link_start(state: Any, attrs: Mapping[str, str]) -> None:
    href = (attrs.get("href") or "").strip()
    state.link_target = href if href.lower().startswith(_SHOWN_LINK_SCHEMES) else ""
    if state.link_target:
        state.tags[-1].write(_LINK_OPEN)


def _link_end(state: Any) -> None:
    if state.link_target:
        state.tags[-1].write(f"{_LINK_MID}{state.link_target}{_LINK_CLOSE}")


def _format_link(match: re.Match[str]) -> str:
    label, url = match.group(1).strip(), match.group(2)
    bare = url[len("mailto:") :] if url.lower().startswith("mailto:") else url
    if not label or label in (url, bare):
        return label or bare
    return f"{label} ({bare})"


def html_to_text(html: str) -> str:
    """A readable text/plain alternative of ``html``, links as "text (url)".

    Never raises for malformed HTML (lxml repairs it).
    """
    html = _LINK_MARKERS.sub("", html)
    profile = CSS_PROFILES["strict"]
    # inscriptis attaches its canvas to the profile's shared "body" element;
    # a private copy keeps concurrent conversions (threads) from mixing text.
    css = {**profile, "body": profile["body"].__copy__()}
    config = ParserConfig(
        css=css,
        custom_html_tag_handler_mapping=CustomHtmlTagHandlerMapping(
            start_tag_mapping={"a": _link_start}, end_tag_mapping={"a": _link_end}
        ),
    )
    text = _LINK.sub(_format_link, get_text(html, config)).strip("\n")
    return f"{text}\n" if text else ""
