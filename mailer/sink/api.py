"""The sink's HTTP JSON API, for scripts and other services' tests:

GET    /messages        every kept message with its TLS, DKIM, SPF, DMARC results and checks
GET    /messages/{id}   one message: the same, plus raw text, headers, text and html
DELETE /messages/{id}   forget one message (memory and Maildir)
DELETE /messages        forget every message (memory and Maildir)
GET    /refusals        the replies the sink refused on purpose
GET    /faults          the fault values now, by name (mailer.sink.faults)
PATCH  /faults          change some: {"tempfail-rate": 0.3, "seed": 7}; 422 names a bad one
DELETE /faults          every fault and scripted reply off

Served with the inbox pages by :func:`mailer.sink.web.create_app`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Response

from mailer.errors import ValidationError
from mailer.sink.faults import fault_changes
from mailer.sink.report import detail_json, message_json, refusal_json
from mailer.sink.server import DevSink

__all__ = ["api_router"]


def api_router(sink: DevSink, changed: Callable[[str], None]) -> APIRouter:
    """The JSON routes over a running ``sink``; ``changed`` is told of
    every delete."""
    api = APIRouter(tags=["messages"])

    @api.get("/messages")
    def list_messages() -> dict[str, Any]:
        messages = [message_json(message) for message in sink.messages]
        return {"count": len(messages), "messages": messages}

    @api.get("/messages/{message_id}")
    def get_message(message_id: str) -> dict[str, Any]:
        message = sink.get(message_id)
        if message is None:
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        return detail_json(message)

    @api.delete("/messages/{message_id}", status_code=204)
    def delete_message(message_id: str) -> Response:
        if not sink.delete(message_id):
            raise HTTPException(status_code=404, detail=f"no message {message_id}")
        changed("deleted")
        return Response(status_code=204)

    @api.delete("/messages", status_code=204)
    def delete_messages() -> Response:
        sink.clear()
        changed("cleared")
        return Response(status_code=204)

    @api.get("/refusals")
    def list_refusals() -> dict[str, Any]:
        refusals = [refusal_json(refusal) for refusal in sink.refusals]
        return {"count": len(refusals), "refusals": refusals}

    @api.get("/faults", tags=["faults"])
    def get_faults() -> dict[str, Any]:
        return sink.faults.to_json()

    @api.patch("/faults", tags=["faults"])
    def patch_faults(body: Any = Body(...)) -> dict[str, Any]:  # noqa: B008
        try:
            faults = sink.set_faults(**fault_changes(body))
        except ValidationError as exc:
            raise HTTPException(
                status_code=422, detail={"field": exc.field, "reason": exc.reason}
            ) from exc
        return faults.to_json()

    @api.delete("/faults", status_code=204, tags=["faults"])
    def clear_faults() -> Response:
        sink.clear_faults()
        return Response(status_code=204)

    return api
