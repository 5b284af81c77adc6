"""The vocabulary of TLS reporting (RFC 8460 §4.3, §4.4): policy types,
result types, and how this service's applied policies and delivery
reasons map onto them (pure).

A new policy source adds one entry to :data:`POLICY_TYPES` (its applied
name to the report's policy type) and, where its failures have reasons of
their own, entries to :data:`RESULT_TYPES`.
"""

from __future__ import annotations

from enum import StrEnum

from mailer.reasons import Reason

__all__ = [
    "DANE_RESULTS",
    "POLICY_TYPES",
    "RESULT_TYPES",
    "PolicyType",
    "ResultType",
    "certificate_result",
    "policy_type",
    "result_type",
]

# OpenSSL's X509_V_ERR codes a certificate failure is told apart by
_X509_CERT_HAS_EXPIRED = 10
_X509_HOSTNAME_MISMATCH = 62


class PolicyType(StrEnum):
    """RFC 8460 §4.4 ``policy-type``."""

    TLSA = "tlsa"
    STS = "sts"
    NO_POLICY_FOUND = "no-policy-found"


class ResultType(StrEnum):
    """RFC 8460 §4.3 ``result-type``."""

    # negotiation failures (§4.3.1)
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    VALIDATION_FAILURE = "validation-failure"
    # policy failures: DANE (§4.3.2.1)
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # policy failures: MTA-STS (§4.3.2.2)
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


#: Result types that are failures of the DANE policy itself (§4.3.2.1):
#: counted under policy type ``tlsa`` whatever else applied to the host.
DANE_RESULTS: frozenset[ResultType] = frozenset(
    {ResultType.TLSA_INVALID, ResultType.DNSSEC_INVALID, ResultType.DANE_REQUIRED}
)

#: The applied policy's name (attempts.tls_policy) → the report's policy type.
#: A configured level with nothing published is "no-policy-found": the
#: domain published no policy this service could apply.
POLICY_TYPES: dict[str, PolicyType] = {
    "mta-sts enforce": PolicyType.STS,
    "mta-sts testing": PolicyType.STS,
    "encrypt": PolicyType.NO_POLICY_FOUND,
    "verify": PolicyType.NO_POLICY_FOUND,
    "dane": PolicyType.TLSA,
}

#: A session's failure reason → the report's result type. Reasons that are
#: not about TLS (a refused connection, DNS) are no TLS session and are not
#: counted at all.
RESULT_TYPES: dict[Reason, ResultType] = {
    Reason.TLS_UNAVAILABLE: ResultType.STARTTLS_NOT_SUPPORTED,
    Reason.CERTIFICATE: ResultType.CERTIFICATE_NOT_TRUSTED,
    Reason.TLS_HANDSHAKE: ResultType.VALIDATION_FAILURE,
    # an MX host the MTA-STS policy does not name (RFC 8461 §4.1)
    Reason.MTA_STS_MISMATCH: ResultType.VALIDATION_FAILURE,
    # a certificate that matched none of the usable TLSA records
    Reason.DANE: ResultType.TLSA_INVALID,
}


def policy_type(applied: str) -> PolicyType | None:
    """The report's policy type of an applied policy; None for a name this
    table does not know (not counted rather than mislabelled)."""
    return POLICY_TYPES.get(applied)


def result_type(reason: Reason) -> ResultType | None:
    """The result type of a failed session's reason; None when the reason
    is not a TLS failure."""
    return RESULT_TYPES.get(reason)


def certificate_result(verify_code: int | None) -> ResultType:
    """The result type of a certificate that did not verify, from OpenSSL's
    verify code: expired, for another name, or otherwise not trusted."""
    if verify_code == _X509_CERT_HAS_EXPIRED:
        return ResultType.CERTIFICATE_EXPIRED
    if verify_code == _X509_HOSTNAME_MISMATCH:
        return ResultType.CERTIFICATE_HOST_MISMATCH
    return ResultType.CERTIFICATE_NOT_TRUSTED
