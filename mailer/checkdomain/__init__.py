"""``mailer check-domain``: the seed article's checklist (SPF include or
our IPs, the sender that results, DKIM, DMARC, TLS on the receiving MX)
as one diagnosis with a status and a concrete fix per check.

One module per check (:mod:`.spf`, :mod:`.sender`, :mod:`.dkim`,
:mod:`.dmarc`, :mod:`.tls`), the report model and renderings in
:mod:`.report`, the orchestration in :mod:`.checker`.
"""

from __future__ import annotations

from mailer.checkdomain.checker import DomainChecker, check_domain
from mailer.checkdomain.report import (
    EXIT_ACTION_NEEDED,
    EXIT_COULD_NOT_RUN,
    EXIT_OK,
    Check,
    DomainReport,
    Fix,
    RecordFix,
    Status,
    error_json,
    render_text,
)

__all__ = [
    "EXIT_ACTION_NEEDED",
    "EXIT_COULD_NOT_RUN",
    "EXIT_OK",
    "Check",
    "DomainChecker",
    "DomainReport",
    "Fix",
    "RecordFix",
    "Status",
    "check_domain",
    "error_json",
    "render_text",
]
