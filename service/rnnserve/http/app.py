"""The FastAPI application: wires the engine, routes, error mapping, limits and metrics.

The engine is built by the caller and passed in (no hidden globals); the lifespan loads the
models before the first request and releases the worker pool at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware

from rnnserve import __version__
from rnnserve.console import router as console_router
from rnnserve.engine import Engine, V2DataPlane
from rnnserve.http import migration, native, sessions, stream, v2, v2_extensions, v2_repository
from rnnserve.http.api_docs import install_api_docs
from rnnserve.http.auth import AuthAndRateLimit
from rnnserve.http.errors import install_error_handlers
from rnnserve.http.hot_routes import HotRoutes
from rnnserve.http.limits import BodySizeLimit
from rnnserve.http.request_context import RequestContext
from rnnserve.metrics import OTHER

DESCRIPTION = """Serve recurrent models (RNN, LSTM, GRU) through ONNX Runtime.

* **Native REST** (`/v1`): list and describe models, predict batches of sequences.
* **Sessions** (`/v1/models/{m}/sessions`, `/v1/sessions/{id}`, WebSocket
  `/v1/models/{m}/stream`): the server keeps each client's hidden state between steps.
* **KServe v2** (`/v2`): Triton-compatible; `tritonclient.http` works unchanged.

Errors are `{"error": "<what is wrong and how to fix it>"}`."""


def create_app(engine: Engine, *, manage_engine: bool = True) -> FastAPI:
    """Build the app around an engine. With `manage_engine` the app's lifespan starts, opens
    and closes it; without, the caller does (`rnnserve serve`, which shares the engine with
    the gRPC server, and tests)."""
    metrics = engine.metrics

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not manage_engine:
            yield
            return
        engine.start()
        await engine.open()
        try:
            yield
        finally:
            await engine.aclose()  # in-flight steps finish and are stored
            engine.close()

    # FastAPI's own OpenTelemetry layer is off: rnnserve's RequestContext makes the request
    # spans (service/tracing.py), and FastAPI's layer looked up the providers on every request.
    # Its docs pages are off too: they load their scripts from a CDN; api_docs.py serves them
    # from an installed package instead, so /docs and /redoc work offline.
    # redirect_slashes off: a path with a trailing slash is a JSON 404 like any unknown
    # path, not a bare 307 whose Location Starlette builds from the client's Host header
    app = FastAPI(title="rnnserve", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None, redirect_slashes=False,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.engine = engine
    app.state.v2 = V2DataPlane(engine)
    install_error_handlers(app)
    app.include_router(native.router)
    app.include_router(sessions.router)
    app.include_router(migration.router)
    app.include_router(stream.router)
    app.include_router(v2_extensions.router)  # first: /v2/models/stats is not a model
    app.include_router(v2.router)
    app.include_router(v2_repository.router)
    app.include_router(console_router)
    install_api_docs(app, api_keys=engine.keys.enabled)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # Last added runs first: the request context (id, metrics, span, log, time limit) wraps
    # everything, so 401/413/429 answers are counted; auth runs before the size limit reads
    # a body.
    settings = engine.settings
    app.add_middleware(HotRoutes, fastapi_app=app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthAndRateLimit, keys=engine.keys,
                       rate=settings.rate_limit_per_s, burst=settings.rate_burst)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["*"], expose_headers=["X-Request-Id", "Retry-After"])
    app.add_middleware(RequestContext, timeout_s=settings.request_timeout_s, metrics=metrics,
                       tracing=engine.tracing, model_label=served_model_label(engine))
    return app


def served_model_label(engine: Engine) -> Callable[[str], str]:
    """A request's `model` metric label: the name when the engine serves that model (or the
    route names none), else OTHER; read at each request, the engine loads its models at
    start."""
    def label(name: str) -> str:
        return name if not name or name in engine.models.versions else OTHER
    return label
