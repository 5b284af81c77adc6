"""Recipients for tests: the test world's helpers, which every test module
uses (see mailer.testing.world)."""

from __future__ import annotations

from mailer.testing.world import numbered, people

__all__ = ["numbered", "people"]
