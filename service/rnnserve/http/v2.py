"""KServe v2 / Open Inference Protocol over HTTP, as Triton implements it, so that
`tritonclient.http` works unchanged: health, server and model metadata, readiness, and infer
with JSON or binary tensors (the binary tensor data extension)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from rnnserve import __version__
from rnnserve.engine import Engine
from rnnserve.engine.sessions import sequence_parameters
from rnnserve.errors import InvalidInput
from rnnserve.http.common import engine_of, owner_of
from rnnserve.http.openapi import V2_INFER_EXAMPLE, V2_INFER_REQUEST, json_body
from rnnserve.http.responses import FastJSONResponse, error_response
from rnnserve.http.v2_codec import (
    compress,
    decode_request,
    decompress,
    encode_response,
)

router = APIRouter(prefix="/v2", tags=["KServe v2"])

EXTENSIONS = ["binary_tensor_data", "sequence", "sequence(string_id)"]
PLATFORM = "onnxruntime_onnx"


@router.get("/health/live", summary="Server liveness")
async def live() -> FastJSONResponse:
    return FastJSONResponse({"live": True})


@router.get("/health/ready", summary="Server readiness: every loaded model can serve")
async def ready(request: Request) -> Response:
    if engine_of(request).ready:
        return FastJSONResponse({"ready": True})
    return error_response(503, "not ready: models are loading, or (strict readiness) a model "
                          "failed to load; see /v1/models")


@router.get("", summary="Server metadata")
async def server_metadata() -> FastJSONResponse:
    return FastJSONResponse({"name": "rnnserve", "version": __version__,
                             "extensions": EXTENSIONS})


def _metadata(engine: Engine, model: str, version: str | None) -> dict[str, Any]:
    runner = engine.runner(model, version)
    sig = runner.signature
    inputs = [{"name": sig.input_name, "datatype": "FP32", "shape": [-1, -1, sig.input_size]}]
    outputs = [{"name": sig.output_name, "datatype": "FP32",
                "shape": [-1, -1, sig.output_size]}]
    for s in sig.states:
        inputs.append({"name": s.input, "datatype": "FP32", "shape": [s.layers, -1, s.hidden]})
        outputs.append({"name": s.output, "datatype": "FP32", "shape": [s.layers, -1, s.hidden]})
    return {
        "name": runner.name,
        "versions": [str(v) for v in sorted(engine.models.versions[runner.name])],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }


@router.get("/models/{model}", summary="Model metadata (highest version)")
async def model_metadata(request: Request, model: str) -> FastJSONResponse:
    return FastJSONResponse(_metadata(engine_of(request), model, None))


@router.get("/models/{model}/versions/{version}", summary="Model metadata")
async def model_version_metadata(request: Request, model: str, version: str) -> FastJSONResponse:
    return FastJSONResponse(_metadata(engine_of(request), model, version))


async def _model_ready(request: Request, model: str, version: str | None) -> FastJSONResponse:
    runner = engine_of(request).runner(model, version)
    return FastJSONResponse({"name": runner.name, "version": str(runner.version), "ready": True})


@router.get("/models/{model}/ready", summary="Model readiness")
async def model_ready(request: Request, model: str) -> FastJSONResponse:
    return await _model_ready(request, model, None)


@router.get("/models/{model}/versions/{version}/ready", summary="Model version readiness")
async def model_version_ready(request: Request, model: str, version: str) -> FastJSONResponse:
    return await _model_ready(request, model, version)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    engine = engine_of(request)
    body = decompress(await request.body(), request.headers.get("content-encoding"),
                      engine.settings.max_body_bytes)
    infer = decode_request(body, request.headers.get("inference-header-content-length"))
    sequence = sequence_parameters(infer.parameters)
    known = engine.runner(model, version).signature.output_names
    unknown = [o.name for o in infer.outputs or [] if o.name not in known]
    if unknown:  # refuse before running: a rejected call must not advance a sequence
        raise InvalidInput(f"unknown output {unknown[0]!r}; the model gives {list(known)}")
    if sequence is None:
        runner, results = await engine.infer(model, infer.inputs, version=version)
    else:
        sequence_id, start, end = sequence
        runner, results = await engine.sessions.sequence_step(
            model, version, sequence_id, start, end, infer.inputs, owner=owner_of(request))
    payload, header_length = encode_response(
        runner.name, runner.version, infer, results, runner.signature.output_names)
    headers: dict[str, str] = {}
    payload, encoding = compress(payload, request.headers.get("accept-encoding", ""))
    if encoding:
        headers["Content-Encoding"] = encoding
    if header_length is None:
        return Response(payload, media_type="application/json", headers=headers)
    headers["Inference-Header-Content-Length"] = str(header_length)
    return Response(payload, media_type="application/octet-stream", headers=headers)


_INFER_DOC = dict(
    summary="Inference (JSON or binary tensors)",
    description="Inputs: `input` FP32 [batch, time, features] and optionally the state inputs "
    "(zeros when omitted). Binary tensors follow the JSON header; set "
    "Inference-Header-Content-Length. With the parameters sequence_id (uint64 or string), "
    "sequence_start and sequence_end, the server keeps the state between requests (batch 1, "
    "no state inputs).",
    openapi_extra=json_body(V2_INFER_REQUEST, V2_INFER_EXAMPLE),
)


@router.post("/models/{model}/infer", **_INFER_DOC)  # type: ignore[arg-type]
async def infer(request: Request, model: str) -> Response:
    return await _infer(request, model, None)


@router.post("/models/{model}/versions/{version}/infer", **_INFER_DOC)  # type: ignore[arg-type]
async def infer_version(request: Request, model: str, version: str) -> Response:
    return await _infer(request, model, version)
