"""The web console: a few hand-written static files served at `/` and `/console/...`, plus each
loaded model's training report (two plots and metrics.json).

Nothing here reads a path from the request: static assets come from a fixed list, and report
files are three fixed names looked up in the folder the engine loaded the model from.

Wire it in with `app.include_router(router)`; it needs no mount."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from rnnserve.engine import Engine
from rnnserve.errors import NotFound

STATIC = Path(__file__).resolve().parent / "static"

# name -> media type; only these files are served
ASSETS: dict[str, str] = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "weeks.json": "application/json",
    "favicon.svg": "image/svg+xml",
}
REPORT_FILES: dict[str, str] = {
    "learning_curve.png": "image/png",
    "forecast.png": "image/png",
    "metrics.json": "application/json",
}
# The page is fetched fresh each time (small), so a new server version is never half-cached.
NO_CACHE = {"Cache-Control": "no-cache"}
# The console runs only its own script and talks only to this server; report images arrive as
# blob: URLs (fetched with the API key).
PAGE_HEADERS = {
    **NO_CACHE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(tags=["console"], include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers=PAGE_HEADERS)


@router.get("/console/{asset}")
async def asset(asset: str) -> FileResponse:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFound(f"no console file {asset!r}; the console is at /")
    return FileResponse(STATIC / asset, media_type=media_type, headers=NO_CACHE)


def report_path(request: Request, name: str, filename: str) -> Path:
    """One of a loaded model's report files, from the folder its ONNX file was loaded from
    (or, for numbered versions, the model's folder above it)."""
    if filename not in REPORT_FILES:
        raise NotFound(f"no report file {filename!r}; models have {sorted(REPORT_FILES)}")
    engine: Engine = request.app.state.engine  # the app's engine (http/app.py sets it)
    folder = engine.models.get(name).source.onnx_path.parent  # 404 if unknown
    folders = [folder]
    if folder.name.isdigit():  # models/<name>/<N>/model.onnx: reports sit in models/<name>/
        folders.append(folder.parent)
    for candidate in (f / filename for f in folders):
        if candidate.is_file():
            return candidate
    raise NotFound(f"model {name!r} has no {filename} "
                   "(`rnnserve train` writes it unless --no-plots)")


@router.get("/console/models/{name}/{filename}")
async def model_report(request: Request, name: str, filename: str) -> FileResponse:
    return FileResponse(report_path(request, name, filename),
                        media_type=REPORT_FILES[filename], headers=NO_CACHE)
