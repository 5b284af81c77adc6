"""The visible unsubscribe link every message carries in both its parts
(Gmail's and Yahoo's bulk-sender rules): the template's own link where it
has one, else a short footer the service adds, in the distribution's
language (pure)."""

from __future__ import annotations

import re
from dataclasses import replace
from html import escape

from mailer.message.templates import Rendered

__all__ = ["LANGUAGES", "with_unsubscribe_link"]

#: Languages of what the service adds to a message and of its unsubscribe page.
LANGUAGES = ("de", "en")

_TEXT = {
    "de": "Sie möchten keine Umfrage-E-Mails mehr erhalten? Abmelden: {url}",
    "en": "Don't want these survey e-mails any more? Unsubscribe: {url}",
}
_LINK = {"de": "Abmelden", "en": "Unsubscribe"}
_HTML = {
    "de": "Sie möchten keine Umfrage-E-Mails mehr erhalten?",
    "en": "Don't want these survey e-mails any more?",
}
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def _shows(part: str, url: str, *, html: bool) -> bool:
    """Whether ``part`` has ``url`` in it, as Jinja's autoescape or an
    author writes it in HTML."""
    if url in part:
        return True
    return html and escape(url, quote=True) in part


def with_unsubscribe_link(rendered: Rendered, url: str, language: str | None) -> Rendered:
    """``rendered`` with a footer linking ``url`` added to each part that
    does not show it already (German for ``language`` "de", else English);
    in HTML just before ``</body>`` where there is one."""
    lang = language if language in LANGUAGES else "en"
    text = rendered.text
    if not _shows(text, url, html=False):
        separator = "" if not text or text.endswith("\n") else "\n"
        text = f"{text}{separator}\n{_TEXT[lang].format(url=url)}\n"
    html = rendered.html
    if html is not None and not _shows(html, url, html=True):
        footer = (
            f'<p style="font-size:small;color:#444">{escape(_HTML[lang])} '
            f'<a href="{escape(url, quote=True)}">{_LINK[lang]}</a></p>'
        )
        ends = list(_BODY_END.finditer(html))
        if ends:
            at = ends[-1].start()
            html = f"{html[:at]}{footer}\n{html[at:]}"
        else:
            html = f"{html}\n{footer}\n"
    if text is rendered.text and html is rendered.html:
        return rendered
    return replace(rendered, text=text, html=html)
