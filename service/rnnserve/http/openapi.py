"""Request schemas and examples for /docs. The routes parse bodies themselves (orjson and
numpy are far faster than model validation for large float arrays), so these schemas are
documentation and fuzzing input; the examples work when pasted (temperature-lstm takes
[temperature °F, sin(2π·hour/24), cos(2π·hour/24)])."""

from __future__ import annotations

from typing import Any

_SEQUENCE = {
    "type": "array",
    "description": "One sequence: timesteps × features.",
    "items": {"type": "array", "items": {"type": "number"}},
}
_STATE = {
    "type": "object",
    "description": 'One sequence\'s state, keyed by state input name: {"h0": {"shape": '
    "[layers, 1, hidden], \"data\": [...]}, ...}. Missing tensors start from zeros.",
    "additionalProperties": {
        "type": "object",
        "required": ["data"],
        "properties": {
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "data": {"type": "array", "items": {"type": "number"}},
        },
    },
}

EXAMPLE_SEQUENCE = [
    [48.2, 0.0, 1.0],
    [47.9, 0.2588, 0.9659],
    [47.5, 0.5, 0.866],
    [47.4, 0.7071, 0.7071],
]

PREDICT_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "additionalProperties": False,
    "properties": {
        "inputs": {"type": "array", "items": _SEQUENCE,
                   "description": "Sequences; they may differ in length."},
        "initial_states": {"type": "array", "items": {"oneOf": [_STATE, {"type": "null"}]},
                           "description": "One per sequence, null for zeros."},
        "return_state": {"type": "boolean", "default": False,
                         "description": "Also return each sequence's final state."},
    },
}

PREDICT_EXAMPLE = {
    "inputs": [EXAMPLE_SEQUENCE, EXAMPLE_SEQUENCE[:2]],
    "return_state": False,
}

V2_INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string"},
                    "parameters": {"type": "object"},
                    "data": {"type": "array"},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string"},
                                     "parameters": {"type": "object"}}},
        },
    },
}

V2_INFER_EXAMPLE = {
    "id": "example-1",
    "inputs": [{"name": "input", "shape": [1, 2, 3], "datatype": "FP32",
                "data": [48.2, 0.0, 1.0, 47.9, 0.2588, 0.9659]}],
}


CREATE_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "state": _STATE,
        "version": {"type": "integer", "minimum": 1, "description": "Pin a model version."},
    },
}
CREATE_EXAMPLE: dict[str, Any] = {}

CREATE_MANY_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["sessions"],
    "additionalProperties": False,
    "description": "Bulk create: one session per item (at most --max-sessions-per-request, "
    "1024 by default), each under a single create's rules; the answer is 200 with "
    '{"results": [...]} in the same order, each a session (as a single create returns it) '
    'or {"error", "status", "retry_after_s"?} for an item that failed alone.',
    "properties": {"sessions": {"type": "array", "minItems": 1, "items": CREATE_REQUEST}},
}
CREATE_MANY_EXAMPLE: dict[str, Any] = {"sessions": [{}, {}, {"version": 1}]}

STEP_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "additionalProperties": False,
    "properties": {
        "inputs": {**_SEQUENCE, "description": "One or more timesteps."},
        "step_id": {"type": "string", "minLength": 1, "maxLength": 128,
                    "description": "Idempotency key: a retry of one of the session's recent "
                    "steps (its replay window, --step-history) with the same step_id returns "
                    "its outputs instead of applying it twice."},
    },
}
STEP_EXAMPLE = {"inputs": [EXAMPLE_SEQUENCE[0]]}

STEPS_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["steps"],
    "additionalProperties": False,
    "properties": {"steps": {"type": "array", "items": {
        "type": "object", "required": ["session_id", "inputs"], "additionalProperties": False,
        "description": "One session's step, with a single step's fields and rules; an item "
        "that breaks them fails alone.",
        "properties": {"session_id": {"type": "string"}, "inputs": _SEQUENCE,
                       "step_id": STEP_REQUEST["properties"]["step_id"]}}}},
}
STEPS_EXAMPLE = {"steps": [{"session_id": "<id from POST /v1/models/temperature-lstm/sessions>",
                            "inputs": [EXAMPLE_SEQUENCE[0]]}]}


def json_body(schema: dict[str, Any], example: Any, *, required: bool = True) -> dict[str, Any]:
    """openapi_extra for a route that reads its JSON body itself."""
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": schema, "example": example}}}}


def create_body() -> dict[str, Any]:
    """openapi_extra of the session create route: one session's optional body, or a bulk
    create's, with the bulk answer (200) beside the single one (201)."""
    return {
        "requestBody": {"required": False, "content": {"application/json": {
            "schema": {"oneOf": [CREATE_REQUEST, CREATE_MANY_REQUEST]},
            "examples": {"one": {"summary": "one session", "value": CREATE_EXAMPLE},
                         "bulk": {"summary": "sessions in bulk",
                                  "value": CREATE_MANY_EXAMPLE}}}}},
        "responses": {"200": {"description": "Bulk create: one result per item, in order: "
                              "the session, or the item's error and status."}},
    }


def steps_body() -> dict[str, Any]:
    """openapi_extra of the gateway's bulk steps: the JSON body, and the binary one
    (http/binary_steps.py) with its framing header."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": STEPS_REQUEST, "example": STEPS_EXAMPLE},
        "application/octet-stream": {"schema": {
            "type": "string", "format": "binary",
            "description": "A JSON header {\"session_ids\": [...], \"shape\": [sessions, "
            "timesteps, features], \"datatype\": \"FP32\", \"step_ids\"?: [...]} of "
            "Inference-Header-Content-Length bytes, then sessions × timesteps × features "
            "float32 values, little-endian, row-major. The reply has the same framing."}}}},
        "parameters": [{"name": "Inference-Header-Content-Length", "in": "header",
                        "required": False, "schema": {"type": "integer", "minimum": 1},
                        "description": "With a binary body: the byte length of its JSON "
                        "header."}]}
