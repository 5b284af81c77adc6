"""The API documentation pages, offline: ``/docs`` (Swagger UI) and
``/redoc`` (ReDoc) with their assets from the ``fastapi-offline``
package's files, started by a script of ours rather than an inline one,
so the pages keep a Content-Security-Policy without ``'unsafe-inline'``
scripts. Swagger UI's online validator (a request to another host) is off.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
import jinja2
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from mailer.web.security import csp_header
from mailer.web.static import static_files

__all__ = ["DOCS_CSP", "install_docs"]

# Swagger UI and ReDoc set styles at run time (ReDoc through <style>
# elements, its search index in a worker made from a blob).
DOCS_CSP = csp_header(
    {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "font-src": "'self' data:",
        "connect-src": "'self'",
        "worker-src": "'self' blob:",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "'self'",
    }
)
ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("mailer.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def install_docs(api: FastAPI, *, assets: str = "/static/docs", web: str = "/static/web") -> None:
    """Serve ``/docs`` and ``/redoc`` for ``api``'s OpenAPI document, with
    the assets mounted at ``assets`` and the shared static files at
    ``web``. Create ``api`` with ``docs_url=None, redoc_url=None``.

    Raises ValueError when ``api`` has no OpenAPI URL or keeps FastAPI's
    own (CDN) docs pages.
    """
    if api.openapi_url is None:
        raise ValueError("the app has no OpenAPI document to show")
    if api.docs_url is not None or api.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    openapi_url = api.openapi_url
    api.mount(assets, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    if not any(getattr(route, "path", None) == web for route in api.routes):
        api.mount(web, static_files(), name="web-static")

    def page(template: str, request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = _TEMPLATES.get_template(template).render(
            title=api.title,
            openapi_url=f"{root}{openapi_url}",
            assets=f"{root}{assets}",
            web=f"{root}{web}",
        )
        return HTMLResponse(html, headers={"Content-Security-Policy": DOCS_CSP})

    @api.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return page("swagger.html", request)

    @api.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return page("redoc.html", request)
