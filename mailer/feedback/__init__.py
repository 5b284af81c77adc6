"""After the 250: returned messages (bounces, complaints, auto-replies)
received, parsed and acted on.

Pure parts: :mod:`.model`, :mod:`.mime`, :mod:`.status`, :mod:`.dsn`,
:mod:`.arf`, :mod:`.autoreply`, :mod:`.layouts`, :mod:`.parse`,
:mod:`.breaker`. I/O at the edges: the inbound SMTP listener
(:mod:`.listener`) and the processor that matches and applies
(:mod:`.processor`).
"""

from mailer.feedback.model import Action, Kind, RecipientResult, Report
from mailer.feedback.parse import parse_message

__all__ = ["Action", "Kind", "RecipientResult", "Report", "parse_message"]
