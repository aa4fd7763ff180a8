"""KServe v2 / Open Inference Protocol over HTTP, as Triton implements it, so that
`tritonclient.http` works unchanged: health, server and model metadata, readiness, and infer
with JSON or binary tensors (the binary tensor data extension). The rules live in the engine's
v2 data plane; this module translates HTTP to it and back (v2_codec.py: the bodies)."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request, Response

from rnnserve.engine import EXTENSIONS, V2Response
from rnnserve.http.body import read_body
from rnnserve.http.common import client_of, engine_of, first_headers, owner_of, v2_of
from rnnserve.http.content_encoding import compress
from rnnserve.http.errors import error_response
from rnnserve.http.openapi import V2_INFER_EXAMPLE, V2_INFER_REQUEST, json_body
from rnnserve.http.responses import FastJSONResponse, ReadyResponse
from rnnserve.http.v2_codec import InferCall, decode_request, encode_response

router = APIRouter(prefix="/v2", tags=["KServe v2"])

HTTP_EXTENSIONS = ("binary_tensor_data", *EXTENSIONS)


@router.get("/health/live", summary="Server liveness: the process answers (never asks the "
            "state store)")
async def live() -> FastJSONResponse:
    return FastJSONResponse({"live": True})


@router.get("/health/ready", summary="Server readiness: the models loaded and the state store "
            "not unreachable for longer than --store-unready-after-s")
async def ready(request: Request) -> Response:
    reason = engine_of(request).not_ready_reason()
    if reason is None:
        return FastJSONResponse({"ready": True})
    return error_response(503, f"not ready: {reason}")


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> FastJSONResponse:
    return FastJSONResponse(v2_of(request).server_metadata(HTTP_EXTENSIONS))


@router.get("/models/{model}", summary="Model metadata (highest version)")
async def model_metadata(request: Request, model: str) -> FastJSONResponse:
    return FastJSONResponse(v2_of(request).model_metadata(model, None))


@router.get("/models/{model}/versions/{version}", summary="Model metadata")
async def model_version_metadata(request: Request, model: str, version: str) -> FastJSONResponse:
    return FastJSONResponse(v2_of(request).model_metadata(model, version))


def _model_ready(request: Request, model: str, version: str | None) -> FastJSONResponse:
    name, served = v2_of(request).model_ready(model, version)
    return FastJSONResponse({"name": name, "version": str(served), "ready": True})


@router.get("/models/{model}/ready", summary="Model readiness")
async def model_ready(request: Request, model: str) -> FastJSONResponse:
    return _model_ready(request, model, None)


@router.get("/models/{model}/versions/{version}/ready", summary="Model version readiness")
async def model_version_ready(request: Request, model: str, version: str) -> FastJSONResponse:
    return _model_ready(request, model, version)


async def _infer(request: Request, model: str, version: str | None) -> Response:
    headers = first_headers(request.scope)  # one pass for the four headers read here
    body = await read_body(request, headers)
    header_length = headers.get(b"inference-header-content-length")
    call = decode_request(body, None if header_length is None else header_length.decode(
        "latin-1"), model, version)
    answer = await v2_of(request).infer(call.request, owner_of(request),
                                        client_of(request, headers))
    return infer_response(call, answer, headers)


def infer_response(call: InferCall, answer: V2Response,
                   headers: Mapping[bytes, bytes]) -> ReadyResponse:
    """The 200 to an infer call: its body encoded, compressed as the request's
    Accept-Encoding allows (`headers`: its first_headers). The sequence lane
    (http/sequence_lane.py) answers its steps with it too."""
    payload, header_length_out = encode_response(call, answer)
    lines: list[tuple[bytes, bytes]] = []
    payload, encoding = compress(payload, headers.get(b"accept-encoding", b"").decode("latin-1"))
    if encoding:
        lines.append((b"content-encoding", encoding.encode()))
    if header_length_out is None:
        return ReadyResponse(payload, b"application/json", lines)
    lines.append((b"inference-header-content-length", str(header_length_out).encode()))
    return ReadyResponse(payload, b"application/octet-stream", lines)


_INFER_DOC = dict(
    summary="Inference (JSON or binary tensors)",
    description="Inputs: `input` FP32 [batch, time, features] and optionally the state inputs "
    "(zeros when omitted). Binary tensors follow the JSON header; set "
    "Inference-Header-Content-Length. With the parameters sequence_id (uint64, or a string "
    "of 1 to 256 printable characters), sequence_start and sequence_end, the server keeps "
    "the state between requests (batch 1, "
    "no state inputs); a sequence step may carry step_id (1 to 128 characters): a repeat of "
    "one of the sequence's recent step_ids returns that step's outputs instead of applying it "
    "again. "
    "504: the step was not applied (safe to retry).",
    openapi_extra=json_body(V2_INFER_REQUEST, V2_INFER_EXAMPLE),
)


@router.post("/models/{model}/infer", **_INFER_DOC)  # type: ignore[arg-type]
async def infer(request: Request, model: str) -> Response:
    return await _infer(request, model, None)


@router.post("/models/{model}/versions/{version}/infer", **_INFER_DOC)  # type: ignore[arg-type]
async def infer_version(request: Request, model: str, version: str) -> Response:
    return await _infer(request, model, version)
