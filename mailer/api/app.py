"""The FastAPI application of the survey platform API: ``/v1/...`` needs a
bearer API key (401 otherwise); ``/u/{token}`` (one-click unsubscribe),
``/healthz``, ``/metrics`` (Prometheus), ``/openapi.json``, ``/docs`` and
``/redoc`` are open; the docs' assets are served by the app itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.models import OpenAPI

from mailer import __version__
from mailer.api import domains
from mailer.api.auth import bearer_auth
from mailer.api.body import openapi_schemas
from mailer.api.errors import PROBLEM_JSON, install_error_handlers
from mailer.api.metrics import ApiMetrics
from mailer.api.middleware import BodyLimit, CountRequests
from mailer.api.routes import MAX_CURSOR, UNAUTHORIZED, v1_router
from mailer.api.unsubscribe import unsubscribe_router
from mailer.api.webhooks import webhooks_router
from mailer.app import App
from mailer.client import Client
from mailer.message.unsubscribe import links_from_config
from mailer.metrics import CONTENT_TYPE
from mailer.web import SecurityHeaders, csp_header, install_docs

API_CSP = csp_header(
    {
        "default-src": "'none'",
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
    }
)

DESCRIPTION = """Enqueue survey distributions, follow every send, read an
ordered event feed. Errors are RFC 9457 problem documents
(`application/problem+json`) whose `errors` member names each field:
`{"type", "title", "status", "detail", "errors": [{"field", "reason", "code"}]}`."""


def _problem_responses(schema: dict[str, Any]) -> None:
    """Every error answer documented as what it is: a problem document in
    ``application/problem+json`` (mailer.api.errors)."""
    problem = {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                # pages for people (/u/) keep their HTML
                if status.isdigit() and int(status) >= 400 and "text/html" not in content:
                    response["content"] = {PROBLEM_JSON: problem}


def _document_request_bodies(api: FastAPI) -> None:
    """Adds the schemas of the bodies that routes read themselves
    (:mod:`mailer.api.body`) to the OpenAPI components."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, body in openapi_schemas().items():
                components.setdefault(name, body)
            _problem_responses(schema)
            # through FastAPI's OpenAPI model as its own part went, which
            # leaves out nulls such as "default": null
            api.openapi_schema = jsonable_encoder(
                OpenAPI.model_validate(schema), by_alias=True, exclude_none=True
            )
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def create_api(
    app: App,
    *,
    api_keys: Sequence[str] | None = None,
    secret: str | None = None,
    public_url: str | None = None,
    max_body: int | None = None,
) -> FastAPI:
    """The API over an open ``app``. Every argument left out comes from
    the app's ``[api]`` config: ``api_keys`` (bearer tokens for /v1),
    ``secret`` and ``public_url`` (the service's unsubscribe links; both or
    no links), ``max_body`` (bytes; larger requests get 413)."""
    cfg = app.config.api
    keys = cfg.keys if api_keys is None else tuple(api_keys)
    links = links_from_config(
        secret or cfg.secret, public_url or cfg.public_url, enabled=cfg.unsubscribe
    )
    client = Client(app, unsubscribe=links)
    metrics = ApiMetrics()

    api = FastAPI(
        title="mailer",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    # Swagger UI and ReDoc from an installed package: /docs works offline
    install_docs(api)
    api.state.client = client
    api.state.metrics = metrics
    install_error_handlers(api)
    _document_request_bodies(api)
    auth = bearer_auth(app.store, keys)
    api.include_router(v1_router(client, metrics, auth))
    api.include_router(domains.router, dependencies=[Depends(auth)], responses=UNAUTHORIZED)
    api.include_router(unsubscribe_router(client, metrics))
    api.include_router(webhooks_router(app, auth))

    @api.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """200 while the store answers."""
        await app.store.events(after=MAX_CURSOR, limit=1)
        return {"status": "ok"}

    @api.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics_text() -> Response:
        """Prometheus exposition: the engine's outcomes and the queue depth
        (mailer.metrics), then API requests, recipients, unsubscriptions."""
        body = await app.metrics.scrape(app.store) + metrics.render()
        return Response(body, media_type=CONTENT_TYPE)

    # added last = outermost: the limit applies before anything reads the body
    api.add_middleware(CountRequests, metrics=metrics)
    api.add_middleware(BodyLimit, limit=max_body or cfg.max_body)
    # the unsubscribe pages style themselves inline
    api.add_middleware(SecurityHeaders, policy=API_CSP)
    return api
