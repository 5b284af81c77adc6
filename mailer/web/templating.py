"""The Jinja set-up every server-rendered page shares: templates from one
folder, autoescaped, an undefined name an error rather than an empty
string, and the ``when`` filter, so that every page writes a moment the
same way (UTC, named)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from starlette.templating import Jinja2Templates

__all__ = ["page_templates", "when"]


def when(epoch: float | None) -> str:
    """A moment as pages show it: ``2026-12-06 07:30:00 UTC``; ``-`` for none."""
    if epoch is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def page_templates(folder: Path, **filters: Callable[..., Any]) -> Jinja2Templates:
    """The templates under ``folder``, with ``when`` and ``filters``."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = when
    env.filters.update(filters)
    return Jinja2Templates(env=env)
