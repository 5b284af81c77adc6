"""``GET /v1/domains/{domain}/check``: the report of ``mailer check-domain``
over HTTP, in the same JSON shape as ``--json`` (docs/check-domain.md).

The answer is 200 whatever the verdict (it is in the body); 422 for a bad
domain, region or selector; 503 when DNS did not answer, so nothing could
be judged.

Include it with the /v1 authentication::

    api.state.domain_checker = DomainChecker(app.config)
    api.include_router(domains.router, dependencies=[Depends(auth)])

Without ``api.state.domain_checker`` one is built on first use from the
config of ``api.state.client``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from mailer.api.errors import error_response
from mailer.api.models import ErrorItem, ErrorOut
from mailer.checkdomain import DomainChecker
from mailer.errors import DNSTemporaryError

__all__ = ["DomainCheckOut", "domain_checker", "router"]


class RecordOut(BaseModel):
    name: str
    type: str
    value: str


class FixOut(BaseModel):
    check: str
    status: Literal["ok", "warning", "action-needed"]
    text: str
    record: RecordOut | None


class CheckOut(BaseModel):
    name: Literal["spf", "sender", "dkim", "dmarc", "tls"]
    status: Literal["ok", "warning", "action-needed"]
    summary: str
    details: dict[str, Any]


class DomainCheckOut(BaseModel):
    """The report: the verdict, one entry per check, the fixes in order."""

    domain: str
    region: str
    verdict: Literal["ok", "warning", "action-needed"]
    summary: str
    checks: list[CheckOut]
    fixes: list[FixOut]


def domain_checker(request: Request) -> DomainChecker:
    """The API's :class:`DomainChecker` (its public suffix list is parsed
    once, not per request)."""
    state = request.app.state
    checker = getattr(state, "domain_checker", None)
    if checker is None:
        checker = DomainChecker(state.client.app.config)
        state.domain_checker = checker
    assert isinstance(checker, DomainChecker)
    return checker


router = APIRouter(prefix="/v1", tags=["domains"])

Domain = Annotated[str, Path(min_length=1, max_length=253, description="the customer's domain")]


@router.get(
    "/domains/{domain}/check",
    response_model=DomainCheckOut,
    responses={
        422: {"model": ErrorOut, "description": "bad domain, region or selector"},
        503: {"model": ErrorOut, "description": "DNS did not answer: nothing was judged"},
    },
)
async def check_domain(
    domain: Domain,
    checker: Annotated[DomainChecker, Depends(domain_checker)],
    region: Annotated[
        Literal["azure", "de"] | None,
        Query(description="the account's region (default: the service's)"),
    ] = None,
    selector: Annotated[
        list[str] | None,
        Query(max_length=20, description="DKIM selectors to check (default: every key held)"),
    ] = None,
) -> Any:
    """Is the domain set up for survey mail: SPF (our include or IPs,
    lookups), the resulting sender, DKIM, DMARC and TLS on its MX hosts,
    each with a status and a concrete fix."""
    try:
        report = await checker.check(domain, region=region, selectors=selector or ())
    except DNSTemporaryError as exc:
        reason = f"DNS did not answer ({exc}); nothing was judged, try again later"
        return error_response(503, [ErrorItem(field="dns", reason=reason, code="dns-unavailable")])
    return JSONResponse(report.to_json())
