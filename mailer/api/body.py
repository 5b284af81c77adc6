"""The enqueue body, parsed and validated by pydantic-core straight from
the request's bytes.

FastAPI's own body handling decodes the JSON into Python objects with the
json module and then validates those objects: more work than
pydantic-core parsing and validating the bytes in one pass. A body that
parser refuses goes FastAPI's way, so every refusal is answered as before:
422 naming the field, 422 on the body for invalid JSON, 400 for a body that
is not UTF-8 (or another encoding the json module detects). Figures:
docs/performance.md."""

from __future__ import annotations

import email.message
import json
from typing import Any

import pydantic
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from mailer.api.errors import ApiError
from mailer.api.models import DistributionIn

REF_TEMPLATE = "#/components/schemas/{model}"

# the requestBody FastAPI would write for a ``body: DistributionIn`` parameter
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": REF_TEMPLATE.format(model="DistributionIn")}}
        },
        "required": True,
    }
}


def openapi_schemas() -> dict[str, Any]:
    """The component schemas OPENAPI_BODY refers to, by name."""
    schema = DistributionIn.model_json_schema(ref_template=REF_TEMPLATE, mode="validation")
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "DistributionIn": schema}


def _is_json(content_type: str | None) -> bool:
    # as FastAPI decides: application/json or application/*+json; a body
    # without a Content-Type is not read as JSON
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


async def distribution_in(request: Request) -> DistributionIn:
    """The request's body as a DistributionIn.

    Raises RequestValidationError (422, naming the field, or the body when
    it is missing, not JSON or not an object) and ApiError(400, "body") for
    a body that cannot be decoded.
    """
    raw = await request.body()
    as_json = _is_json(request.headers.get("content-type"))
    if raw and as_json:
        try:
            return DistributionIn.model_validate_json(raw)
        except pydantic.ValidationError:
            pass  # refused: the way below says why, in FastAPI's words
    return _validate_slowly(raw, as_json=as_json)


def _validate_slowly(raw: bytes, *, as_json: bool) -> DistributionIn:
    """What FastAPI does with the body of a ``body: DistributionIn``
    parameter, with its errors."""
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    value: Any = raw
    if as_json:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([error]) from exc
        except (ValueError, RecursionError) as exc:
            # not UTF-8 (nor UTF-16/32), nesting too deep, an integer too long
            raise ApiError(400, "body", "There was an error parsing the body") from exc
    try:
        return DistributionIn.model_validate(value)
    except pydantic.ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from exc
