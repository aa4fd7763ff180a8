"""A real rnnserve HTTP server with the console router included, for the console's browser test
and for trying the console by hand before the router is wired into create_app:

    python -m tests.console.serve_console --models models --port 8000 [--require-key KEY]

Same engine lifecycle as `rnnserve serve` (HTTP only). `--require-key` puts a minimal stand-in
for the server's API keys in front, speaking the console's scheme: HTTP requests carry
`Authorization: Bearer <key>`, WebSocket handshakes `?api_key=<key>`; the page, its static files
and the health checks are public."""

from __future__ import annotations

import argparse
import asyncio
import re
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from service.console import router as console_router
from service.engine import Engine
from service.http.app import create_app
from service.settings import Settings

PUBLIC = re.compile(r"^/$|^/console/[^/]+$|^/v2/health/")


class RequireKey:
    """Reject calls without the key: 401 {"error"} over HTTP, a refused WebSocket handshake."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or PUBLIC.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"").decode()
            ok = given == f"Bearer {self.key}"
        else:
            query = parse_qs(scope.get("query_string", b"").decode())
            ok = query.get("api_key") == [self.key]
        if ok:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            body = orjson.dumps({"error": "missing or wrong API key: send the header "
                                          "Authorization: Bearer <key>"})
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})


async def serve(engine: Engine, host: str, port: int, key: str | None = None) -> None:
    await engine.open()
    app = create_app(engine, manage_engine=False)
    if not any(getattr(r, "path", None) == "/" for r in app.routes):  # not wired in yet
        app.include_router(console_router)
    if key:
        app.add_middleware(RequireKey, key=key)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=5)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await engine.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--require-key", default=None, help="accept only calls with this key")
    args = parser.parse_args()
    engine = Engine(Settings(models=args.models, grpc_port=0))  # type: ignore[call-arg]
    engine.start()
    try:
        asyncio.run(serve(engine, args.host, args.port, args.require_key))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
