"""The API docs pages, /docs (Swagger UI) and /redoc (ReDoc), that work without internet.

FastAPI's own pages load Swagger UI's and ReDoc's JavaScript and CSS from a public CDN, so on a
machine without internet access /docs was a blank page. The same files ship in the PyPI package
`fastapi-offline` (a server dependency in pyproject.toml; nothing is copied into this
repository, and the image gets it with the other dependencies): this router serves them from
that package's folder at /docs/assets/<file>, a fixed list, and builds both pages with FastAPI's
page builders pointing there. No page asks any other host for anything: no CDN, no Google
Fonts, no online spec validator, and each page's Content-Security-Policy lets the browser load
and call only this server (ReDoc's sidebar would otherwise fetch Redocly's logo from
cdn.redoc.ly).

Like /openapi.json, these paths need no API key (http/auth.py, OPEN_PATHS): they hold no
data. The app is made with `docs_url=None, redoc_url=None` and calls `install_api_docs`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from rnnserve.errors import NotFound
from rnnserve.http.auth import is_open

ASSET_PACKAGE = "fastapi_offline"
"""The installed package whose `static/` folder holds the Swagger UI and ReDoc builds."""
ASSETS_URL = "/docs/assets"

# name -> media type; only these files are served
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# Revalidated on each load (an ETag answers 304), so an upgraded package is never half-cached.
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
_CSP_COMMON = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SWAGGER_HEADERS = {"Content-Security-Policy": "script-src 'self' 'unsafe-inline'; " + _CSP_COMMON}
"""FastAPI's Swagger page starts Swagger UI from an inline script; the UI sets inline styles."""
REDOC_HEADERS = {"Content-Security-Policy": "worker-src 'self' blob:; " + _CSP_COMMON}
"""ReDoc sets inline styles and runs its search index in a blob: worker."""
SWAGGER_PARAMETERS = {"validatorUrl": None}
"""Swagger UI's default validator is validator.swagger.io, whose badge would send the spec's
URL to a third party (and fail offline)."""


def asset_folder() -> Path:
    """The folder the assets are served from; a missing package or file fails when the app is
    built, not as a blank page later."""
    try:
        folder = Path(str(resources.files(ASSET_PACKAGE).joinpath("static")))
    except ModuleNotFoundError as exc:
        raise RuntimeError("the API docs need the package fastapi-offline (a dependency of "
                           "rnnserve): pip install fastapi-offline") from exc
    missing = sorted(name for name in ASSETS if not (folder / name).is_file())
    if missing:
        raise RuntimeError(f"the installed fastapi-offline lacks {missing} in {folder}; "
                           "reinstall it: pip install --force-reinstall fastapi-offline")
    return folder


def _page_urls(request: Request) -> tuple[str, str]:
    """(the OpenAPI document's URL, the assets' URL), under the app's root path (a proxy's
    prefix) as FastAPI's own pages do."""
    root = request.scope.get("root_path", "").rstrip("/")
    openapi_url = request.app.openapi_url or "/openapi.json"
    return root + openapi_url, root + ASSETS_URL


def make_router(folder: Path) -> APIRouter:
    """The /docs and /redoc pages and their assets, served from `folder`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = _page_urls(request)
        page = get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS)
        page.headers.update(SWAGGER_HEADERS)
        return page

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = _page_urls(request)
        page = get_redoc_html(
            openapi_url=openapi_url, title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png", with_google_fonts=False)
        page.headers.update(REDOC_HEADERS)
        return page

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound(f"no API docs file {name!r}; the API docs are at /docs and /redoc")
        return FileResponse(folder / name, media_type=media_type, headers=NO_CACHE)

    return router


BEARER = "apiKey"
"""The OpenAPI security scheme of the API keys, when they are on."""


def declare_api_keys(app: FastAPI) -> None:
    """With API keys on, /openapi.json says so: a bearer scheme, required by every operation
    but the open ones (health, metrics, docs, the console's page). Swagger UI then shows its
    Authorize button and "Try it out" sends the key; without keys the document is unchanged."""
    plain = app.openapi

    def with_keys() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = {
            "type": "http", "scheme": "bearer",
            "description": "An API key: Authorization: Bearer <key> (--api-keys)"}
        for path, operations in schema.get("paths", {}).items():
            if is_open(path):
                continue
            for operation in operations.values():
                operation["security"] = [{BEARER: []}]
        app.openapi_schema = schema
        return schema

    app.openapi = with_keys  # type: ignore[method-assign]


def install_api_docs(app: FastAPI, *, api_keys: bool = False) -> None:
    """Serve the docs pages offline on an app made with `docs_url=None, redoc_url=None`;
    `api_keys`: the server requires keys, and the document declares them."""
    app.include_router(make_router(asset_folder()))
    if api_keys:
        declare_api_keys(app)
