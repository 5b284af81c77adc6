"""Every error answer of the API has one shape, naming the field:
``{"detail": [{"field": "sender.address", "reason": "..."}]}``.

The service's errors map to status codes here: ValidationError → 422
(IdempotencyConflict → 409), NotFound → 404, any other StoreError → 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mailer.api.models import ErrorItem, ErrorOut, RejectedOut
from mailer.client import IdempotencyConflict, NoValidRecipient
from mailer.errors import NotFound, StoreError, ValidationError

_SOURCES = ("body", "query", "path", "header", "cookie")


class ApiError(HTTPException):
    """An HTTP error about one field."""

    def __init__(
        self,
        status_code: int,
        field: str,
        reason: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code, reason, headers=dict(headers) if headers else None)
        self.field = field
        self.reason = reason


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
    if error.get("type") == "json_invalid":
        ctx = error.get("ctx") or {}
        position = error["loc"][-1] if len(error["loc"]) > 1 else "?"
        reason = f"invalid JSON: {ctx.get('error', 'decode error')} at character {position}"
        return ErrorItem(field="body", reason=reason)
    return ErrorItem(field=field_of(error.get("loc", ())), reason=str(error.get("msg", "invalid")))


def error_response(
    status_code: int,
    items: Sequence[ErrorItem],
    *,
    rejected: Sequence[RejectedOut] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorOut(detail=list(items), rejected=list(rejected) if rejected is not None else None)
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=status_code,
        headers=dict(headers) if headers else None,
    )


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, [_error_item(e) for e in exc.errors()])


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    item = ErrorItem(field=exc.field, reason=exc.reason)
    if isinstance(exc, IdempotencyConflict):
        return error_response(409, [item])
    if isinstance(exc, NoValidRecipient):
        items = [ErrorItem(field=r.field, reason=r.reason) for r in exc.rejected]
        return error_response(422, items, rejected=[RejectedOut.of(r) for r in exc.rejected])
    return error_response(422, [item])


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return error_response(404, [ErrorItem(field=f"{exc.what}_id", reason=str(exc))])


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, [ErrorItem(field="store", reason="the store is unavailable")])


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, ApiError):
        field = exc.field
    else:
        # FastAPI's own 400 is the body it could not read (e.g. not UTF-8)
        field = "body" if exc.status_code == 400 else "request"
    return error_response(
        exc.status_code, [ErrorItem(field=field, reason=str(exc.detail))], headers=exc.headers
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(ValidationError, _invalid)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(StoreError, _store_failed)
    app.add_exception_handler(HTTPException, _http)
