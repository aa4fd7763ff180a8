"""Triton's model configuration and statistics extensions over HTTP, as tritonclient.http
calls them (`get_model_config`, `get_inference_statistics`). The answers are the engine's
(engine/v2_extensions.py), in Triton's JSON shape; an unknown model or version is a 404 with
the v2 error body, as for metadata.

The router is included before the KServe v2 one: `/v2/models/stats` would otherwise be taken
for the metadata of a model called "stats" (a model of that name keeps its metadata and
readiness; only its statistics are ambiguous: ask `/v2/models/stats/stats`)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rnnserve.engine import model_config, model_statistics
from rnnserve.http.common import engine_of
from rnnserve.http.responses import FastJSONResponse

router = APIRouter(prefix="/v2", tags=["KServe v2"])


@router.get("/models/stats", summary="Inference statistics of every loaded model version")
async def all_statistics(request: Request) -> FastJSONResponse:
    return FastJSONResponse(model_statistics(engine_of(request), None, None))


@router.get("/models/{model}/stats", summary="Inference statistics of every version of a model")
async def statistics(request: Request, model: str) -> FastJSONResponse:
    return FastJSONResponse(model_statistics(engine_of(request), model, None))


@router.get("/models/{model}/versions/{version}/stats",
            summary="Inference statistics of a model version")
async def version_statistics(request: Request, model: str, version: str) -> FastJSONResponse:
    return FastJSONResponse(model_statistics(engine_of(request), model, version))


@router.get("/models/{model}/config", summary="Model configuration (Triton's shape; highest "
            "version)")
async def config(request: Request, model: str) -> FastJSONResponse:
    return FastJSONResponse(model_config(engine_of(request), model, None))


@router.get("/models/{model}/versions/{version}/config",
            summary="Model configuration (Triton's shape)")
async def version_config(request: Request, model: str, version: str) -> FastJSONResponse:
    return FastJSONResponse(model_config(engine_of(request), model, version))
