"""The result types of RFC 8460 §4.3: the names a TLS report counts a
failed (or merely unauthenticated) session under. Delivery attaches one
to what it records so that reporting can count without re-deciding."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ResultType"]


class ResultType(StrEnum):
    # negotiation (§4.3.1)
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # policy (§4.3.2)
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"
