"""The shared static files: ``/static/web/vendor/htmx/htmx.min.js`` and
friends, mounted by each app that renders pages."""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "static_files"]

STATIC_DIR = Path(__file__).parent / "static"


def static_files() -> StaticFiles:
    """An ASGI app serving :data:`STATIC_DIR` (mount it at ``/static/web``)."""
    return StaticFiles(directory=STATIC_DIR)
