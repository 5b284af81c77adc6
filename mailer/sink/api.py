"""The sink's HTTP JSON API, for scripts and other services' tests:

GET    /messages        every kept message with its DKIM results and checks
GET    /messages/{id}   one message: the same, plus raw text, headers, text and html
DELETE /messages        forget every message (memory and Maildir)
GET    /refusals        the replies the sink refused on purpose
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Response

from mailer.sink.report import detail_json, message_json, refusal_json
from mailer.sink.server import DevSink

__all__ = ["create_api"]


def create_api(sink: DevSink) -> FastAPI:
    """An ASGI app over a running ``sink``; serve it with uvicorn."""
    api = FastAPI(title="mailer sink", description=__doc__)

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

    @api.delete("/messages", status_code=204)
    def delete_messages() -> Response:
        sink.clear()
        return Response(status_code=204)

    @api.get("/refusals")
    def list_refusals() -> dict[str, Any]:
        refusals = [refusal_json(refusal) for refusal in sink.refusals]
        return {"count": len(refusals), "refusals": refusals}

    return api
