"""Where earlier releases kept the recording sink; it lives in
:mod:`mailer.sink.runner` now."""

from mailer.sink.runner import Sink, pick_port

__all__ = ["Sink", "pick_port"]
