"""Native REST for people and curl: /v1/models, /v1/models/{m}, /v1/models/{m}/predict.
Each route converts, awaits the engine, converts back."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Path, Query, Request

from rnnserve.errors import InvalidInput, RnnServeError
from rnnserve.http.body import decode_state, encode_state, read_json_object
from rnnserve.http.common import engine_of
from rnnserve.http.json_arrays import to_float32
from rnnserve.http.openapi import PREDICT_EXAMPLE, PREDICT_REQUEST, json_body
from rnnserve.http.responses import FastJSONResponse

router = APIRouter(prefix="/v1", tags=["native REST"])

MODEL = Path(description="Model name, e.g. temperature-lstm", examples=["temperature-lstm"])
VERSION = Query(None, description="Model version; the highest when omitted.")

_PREDICT_FIELDS = {"inputs", "initial_states", "return_state"}


def parse_sequences(inputs: Any) -> np.ndarray | list[np.ndarray]:
    """A list of sequences → one 3-D array when they share a length (one vectorised
    conversion), else one array per sequence."""
    if not isinstance(inputs, list):
        raise InvalidInput('"inputs" must be a list of sequences, each a list of timesteps, '
                           "each a list of feature values")
    if inputs:
        try:
            whole = to_float32(inputs, "inputs")
        except InvalidInput:
            whole = None  # ragged (sequences of different lengths) or bad: look one by one
        if whole is not None and whole.ndim == 3:
            return whole
    return [to_float32(seq, f"inputs[{i}]") for i, seq in enumerate(inputs)]


@router.get("/models", summary="List the loaded models")
async def list_models(request: Request) -> FastJSONResponse:
    engine = engine_of(request)
    try:  # a listing answers while the store is down: the counts are then unknown (null)
        live: dict[str, int] | None = await engine.sessions.live_by_model()
    except RnnServeError:
        live = None
    retirement = engine.control.retirement
    counts = await retirement.sessions_per_version()  # None: the store cannot answer now
    return FastJSONResponse({
        "models": [engine.describe(name) for name in engine.models.names()],
        "live_sessions": live,
        "sessions_per_version": None if counts is None else {
            name: {str(v): n for v, n in sorted(per.items())} for name, per in counts.items()},
        "retiring": [{"name": m, "version": v, "until": until}
                     for (m, v), until in sorted(engine.registry.retiring.items())],
        "unavailable": [
            {"name": p.name, "version": p.version, "reason": p.reason}
            for p in engine.models.problems
        ],
        "state_store": engine.store_health.describe(),
    })


@router.get("/models/{model}", summary="Describe one model")
async def describe_model(
    request: Request, model: str = MODEL, version: str | None = VERSION
) -> FastJSONResponse:
    return FastJSONResponse(engine_of(request).describe(model, version))


@router.post(
    "/models/{model}/predict",
    summary="Stateless prediction for a batch of sequences",
    description="Each sequence starts from zeros (or its `initial_states` entry) and gets one "
    "output per timestep. Sequences may differ in length; each result equals the sequence "
    "predicted alone.",
    openapi_extra=json_body(PREDICT_REQUEST, PREDICT_EXAMPLE),
)
async def predict(
    request: Request, model: str = MODEL, version: str | None = VERSION
) -> FastJSONResponse:
    body = await read_json_object(request)
    unknown = sorted(set(body) - _PREDICT_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; predict takes {sorted(_PREDICT_FIELDS)}")
    if "inputs" not in body:
        raise InvalidInput('"inputs" is missing: {"inputs": [[[f, ...], ...], ...]}')
    return_state = body.get("return_state", False)
    if not isinstance(return_state, bool):
        raise InvalidInput('"return_state" must be true or false')
    raw_states = body.get("initial_states")
    if raw_states is not None and not isinstance(raw_states, list):
        raise InvalidInput('"initial_states" must be a list with one state (or null) per sequence')
    states = (
        [decode_state(s, f"initial_states[{i}]") for i, s in enumerate(raw_states)]
        if raw_states is not None else None
    )
    result = await engine_of(request).predict(
        model, parse_sequences(body["inputs"]), version=version,
        initial_states=states, return_state=return_state,
    )
    reply: dict[str, Any] = {"model": result.model, "version": result.version,
                             "outputs": result.outputs}
    if result.states is not None:
        reply["states"] = [encode_state(s) for s in result.states]
    return FastJSONResponse(reply)
