"""Session migration over REST: one session, or every session of a model version, moved to
another version of its model, re-warmed from its kept inputs (engine/migration.py)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Path, Request

from rnnserve.errors import InvalidInput, ModelNotFound
from rnnserve.http.body import only_fields, read_json_object
from rnnserve.http.common import engine_of, owner_of, session_body
from rnnserve.http.openapi import json_body
from rnnserve.http.responses import FastJSONResponse
from rnnserve.whole_numbers import whole_number

router = APIRouter(prefix="/v1", tags=["sessions"])

MODEL = Path(description="Model name, e.g. temperature-lstm", examples=["temperature-lstm"])
SESSION = Path(description="A session id returned by create")
VERSION = Path(description="The model version whose sessions move")


def target_version(body: dict[str, Any], field: str) -> int | str:
    """The version a migration moves to: a whole number (or its digits), required."""
    if field not in body:
        raise InvalidInput(f'"{field}" is missing: {{"{field}": N}}, the model version to '
                           "move to")
    value = body[field]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput(f'"{field}" must be a version number like 2 or "2", not '
                           f"{orjson.dumps(value).decode()[:40]}")
    return value


@router.post("/sessions/{session_id}/migrate", summary="Move a session to another version",
             description="Body `{\"version\": N}`. The session's kept inputs (its last "
             "`rewarm_steps`, set in its version's model.json) run through version N from a "
             "zero state, and the session, under the same id, holds that state on version N "
             "(its step count and replay window of step ids are kept). 409 when its version "
             "keeps no inputs (rewarm_steps 0) or version N takes other inputs; 404 for an "
             "unknown version.",
             openapi_extra=json_body({"type": "object", "required": ["version"], "properties": {
                 "version": {"type": "integer"}}}, {"version": 2}))
async def migrate_session(request: Request, session_id: str = SESSION) -> FastJSONResponse:
    body = await read_json_object(request)
    only_fields(body, {"version"}, "migrate")
    done = await engine_of(request).sessions.migrate(
        session_id, target_version(body, "version"), owner=owner_of(request))
    return FastJSONResponse({**session_body(done.record), "replayed_steps": done.replayed})


@router.post("/models/{model}/versions/{version}/migrate",
             summary="Move every session of a version to another version",
             description="Body `{\"to\": N}`: each of the caller's live sessions on this "
             "version is migrated as `POST /v1/sessions/{id}/migrate` would; 200 "
             "`{\"results\": [...]}`, per session its new `version` and `replayed_steps`, or "
             "`{\"error\", \"status\"}`. 409 (nothing moved) when this version keeps no inputs "
             "or version N takes other inputs; 404 for an unknown version.",
             openapi_extra=json_body({"type": "object", "required": ["to"], "properties": {
                 "to": {"type": "integer"}}}, {"to": 2}))
async def migrate_version(request: Request, model: str = MODEL,
                          version: str = VERSION) -> FastJSONResponse:
    number = whole_number(version)  # digits only: FastAPI's int would read "1.0" or "1_0"
    if number is None:
        raise ModelNotFound(f"model {model!r} has no version {version!r}: a version is its "
                            "number's digits, like 2")
    body = await read_json_object(request)
    only_fields(body, {"to"}, "migrate")
    results = await engine_of(request).sessions.migrate_version(
        model, number, target_version(body, "to"), owner=owner_of(request))
    return FastJSONResponse({"results": results})
