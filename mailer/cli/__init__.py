"""The ``mailer`` command line."""

from __future__ import annotations

from mailer.cli.main import main

__all__ = ["main"]
