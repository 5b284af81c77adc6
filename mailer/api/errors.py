"""Every error answer of the API is an RFC 9457 problem document
(``application/problem+json``): ``type``, ``title``, ``status``, a string
``detail``, and the problems per field in the ``errors`` extension member,
each with ``field``, ``reason`` and a stable ``code``::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "sender.address: ...",
     "errors": [{"field": "sender.address", "reason": "...", "code": "invalid"}]}

The service's errors map to status codes here: ValidationError → 422
(IdempotencyConflict → 409), NotFound → 404, any other StoreError → 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mailer.api.models import ErrorItem, ErrorOut, RejectedOut
from mailer.client import IdempotencyConflict, NoValidRecipient
from mailer.errors import NotFound, StoreError, ValidationError

_SOURCES = ("body", "query", "path", "header", "cookie")


PROBLEM_JSON = "application/problem+json"

# the stable code of each status the API answers with, where nothing more
# precise is known
STATUS_CODES = {
    400: "unreadable-body",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "idempotency-conflict",
    413: "too-large",
    422: "invalid",
    503: "unavailable",
}


class ApiError(HTTPException):
    """An HTTP error about one field; ``code`` defaults to the status's."""

    def __init__(
        self,
        status_code: int,
        field: str,
        reason: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, reason, headers=dict(headers) if headers else None)
        self.field = field
        self.reason = reason
        self.code = code or STATUS_CODES.get(status_code, "error")


def problem(
    status_code: int,
    items: Sequence[ErrorItem],
    *,
    rejected: Sequence[RejectedOut] | None = None,
) -> dict[str, Any]:
    """The problem document of an error answer (pure)."""
    first = f"{items[0].field}: {items[0].reason}" if items else HTTPStatus(status_code).phrase
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    body = ErrorOut(
        type="about:blank",
        title=HTTPStatus(status_code).phrase,
        status=status_code,
        detail=first + more,
        errors=list(items),
        rejected=list(rejected) if rejected is not None else None,
    )
    return body.model_dump(mode="json", exclude_none=True)


def item(field: str, reason: str, code: str) -> ErrorItem:
    return ErrorItem(field=field, reason=reason, code=code)


def field_of(loc: Sequence[int | str]) -> str:
    """``("body", "recipients", 3, "email")`` → ``"recipients[3].email"``."""
    parts = list(loc)
    source = str(parts.pop(0)) if parts and parts[0] in _SOURCES else "request"
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or source


def _error_item(error: Mapping[str, Any]) -> ErrorItem:
    # pydantic's error types (missing, string_too_long, json_invalid, ...)
    # are stable names, and so serve as codes
    code = str(error.get("type", "invalid")).replace("_", "-")
    if error.get("type") == "json_invalid":
        ctx = error.get("ctx") or {}
        position = error["loc"][-1] if len(error["loc"]) > 1 else "?"
        reason = f"invalid JSON: {ctx.get('error', 'decode error')} at character {position}"
        return item("body", reason, code)
    return item(field_of(error.get("loc", ())), str(error.get("msg", "invalid")), code)


def error_response(
    status_code: int,
    items: Sequence[ErrorItem],
    *,
    rejected: Sequence[RejectedOut] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem(status_code, items, rejected=rejected),
        status_code=status_code,
        headers=dict(headers) if headers else None,
        media_type=PROBLEM_JSON,
    )


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, [_error_item(e) for e in exc.errors()])


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    if isinstance(exc, IdempotencyConflict):
        return error_response(409, [item(exc.field, exc.reason, "idempotency-conflict")])
    if isinstance(exc, NoValidRecipient):
        items = [item(r.field, r.reason, "invalid-recipient") for r in exc.rejected]
        return error_response(422, items, rejected=[RejectedOut.of(r) for r in exc.rejected])
    return error_response(422, [item(exc.field, exc.reason, "invalid")])


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return error_response(404, [item(f"{exc.what}_id", str(exc), "not-found")])


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, [item("store", "the store is unavailable", "store-unavailable")])


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        field, code = exc.field, exc.code
    else:
        # FastAPI's own 400 is the body it could not read (e.g. not UTF-8)
        field = "body" if exc.status_code == 400 else "request"
        code = STATUS_CODES.get(exc.status_code, "error")
    return error_response(
        exc.status_code, [item(field, str(exc.detail), code)], headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(StoreError, _store_failed)
    app.add_exception_handler(HTTPException, _http)
