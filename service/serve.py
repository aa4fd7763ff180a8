"""`rnnserve serve`: settings from flags and RNNSERVE_* variables, then uvicorn.

The flags are the contract of DESIGN.md plus the limits and thread settings of Settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

import uvicorn
from pydantic import ValidationError

from service.engine import Engine
from service.engine.providers import DeviceUnavailable
from service.http.app import create_app
from service.settings import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnserve serve",
        description="Serve every model in a model repository over HTTP (REST, KServe v2). "
        "Each flag can also be set as RNNSERVE_<NAME> (e.g. RNNSERVE_PORT=9000).",
    )
    fields = Settings.model_fields
    for name, field in fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "default": None,
                                  "help": f"{field.description or ''} (default: {field.default})"}
        if field.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif name in ("device", "log_level"):
            kwargs["choices"] = list(field.annotation.__args__)  # type: ignore[union-attr]
        p.add_argument(flag, **kwargs)
    return p


def load_settings(argv: list[str]) -> Settings:
    """Flags override environment variables, which override defaults."""
    args = _parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)


def serve_main(argv: list[str]) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            print(f"rnnserve serve: --{where.replace('_', '-')}: {err['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.state_store != "memory" and not settings.state_store.startswith(
            ("redis://", "rediss://", "unix://")):
        print(f"rnnserve serve: --state-store {settings.state_store!r}: use memory or "
              "redis://HOST:PORT/DB", file=sys.stderr)
        return 2
    if not settings.models.is_dir():
        print(f"rnnserve serve: --models {settings.models} is not a directory", file=sys.stderr)
        return 2
    engine = Engine(settings)
    try:
        engine.start()
    except DeviceUnavailable as exc:
        print(f"rnnserve serve: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(engine, settings))
    finally:
        engine.close()


async def _serve(engine: Engine, settings: Settings) -> int:
    """HTTP (uvicorn) and gRPC in one event loop over one engine. On SIGTERM/SIGINT uvicorn
    stops accepting and finishes in-flight requests; then gRPC drains, then the engine."""
    log = logging.getLogger("rnnserve")
    try:
        await engine.open()
    except Exception as exc:  # the state store is unreachable or misconfigured
        print(f"rnnserve serve: cannot open the state store: {exc}", file=sys.stderr)
        return 2
    grpc_server = None
    if settings.grpc_port:
        from service.grpc.server import start_grpc_server

        grpc_server = await start_grpc_server(engine, settings)
    app = create_app(engine, manage_engine=False)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, access_log=settings.log_level == "debug",
                            timeout_graceful_shutdown=10, ws_max_size=settings.max_body_bytes,
                            ws_max_queue=settings.ws_max_queue, lifespan="on")
    try:
        await uvicorn.Server(config).serve()
    finally:
        if grpc_server is not None:
            log.info("stopping gRPC: in-flight calls finish (up to 10 s)")
            await grpc_server.stop(grace=10)
        await engine.aclose()
    return 0
