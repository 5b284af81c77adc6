"""The pages of ``/u/{token}`` in German and English (pure): server-made
HTML with no script, a visible focus ring and text contrast above WCAG AA,
saying plainly what happened."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

__all__ = ["Page", "choose_language", "mask_address", "render"]

LANGUAGES = ("de", "en")

# No script may run; inline styles are the page's only resource, and its
# form may post only to this origin.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)

_STYLE = """body{font:1.125rem/1.5 system-ui,sans-serif;color:#1a1a1a;background:#fff;
max-width:34rem;margin:3rem auto;padding:0 1rem}
h1{font-size:1.6rem}
button{font:inherit;color:#fff;background:#0b57d0;border:2px solid #0b57d0;
border-radius:.4rem;padding:.5rem 1.25rem;cursor:pointer}
button:hover{background:#0842a0}
button:focus-visible,a:focus-visible{outline:3px solid #1a1a1a;outline-offset:3px}
.note{color:#444}"""

_PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<main>
<h1 id="title">{title}</h1>
{body}
</main>
</body>
</html>
"""

_TEXT: dict[str, dict[str, str]] = {
    "de": {
        "confirm.title": "Von Umfrage-E-Mails abmelden",
        "confirm.body": "Möchten Sie an {address} keine Umfrage-E-Mails dieses Absenders mehr "
        "erhalten?",
        "confirm.button": "Jetzt abmelden",
        "confirm.note": "Erst mit dem Klick auf die Schaltfläche werden Sie abgemeldet.",
        "done.title": "Sie sind abgemeldet",
        "done.body": "{address} erhält keine Umfrage-E-Mails dieses Absenders mehr.",
        "again.body": "{address} war bereits abgemeldet. Sie erhalten keine Umfrage-E-Mails "
        "dieses Absenders mehr.",
        "done.note": "Sie können dieses Fenster jetzt schließen.",
        "invalid.title": "Link ungültig",
        "invalid.body": "Dieser Abmeldelink ist ungültig. Bitte verwenden Sie den Link aus "
        "der E-Mail, vollständig.",
        "bad.title": "Nicht abgemeldet",
        "bad.body": "Die Anfrage muss {field} enthalten. Es wurde nichts geändert.",
    },
    "en": {
        "confirm.title": "Unsubscribe from survey e-mails",
        "confirm.body": "Stop survey e-mails from this sender to {address}?",
        "confirm.button": "Unsubscribe now",
        "confirm.note": "Nothing changes until you press the button.",
        "done.title": "You are unsubscribed",
        "done.body": "{address} will get no more survey e-mails from this sender.",
        "again.body": "{address} was already unsubscribed. You will get no more survey "
        "e-mails from this sender.",
        "done.note": "You can close this window now.",
        "invalid.title": "Link not valid",
        "invalid.body": "This unsubscribe link is not valid. Please use the whole link from "
        "the e-mail.",
        "bad.title": "Not unsubscribed",
        "bad.body": "The request must carry {field}. Nothing was changed.",
    },
}


@dataclass(frozen=True)
class Page:
    status: int
    html: str


def choose_language(preferred: str | None, accept_language: str | None) -> str:
    """``preferred`` (the distribution's language) when it is one the pages
    speak, else the first of the browser's ``Accept-Language`` by quality
    that is, else English. Never raises: a malformed header counts as none."""
    if preferred in LANGUAGES:
        return preferred
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().partition("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else "en"


def mask_address(address: str) -> str:
    """``address`` with most of its local part hidden (``a…a@dest.test``):
    the page shows whoever holds the link which mailbox it is for without
    spelling it out for anyone the mail was forwarded to."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "…"
    shown = local[0] if len(local) <= 2 else f"{local[0]}…{local[-1]}"
    return f"{shown}@{domain}"


def render(kind: str, language: str, *, address: str = "", form: str = "") -> Page:
    """The page ``kind`` ("confirm", "done", "again", "invalid", "bad") in
    ``language``; ``form`` is the hidden one-click field of the confirm
    form (name=value). Raises KeyError for an unknown kind."""
    text = _TEXT[language if language in LANGUAGES else "en"]
    shown = f"<strong>{escape(mask_address(address))}</strong>"
    if kind == "confirm":
        name, _, value = form.partition("=")
        title = text["confirm.title"]
        body = (
            f"<p>{text['confirm.body'].format(address=shown)}</p>\n"
            f'<form method="post" aria-labelledby="title">\n'
            f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">\n'
            f'<button type="submit">{escape(text["confirm.button"])}</button>\n'
            f"</form>\n"
            f'<p class="note">{escape(text["confirm.note"])}</p>'
        )
        return Page(200, _page(language, title, body))
    if kind in ("done", "again"):
        body_key = "done.body" if kind == "done" else "again.body"
        body = (
            f'<p role="status">{text[body_key].format(address=shown)}</p>\n'
            f'<p class="note">{escape(text["done.note"])}</p>'
        )
        return Page(200, _page(language, text["done.title"], body))
    if kind == "invalid":
        body = f"<p>{escape(text['invalid.body'])}</p>"
        return Page(404, _page(language, text["invalid.title"], body))
    if kind == "bad":
        field = f"<code>{escape(form)}</code>"
        body = f"<p>{text['bad.body'].format(field=field)}</p>"
        return Page(400, _page(language, text["bad.title"], body))
    raise KeyError(kind)


def _page(language: str, title: str, body: str) -> str:
    return _PAGE.format(lang=language, title=escape(title), style=_STYLE, body=body)
