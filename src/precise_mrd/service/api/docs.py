"""The interactive API docs, served without the internet.

* ``GET /docs``: Swagger UI; ``GET /docs/oauth2-redirect``: its OAuth2 redirect page.
* ``GET /redoc``: ReDoc.
* ``GET /static/docs/{file}``: their JavaScript, CSS and favicon.

FastAPI's own pages load Swagger UI and ReDoc from public CDNs (and ReDoc's fonts from Google
Fonts), so on a lab's isolated network they come up blank. These pages load the same bundles from
the pinned ``fastapi-offline`` package instead (Swagger UI: Apache-2.0, ReDoc: MIT, as its README
says), with no Google Fonts. The app is built with ``docs_url=None, redoc_url=None`` and calls
:func:`install_docs`; ``/openapi.json`` stays FastAPI's own. None of these routes is in the schema.

>>> from fastapi import FastAPI
>>> app = FastAPI(docs_url=None, redoc_url=None)
>>> install_docs(app)
>>> paths = [getattr(route, "path", "") for route in app.routes]
>>> sorted(path for path in paths if "doc" in path)
['/docs', '/docs/oauth2-redirect', '/redoc', '/static/docs']
>>> [path for path in app.openapi()["paths"]]
[]
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
REDOC_URL = "/redoc"
STATIC_URL = "/static/docs"
ASSETS_PATH = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def install_docs(app: FastAPI) -> None:
    """Add the docs pages and their static assets to ``app`` (built without FastAPI's own)."""
    if app.openapi_url is None:
        raise ValueError("the docs pages need the OpenAPI schema; got openapi_url=None")
    openapi_url = app.openapi_url
    app.mount(STATIC_URL, StaticFiles(directory=ASSETS_PATH), name="docs-static")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return with_script_hashes(
            get_swagger_ui_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
                swagger_js_url=f"{root}{STATIC_URL}/{SWAGGER_JS}",
                swagger_css_url=f"{root}{STATIC_URL}/{SWAGGER_CSS}",
                swagger_favicon_url=f"{root}{STATIC_URL}/{FAVICON}",
                # NB: Swagger UI's validator badge (in layouts that show it) loads an image from
                # validator.swagger.io with the schema's URL; null turns it off.
                swagger_ui_parameters={**(app.swagger_ui_parameters or {}), "validatorUrl": None},
            )
        )

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return with_script_hashes(get_swagger_ui_oauth2_redirect_html())

    async def redoc(request: Request) -> HTMLResponse:
        root = _root_path(request)
        return with_script_hashes(
            get_redoc_html(
                openapi_url=root + openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{STATIC_URL}/{REDOC_JS}",
                redoc_favicon_url=f"{root}{STATIC_URL}/{FAVICON}",
                with_google_fonts=False,
            )
        )

    app.add_route(DOCS_URL, swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT_URL, swagger_ui_redirect, include_in_schema=False)
    app.add_route(REDOC_URL, redoc, include_in_schema=False)


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def with_script_hashes(response: HTMLResponse) -> HTMLResponse:
    """``response`` with a strict Content-Security-Policy that allows its own inline scripts by
    hash (and scripts, styles and images from this server), nothing else."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(bytes(response.body))
    )
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; worker-src blob:; font-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response


def _root_path(request: Request) -> str:
    """The prefix a reverse proxy serves the app under ('' when none), as FastAPI's pages use."""
    return str(request.scope.get("root_path", "")).rstrip("/")
