"""Native REST for stateful sessions: create, step, reset, describe, state, delete, and the
gateway's many-sessions-in-one-request steps. Routes convert, await the engine, convert back."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from rnnserve.engine import StepResult, StepRows
from rnnserve.errors import InvalidInput, PayloadTooLarge, RnnServeError
from rnnserve.http.binary_steps import is_binary, step_many_binary
from rnnserve.http.body import decode_state, encode_state, only_fields, read_json_object
from rnnserve.http.bulk_sessions import create_many, is_bulk
from rnnserve.http.common import client_of, engine_of, owner_of, session_body
from rnnserve.http.errors import error_fields
from rnnserve.http.json_arrays import to_float32
from rnnserve.http.openapi import (
    CREATE_REQUEST,
    STEP_EXAMPLE,
    STEP_REQUEST,
    create_body,
    json_body,
    steps_body,
)
from rnnserve.http.responses import FastJSONResponse

router = APIRouter(prefix="/v1", tags=["sessions"])

MODEL = Path(description="Model name, e.g. temperature-lstm", examples=["temperature-lstm"])
SESSION = Path(description="A session id returned by create")


async def optional_json(request: Request) -> dict[str, Any]:
    """Create and reset take an optional body: none at all is {}."""
    return await read_json_object(request, optional=True)


def step_inputs(body: Any, what: str = "inputs") -> Any:
    if not isinstance(body, dict) or "inputs" not in body:
        raise InvalidInput(f'"{what}" is missing: {{"inputs": [[f, ...], ...]}} (timesteps × '
                           "features)")
    return to_float32(body["inputs"], what)


@router.post("/models/{model}/sessions", status_code=201, summary="Open a session (or many)",
             description="The server keeps the session's hidden state between steps. Optional "
             "body: a starting `state` (as returned by GET /v1/sessions/{id}/state) and a "
             "`version` to pin; 201 with the session. Bulk: `{\"sessions\": [{\"state\"?, "
             "\"version\"?}, ...]}` (at most --max-sessions-per-request, 1024 by default) "
             "opens one session per item, each under the single create's rules, and answers "
             "200 `{\"results\": [...]}` in order: each the session as a single create returns "
             "it, or `{\"error\", \"status\"}` for an item that failed alone (`version` in the "
             "query is every item's default).", openapi_extra=create_body())
async def create_session(request: Request, model: str = MODEL,
                         version: str | None = Query(None)) -> FastJSONResponse:
    body = await optional_json(request)
    if is_bulk(body):
        return await create_many(request, model, body, version)
    only_fields(body, {"state", "version"}, "create")
    version = body.get("version", version)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int | str)):
        raise InvalidInput('"version" must be a version number like 1 or "1", not '
                           f"{orjson.dumps(version).decode()[:40]}")
    record = await engine_of(request).sessions.create(
        model, version=version, state=decode_state(body.get("state"), "state"),
        owner=owner_of(request), client=client_of(request))
    return FastJSONResponse(session_body(record), status_code=201)


@router.post("/sessions/{session_id}/step", summary="Feed a session one or more timesteps",
             openapi_extra=json_body(STEP_REQUEST, STEP_EXAMPLE))
async def step(request: Request, session_id: str = SESSION) -> FastJSONResponse:
    body = await read_json_object(request)
    only_fields(body, {"inputs", "step_id"}, "step")
    result = await engine_of(request).sessions.step(session_id, step_inputs(body),
                                                     owner=owner_of(request),
                                                     step_id=body.get("step_id"))
    return FastJSONResponse({"outputs": result.outputs, "steps": result.steps})


@router.post("/sessions/{session_id}/reset", summary="Reset a session's state",
             description="Back to zeros, or to the `state` given (snapshot, migrate, fork).",
             openapi_extra=json_body(CREATE_REQUEST, {}, required=False))
async def reset(request: Request, session_id: str = SESSION) -> FastJSONResponse:
    body = await optional_json(request)
    only_fields(body, {"state"}, "reset")
    record = await engine_of(request).sessions.reset(
        session_id, state=decode_state(body.get("state"), "state"), owner=owner_of(request))
    return FastJSONResponse(session_body(record))


@router.get("/sessions/{session_id}", summary="Describe a session")
async def describe(request: Request, session_id: str = SESSION) -> FastJSONResponse:
    record = await engine_of(request).sessions.describe(session_id, owner=owner_of(request))
    return FastJSONResponse(session_body(record))


@router.get("/sessions/{session_id}/state", summary="Export a session's state",
            description="Every state tensor with its shape and values; create and reset "
            "accept it back.")
async def export_state(request: Request, session_id: str = SESSION) -> FastJSONResponse:
    record, state = await engine_of(request).sessions.read_state(session_id,
                                                                 owner=owner_of(request))
    return FastJSONResponse({**session_body(record), "state": encode_state(state)})


@router.delete("/sessions/{session_id}", status_code=204, summary="Delete a session")
async def delete(request: Request, session_id: str = SESSION) -> Response:
    await engine_of(request).sessions.delete(session_id, owner=owner_of(request))
    return Response(status_code=204)


Items = tuple[list[str], list[Any], list[Any], dict[int, RnnServeError]]

ITEM_FIELDS = frozenset({"session_id", "inputs", "step_id"})
"""What a gateway item takes: a single step's fields and the session it steps."""


def split_items(items: list[Any]) -> Items:
    """A gateway's items → (session ids, raw inputs, step ids, errors of malformed items),
    with comprehensions in the common case where every item is well formed. An item with a
    field a step does not take fails alone, as a single step would (its step ids are checked
    by the engine, item by item, with the single step's rule)."""
    try:
        ids = [item["session_id"] for item in items]  # every item is an object (JSON)
        raw = [item["inputs"] for item in items]
        if all(type(sid) is str for sid in ids):
            step_ids = [item.get("step_id") for item in items]
            with_step_id = len(items) - step_ids.count(None)
            # no field but those two and the step ids counted: the fields add up (C loops);
            # else (a "step_id": null, or an unknown field) look at each item's keys
            if sum(map(len, items)) == 2 * len(items) + with_step_id or all(
                    item.keys() <= ITEM_FIELDS for item in items):
                return ids, raw, step_ids, {}
    except (TypeError, KeyError):
        pass
    ids, raw, step_ids = [], [], []
    bad: dict[int, RnnServeError] = {}
    for i, item in enumerate(items):
        session_id = item.get("session_id") if isinstance(item, dict) else None
        if not isinstance(session_id, str) or "inputs" not in item:
            bad[i] = InvalidInput(f'steps[{i}] must be {{"session_id": "...", '
                                  '"inputs": [[...]]}')
        else:
            try:
                only_fields(item, ITEM_FIELDS, f"steps[{i}]")
            except InvalidInput as exc:
                bad[i] = exc
        ids.append(session_id if isinstance(session_id, str) else "")
        step_ids.append(None if i in bad else item.get("step_id"))
        raw.append(None if i in bad else item["inputs"])
    return ids, raw, step_ids, bad


def parse_gateway_inputs(raw: list[Any], bad: dict[int, RnnServeError]
                         ) -> np.ndarray | list[np.ndarray | RnnServeError]:
    """All items' inputs as one array [items, time, features] when every item is well formed
    and they share a shape (one vectorised conversion); else one array or error per item."""
    if not bad:
        try:
            whole = to_float32(raw, "steps")
        except InvalidInput:
            whole = None
        if whole is not None and whole.ndim == 3 and whole.shape[1] > 0:
            return whole
    parsed: list[np.ndarray | RnnServeError] = []
    for i, value in enumerate(raw):
        if i in bad:
            parsed.append(bad[i])
            continue
        try:
            parsed.append(to_float32(value, f"steps[{i}].inputs"))
        except RnnServeError as exc:
            parsed.append(exc)
    return parsed


@router.post("/models/{model}/steps", summary="Step many sessions in one request (gateways)",
             description="One step for each listed session, run as one batch. Results come in "
             "the same order; a bad item gets its own error and leaves its session unchanged. "
             "Besides JSON, a binary body (`application/octet-stream`): a JSON header "
             "`{\"session_ids\", \"shape\": [sessions, timesteps, features], \"datatype\": "
             "\"FP32\", \"step_ids\"?}` of `Inference-Header-Content-Length` bytes, then the "
             "float32 values; the reply is binary too: a JSON header `{\"steps\", "
             "\"errors\": [{\"index\", \"session_id\", \"error\", \"status\"}], "
             "\"shape\", \"datatype\"}` of the length its `Inference-Header-Content-Length` "
             "says, then the outputs as float32 (zeros in failed items' rows).",
             openapi_extra=steps_body())
async def step_many(request: Request, model: str = MODEL) -> Response:
    if is_binary(request):
        return await step_many_binary(request, model)
    engine = engine_of(request)
    body = await read_json_object(request)
    only_fields(body, {"steps"}, "steps")
    items = body.get("steps")
    if not isinstance(items, list) or not items:
        raise InvalidInput('"steps" must be a non-empty list of {"session_id", "inputs"}')
    if len(items) > engine.settings.max_sequences:
        raise PayloadTooLarge(f"{len(items)} steps in one request; the limit is "
                              f"{engine.settings.max_sequences}: split the request")
    ids, raw, step_ids, bad = split_items(items)
    inputs = parse_gateway_inputs(raw, bad)
    results = await engine.sessions.step_many(model, ids, inputs, step_ids,
                                              owner=owner_of(request))
    if type(results) is StepRows:  # every item applied: straight from the arrays
        out = [{"session_id": sid, "outputs": y, "steps": n} for sid, y, n in
               zip(ids, results.outputs, results.steps.tolist(), strict=True)]
        return FastJSONResponse({"results": out})
    out = [{"session_id": sid, "outputs": r.outputs, "steps": r.steps}
           if isinstance(r, StepResult) else {"session_id": sid, **_item_error(r)}
           for sid, r in zip(ids, results, strict=True)]
    return FastJSONResponse({"results": out})


def _item_error(exc: RnnServeError) -> dict[str, Any]:
    """A failed item: its error and status (the gateway's items carry no retry hint)."""
    fields = error_fields(exc)
    fields.pop("retry_after_s", None)
    return fields
