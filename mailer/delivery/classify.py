"""The reply classifier of the delivery path. It lives in
:mod:`mailer.replycodes`, one layer down, because the feedback wing
classifies the replies quoted in bounces by the same rules."""

from __future__ import annotations

from mailer.replycodes import Verdict, classify, parse_reply

__all__ = ["Verdict", "classify", "parse_reply"]
