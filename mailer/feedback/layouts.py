"""Plain-text bounce layouts that large mail systems still send instead of
(or besides) RFC 3464 notifications: one small detector per layout behind
one interface (flufl.bounce's design).

A detector looks at the human-readable text of a returned message and
either does not recognise it (None) or returns every recipient block it
found. Each has a marker that must be present, a way to find the
recipients, and, where the layout states no code at all, a phrase table
of its own (never shared, and never used at SMTP time).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailer.feedback import status
from mailer.feedback.model import Action, RecipientResult

ADDRESS = re.compile(r"[A-Za-z0-9._%+\-=!#$&'*/?^`{|}~]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")


class Detector(Protocol):
    """One bounce layout."""

    @property
    def name(self) -> str: ...

    def detect(self, text: str) -> tuple[RecipientResult, ...] | None:
        """The recipients of a bounce in this layout, or None when ``text``
        is not in it. Pure; raises nothing."""
        ...

    def could_be(self, folded: str) -> bool:
        """False when the case-folded ``folded`` text cannot be in this
        layout (a cheap test before :meth:`detect`); True says nothing."""
        ...


Extract = Callable[[str], list[tuple[str, str]]]


def fold(text: str) -> str:
    """``text`` case-folded for :meth:`Detector.could_be`. The markers'
    case-insensitive matching also takes dotted and dotless capital I for
    ``i``; folding alone keeps a combining dot after the one and leaves the
    other, so both become ``i`` here."""
    folded = text.casefold()
    if "\u0131" in folded or "\u0307" in folded:
        folded = folded.replace("i\u0307", "i").replace("\u0131", "i")
    return folded


@dataclass(frozen=True)
class Layout:
    """A detector made of a marker, a section of the text to read, and a
    way to split that section into (address, what it says) pairs."""

    name: str
    marker: re.Pattern[str]
    extract: Extract
    delay_marker: re.Pattern[str] | None = None
    phrases: status.Phrases = ()
    # case-folded literals of which the marker needs at least one: a
    # substring test over the folded text once, instead of every marker's
    # case-insensitive regex over every text (most of the layouts' time)
    hints: tuple[str, ...] = ()

    def could_be(self, folded: str) -> bool:
        return not self.hints or any(hint in folded for hint in self.hints)

    def detect(self, text: str) -> tuple[RecipientResult, ...] | None:
        if not self.marker.search(text):
            return None
        delayed = self.delay_marker is not None and bool(self.delay_marker.search(text))
        action = Action.DELAYED if delayed else Action.FAILED
        seen: set[str] = set()
        found: list[RecipientResult] = []
        for address, said in self.extract(text):
            key = address.lower()
            if key in seen:
                continue
            seen.add(key)
            found.append(
                status.recipient(address, action, diagnostic=said or None, phrases=self.phrases)
            )
        return tuple(found) or None


# ---- building blocks --------------------------------------------------------


def _between(text: str, start: str, end: str | None) -> str:
    """The text after the first match of ``start`` up to ``end`` (regexes)."""
    match = re.search(start, text, re.IGNORECASE | re.MULTILINE)
    if match is None:
        return ""
    rest = text[match.end() :]
    if end is not None:
        stop = re.search(end, rest, re.IGNORECASE | re.MULTILINE)
        if stop is not None:
            rest = rest[: stop.start()]
    return rest


def _angle_blocks(start: str, end: str | None) -> Extract:
    """``<address>:`` (or ``address:``) at a line start, then its text up to
    the next such line or a blank line: qmail, Yahoo, Postfix, Courier."""
    # at most one leading space: deeper-indented lines continue a block
    head = re.compile(r"^ ?<?(" + ADDRESS.pattern + r")>?:\s*(.*)$")

    def extract(text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        current: list[str] | None = None
        for line in _between(text, start, end).splitlines():
            match = head.match(line)
            if match:
                current = [match.group(2)]
                out.append((match.group(1), ""))
            elif not line.strip():
                current = None
            elif current is not None:
                current.append(line.strip())
            if current is not None and out:
                out[-1] = (out[-1][0], " ".join(p for p in current if p))
        return out

    return extract


def _indented_blocks(start: str, end: str | None) -> Extract:
    """An address alone on a line (maybe indented, maybe in <>), then
    detail lines up to the next address line: Exim, Sendmail, Exchange."""
    head = re.compile(r"^\s*<?(" + ADDRESS.pattern + r")>?(?:\s+on\s+.*)?:?\s*$")

    def extract(text: str) -> list[tuple[str, str]]:
        out: list[tuple[str, list[str]]] = []
        for line in _between(text, start, end).splitlines():
            match = head.match(line)
            if match:
                out.append((match.group(1), []))
            elif out and line.strip():
                out[-1][1].append(line.strip())
        return [(address, " ".join(detail)) for address, detail in out]

    return extract


def _listed_then(start: str, end: str | None, said: str | None) -> Extract:
    """Every address in a section; what was said comes from the first
    match of ``said`` (group 1) anywhere after the section's start."""

    def extract(text: str) -> list[tuple[str, str]]:
        section = _between(text, start, end)
        detail = ""
        if said is not None:
            match = re.search(said, _between(text, start, None), re.IGNORECASE | re.DOTALL)
            detail = match.group(1) if match else ""
        return [(a, detail) for a in ADDRESS.findall(section)]

    return extract


def _flags(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE | re.MULTILINE)


_COPY = r"^-+\s*(Below this line is a copy|This is a copy|Original message)"

# ---- the layouts -------------------------------------------------------------

QMAIL = Layout(
    "qmail",
    _flags(r"This is the qmail-send program at|qmail-send Programm"),
    _angle_blocks(r"(?:wasn't able to deliver|nicht zustellen)[^\n]*\n", _COPY),
    hints=("qmail-send",),
)

YAHOO = Layout(
    "yahoo",
    _flags(
        r"Sorry, we were unable to deliver your message to the following address"
        r"|^Message from yahoo\.com"
    ),
    _angle_blocks(r"unable to deliver your message to the following address[^\n]*\n", _COPY),
    hints=("unable to deliver your message to the following address", "message from yahoo.com"),
)

EXIM = Layout(
    "exim",
    _flags(
        r"This message was created automatically by mail delivery software\."
        r"(?=[\s\S]*(?:address\(es\) failed|not yet been delivered))"
    ),
    _indented_blocks(
        r"(?:address\(es\) failed:|has not yet been delivered is:|"
        r"have not yet been delivered are:)",
        r"^\s*(?:-+ This is a copy|Action:|Reporting-MTA:|No action is required|If this message)",
    ),
    delay_marker=_flags(r"has\s+not\s+yet\s+been\s+delivered\s+to\s+one\s+or\s+more"),
    hints=("this message was created automatically by mail delivery software.",),
)

GMX = Layout(
    "gmx",
    _flags(r"(?:GMX|WEB\.DE|1&1) Mail(?:er)?[- ]?(?:Daemon|System|Zustellsystem)"),
    _indented_blocks(
        r"(?:konnte nicht an (?:folgende|die folgenden) Empf(?:ä|ae)nger zugestellt werden|"
        r"could not be delivered to the following)[^\n]*\n",
        r"^\s*-+\s*(?:Originalnachricht|Original message|Kopie der Nachricht)",
    ),
    delay_marker=_flags(r"noch nicht zugestellt werden|verz(?:ö|oe)gert"),
    hints=("gmx", "web.de", "1&1"),
)

SENDMAIL = Layout(
    "sendmail",
    _flags(r"^\s*-+ The following addresses had (?:permanent fatal|transient non-fatal) errors -+"),
    _indented_blocks(
        r"The following addresses had (?:permanent fatal|transient non-fatal) errors -+",
        r"^\s*-+ Transcript of session follows|^\s*-+ Original message",
    ),
    delay_marker=_flags(r"transient non-fatal errors"),
    hints=("the following addresses had",),
)

POSTFIX = Layout(
    "postfix",
    _flags(r"^This is the mail system at host"),
    _angle_blocks(r"^\s+The mail system\s*$", r"^-- |^Content-Description|^Reporting-MTA"),
    delay_marker=_flags(r"^#+ THIS IS A WARNING ONLY"),
    hints=("this is the mail system at host",),
)

EXCHANGE_LEGACY = Layout(
    "exchange-legacy",
    _flags(r"Your message did not reach some or all of the intended recipients"),
    _indented_blocks(r"The following recipient\(s\) (?:cannot|could not) be reached:", None),
    phrases=(
        (_flags(r"e-mail account does not exist"), "5.1.1"),
        (_flags(r"mailbox is full|over (?:its|the) storage limit"), "5.2.2"),
    ),
    hints=("your message did not reach some or all of the intended recipients",),
)

OFFICE365 = Layout(
    "office365",
    _flags(r"Delivery has failed to these recipients or groups:"),
    _indented_blocks(
        r"Delivery has failed to these recipients or groups:",
        r"^\s*Diagnostic information for administrators|^\s*Original message headers",
    ),
    phrases=(
        (_flags(r"couldn't be found|wasn't found|does not exist|doesn't exist"), "5.1.1"),
        (_flags(r"mailbox is full|mailbox was full"), "5.2.2"),
        (_flags(r"blocked|spam|rejected"), "5.7.1"),
    ),
    hints=("delivery has failed to these recipients or groups:",),
)

OUTLOOK_COM = Layout(
    "outlook.com",
    _flags(r"Delivery to the following recipients? (?:failed|has been delayed)"),
    _indented_blocks(
        r"Delivery to the following recipients? (?:failed|has been delayed)\.?",
        r"^\s*(?:Reporting-MTA|Final-Recipient|-+ Original message|Original message headers)",
    ),
    delay_marker=_flags(r"has been delayed"),
    hints=("delivery to the following recipient",),
)

GMAIL = Layout(
    "gmail",
    _flags(
        r"^\*\* (?:Address not found|Message not delivered|Message blocked"
        r"|Delivery incomplete) \*\*"
        r"|Delivery to the following recipient (?:failed permanently|has been delayed)"
    ),
    lambda text: _gmail(text),
    delay_marker=_flags(r"\*\* Delivery incomplete \*\*|has been delayed|temporary problem"),
    phrases=((_flags(r"address couldn't be found|does not exist"), "5.1.1"),),
    hints=("** ", "delivery to the following recipient "),
)

SES = Layout(
    "amazon-ses",
    _flags(r"An error occurred while trying to deliver the mail to the following recipients:"),
    _listed_then(
        r"to the following recipients:",
        r"\n\s*\n",
        r"(?:Diagnostic|reason|said)[^:]*:\s*(?:smtp;\s*)?([^\n]+)",
    ),
    phrases=((_flags(r"suppression list"), "5.1.1"),),
    hints=("an error occurred while trying to deliver the mail to the following recipients:",),
)

T_ONLINE = Layout(
    "t-online",
    _flags(r"^\|-+ Failed addresses follow: -+\|"),
    _angle_blocks(r"Failed addresses follow: -+\|\s*\n", r"^\|-+ Message text follows"),
    phrases=(
        (_flags(r"unknown user|user unknown|Empf(?:ä|ae)nger unbekannt"), "5.1.1"),
        (_flags(r"mailbox full|Postfach voll|quota exceeded"), "5.2.2"),
        (_flags(r"relaying denied|Relaying nicht erlaubt"), "5.7.1"),
    ),
    hints=("failed addresses follow:",),
)

DOMINO = Layout(
    "domino",
    _flags(r"^\s*was not delivered to:\s*$"),
    _listed_then(r"was not delivered to:", r"^\s*because:", r"because:\s*\n\s*([^\n]+)"),
    phrases=(
        (_flags(r"not listed in (?:the )?(?:Domino|public name & address) Directory"), "5.1.1"),
        (_flags(r"mail file is full|exceeded (?:its|the) quota"), "5.2.2"),
    ),
    hints=("was not delivered to:",),
)

COURIER = Layout(
    "courier",
    _flags(r"running the Courier mail server"),
    _angle_blocks(r"(?:could not|cannot) be delivered[^\n]*\n", _COPY),
    hints=("running the courier mail server",),
)

GROUPWISE = Layout(
    "groupwise",
    _flags(r"The message that you sent was undeliverable to the following:"),
    lambda text: [
        (m.group(1), m.group(2))
        for m in re.finditer(
            r"^\s*(" + ADDRESS.pattern + r")\s*\(([^)]*)\)",
            _between(text, r"undeliverable to the following:", r"^\s*Possible causes"),
            re.MULTILINE,
        )
    ],
    phrases=(
        (_flags(r"user not found|no such user"), "5.1.1"),
        (_flags(r"mailbox full|quota exceeded"), "5.2.2"),
    ),
    hints=("the message that you sent was undeliverable to the following:",),
)


def _gmail(text: str) -> list[tuple[str, str]]:
    # new style: "…wasn't delivered to a@b because…", then "The response
    # was:" and the remote reply; old style: the address indented under
    # "Delivery to the following recipient failed permanently:"
    found = re.search(
        r"(?:wasn't delivered to|delivering your message to|has not been delivered to)\s+("
        + ADDRESS.pattern
        + ")",
        text,
    )
    if found is None:
        section = _between(text, r"Delivery to the following recipient[^\n]*\n", r"^\s*\S")
        found = ADDRESS.search(section) or ADDRESS.search(
            _between(text, r"Delivery to the following recipient[^\n]*\n", None)
        )
    if found is None:
        return []
    address = found.group(1) if found.re.groups else found.group(0)
    said = _between(
        text,
        r"The response (?:was|from the remote server was):|Technical details of [^\n]*:",
        r"^\s*-+ Original message",
    ).strip()
    # the reply is the first paragraph after the heading
    said = said.split("\n\n")[0] if said else _between(text, re.escape(address), r"\n\s*\n")
    return [(address, said.strip())]


DETECTORS: Sequence[Detector] = (
    QMAIL,
    YAHOO,
    GMX,
    EXIM,
    SENDMAIL,
    POSTFIX,
    EXCHANGE_LEGACY,
    OFFICE365,
    OUTLOOK_COM,
    GMAIL,
    SES,
    T_ONLINE,
    DOMINO,
    COURIER,
    GROUPWISE,
)
"""Tried in this order; the first that recognises a text wins. Layouts
whose markers could overlap come most specific first (GMX before Exim)."""
