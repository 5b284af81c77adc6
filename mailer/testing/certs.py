"""Where earlier releases kept the throw-away certificates; they live in
:mod:`mailer.dev.certs` now."""

from mailer.dev.certs import CertFiles, TestCerts

__all__ = ["CertFiles", "TestCerts"]
