"""Sending SMTP TLS reports (RFC 8460): once a day per policy domain that
asks for them, by https POST or by mail through the service's own
connector. The counting and the report itself live in
``mailer.delivery.tls`` (``counter``, ``report``, ``results``).

- ``mail``: the report mail (RFC 8460 §5.3 headers, multipart/report,
  ``TLS-Required: No``), composed and DKIM-signed (pure but for the signer)
- ``reporter``: the worker's loop: claim a day's report, look up the
  domain's record, build, deliver, record
"""

from mailer.tlsrpt.reporter import Reporter, Submitter

__all__ = ["Reporter", "Submitter"]
