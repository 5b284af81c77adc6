"""What the inbox tells about a message's HTML part (pure): every link
with its target, the unsubscribe link, images without ``alt``, remote
images, and sizes (Gmail clips an HTML part past 102 KB)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["CLIP_BYTES", "HtmlReport", "Link", "check_html"]

CLIP_BYTES = 102 * 1024
# Link texts or targets that say "unsubscribe", in the languages the
# platform's surveys go out in.
_UNSUBSCRIBE = re.compile(
    r"unsubscribe|opt[ -]?out|abmelden|abbestellen|austragen|afmelden|désinscri|desinscri|"
    r"avregistrer|avsluta prenumeration",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Link:
    href: str
    text: str

    @property
    def scheme(self) -> str:
        head, sep, _ = self.href.partition(":")
        return head.lower() if sep and head.isalpha() else ""


@dataclass(frozen=True)
class HtmlReport:
    links: tuple[Link, ...]
    unsubscribe: Link | None
    images_without_alt: tuple[str, ...]
    remote_images: tuple[str, ...]
    html_bytes: int
    message_bytes: int

    @property
    def clipped(self) -> bool:
        """Gmail shows only the first 102 KB of an HTML part."""
        return self.html_bytes > CLIP_BYTES

    @property
    def insecure_links(self) -> tuple[Link, ...]:
        return tuple(link for link in self.links if link.scheme == "http")


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[Link] = []
        self.images_without_alt: list[str] = []
        self.remote_images: list[str] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self._close_link()
            self._href = (values["href"] or "").strip()
            self._text = []
        elif tag == "img":
            src = (values.get("src") or "").strip()
            if "alt" not in values:
                self.images_without_alt.append(src or "(no src)")
            if src.lower().startswith(("http://", "https://", "//")):
                self.remote_images.append(src)
            if self._href is not None and values.get("alt"):
                self._text.append(values["alt"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._close_link()

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def finish(self) -> None:
        """Count a link left open at the end of the document."""
        self._close_link()

    def _close_link(self) -> None:
        if self._href is not None:
            self.links.append(Link(self._href, " ".join(" ".join(self._text).split())))
            self._href = None


def check_html(
    html: str, *, message_bytes: int, list_unsubscribe: tuple[str, ...] = ()
) -> HtmlReport:
    """The report on ``html``; the unsubscribe link is the first whose
    target is one of the ``list_unsubscribe`` header URIs, else the first
    whose text or target says unsubscribe."""
    scan = _Scan()
    scan.feed(html)
    scan.close()
    scan.finish()
    links = tuple(scan.links)
    wanted = {uri.strip() for uri in list_unsubscribe}
    unsubscribe = next((link for link in links if link.href in wanted), None) or next(
        (
            link
            for link in links
            if _UNSUBSCRIBE.search(link.text) or _UNSUBSCRIBE.search(link.href)
        ),
        None,
    )
    return HtmlReport(
        links=links,
        unsubscribe=unsubscribe,
        images_without_alt=tuple(scan.images_without_alt),
        remote_images=tuple(scan.remote_images),
        html_bytes=len(html.encode("utf-8")),
        message_bytes=message_bytes,
    )
