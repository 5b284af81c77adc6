"""The ``mailer`` command line."""

from __future__ import annotations

from mailer.cli.main import cli, main, register_commands

register_commands()

__all__ = ["cli", "main"]
