"""The operator console on ``mailer serve`` (``/ui``): overview, queue
browser, a send's timeline, replay, holds, cancel, suppressions and the
domain check, as server-rendered pages behind an operator key's session
(docs/console.md)."""

from mailer.ui.app import create_console

__all__ = ["create_console"]
