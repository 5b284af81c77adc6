"""What every browser page of the project shares: security headers with a
Content-Security-Policy on every response (:mod:`mailer.web.security`),
API documentation pages whose Swagger UI and ReDoc assets come from an
installed package (:mod:`mailer.web.docs`), and the vendored scripts
under ``static/vendor`` (htmx and its SSE extension, each with its
licence). Nothing is loaded from a CDN; no Node build step.
"""

from __future__ import annotations

from mailer.web.docs import install_docs
from mailer.web.security import PAGE_CSP, SecurityHeaders, csp_header
from mailer.web.static import STATIC_DIR, static_files

__all__ = [
    "PAGE_CSP",
    "STATIC_DIR",
    "SecurityHeaders",
    "csp_header",
    "install_docs",
    "static_files",
]
