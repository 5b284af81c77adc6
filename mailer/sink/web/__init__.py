"""The sink's inbox in the browser (``mailer sink --http``): live message
list, message view with a sandboxed HTML preview, per-message TLS, DKIM,
SPF, DMARC and header checks, an HTML check, delete/clear and the fault
switches. See :func:`create_app`."""

from __future__ import annotations

from mailer.sink.web.app import create_app
from mailer.sink.web.live import Changes

__all__ = ["Changes", "create_app"]
