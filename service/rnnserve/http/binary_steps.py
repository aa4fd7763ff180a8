"""The binary body of the gateway's bulk steps (`POST /v1/models/{model}/steps`): raw float32
with a small JSON header, framed as the KServe v2 binary tensor extension frames its bodies
(the JSON header first, its byte length in the `Inference-Header-Content-Length` header, the
raw bytes after it), so a gateway sends 1024 sessions' inputs without writing a number as
text, and the server turns them into one float32 array with one call.

Request: `Content-Type: application/octet-stream`, `Inference-Header-Content-Length: N`; the
first N bytes are a JSON object

    {"session_ids": ["...", ...], "shape": [sessions, timesteps, features],
     "datatype": "FP32", "step_ids": ["..." or null, ...]}

(`datatype` optional, FP32 only; `step_ids` optional, one per session), then exactly
sessions × timesteps × features float32 values, little-endian, row-major. Reply (200, the
same framing): the JSON header

    {"steps": [timesteps after it, or null for a failed item, ...],
     "errors": [{"index": i, "session_id": "...", "error": "...", "status": 404}, ...],
     "shape": [sessions, timesteps, outputs], "datatype": "FP32"}

then the outputs as float32 of that shape (zeros in the rows of failed items; when every item
failed, the width is the model's latest version's output size, which a session pinned to an
older version of another output size would not have). Items succeed
or fail alone, as in the JSON form; a body that cannot be read as this layout is refused
whole (400 with what is wrong), before any session is touched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from fastapi import Request, Response

from rnnserve.engine import Engine, StepResult, StepRows
from rnnserve.errors import InvalidInput, PayloadTooLarge, RnnServeError
from rnnserve.http.body import only_fields, parse_json, read_body
from rnnserve.http.common import engine_of, owner_of
from rnnserve.http.errors import error_fields
from rnnserve.whole_numbers import whole_number

HEADER = "inference-header-content-length"
MEDIA_TYPE = "application/octet-stream"
FIELDS = frozenset({"session_ids", "shape", "datatype", "step_ids"})
LAYOUT = ('the binary body is a JSON header {"session_ids": [...], "shape": [sessions, '
          'timesteps, features], "datatype": "FP32"} of Inference-Header-Content-Length bytes, '
          "then the float32 values (little-endian)")


def is_binary(request: Request) -> bool:
    """A binary bulk step: the header length is given, or the body says it is raw bytes."""
    if HEADER in request.headers:
        return True
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == MEDIA_TYPE


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode(body: bytes, header_length: str | None, max_items: int
           ) -> tuple[list[str], list[str | None], np.ndarray]:
    """(session ids, step ids, inputs [sessions, timesteps, features] float32) of a binary
    body, or InvalidInput (PayloadTooLarge past `max_items`) saying what is wrong."""
    if header_length is None:
        raise InvalidInput(f"the Inference-Header-Content-Length header is missing: {LAYOUT}")
    split = whole_number(header_length)
    if split is None or not 0 < split <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} must be the byte "
                           f"length of the JSON header, at most the body's {len(body)} bytes")
    header = parse_json(body[:split])
    if not isinstance(header, dict):
        raise InvalidInput(f"the JSON header must be an object: {LAYOUT}")
    only_fields(header, FIELDS, "the JSON header")
    ids = header.get("session_ids")
    if not isinstance(ids, list) or not ids or set(map(type, ids)) != {str}:
        raise InvalidInput('"session_ids" must be a non-empty list of session id strings')
    if len(ids) > max_items:
        raise PayloadTooLarge(f"{len(ids)} steps in one request; the limit is {max_items}: "
                              "split the request")
    datatype = header.get("datatype", "FP32")
    if datatype != "FP32":
        raise InvalidInput(f'"datatype" {str(datatype)[:20]!r} is not supported: the values '
                           'must be float32 ("FP32"), little-endian')
    shape = header.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(map(_count, shape))):
        raise InvalidInput('"shape" must be [sessions, timesteps, features], three whole '
                           "numbers")
    if shape[0] != len(ids) or shape[1] < 1 or shape[2] < 1:
        raise InvalidInput(f'"shape" {shape} must be [{len(ids)} (one row per session id), '
                           "timesteps ≥ 1, features ≥ 1]")
    step_ids = header.get("step_ids")
    if step_ids is None:
        step_ids = [None] * len(ids)
    elif not isinstance(step_ids, list) or len(step_ids) != len(ids):
        raise InvalidInput(f'"step_ids" must be a list of {len(ids)} step ids (null for none), '
                           "one per session id")
    count = shape[0] * shape[1] * shape[2]
    data = len(body) - split
    if data != 4 * count:
        raise InvalidInput(f"the body has {data} bytes after the JSON header; shape {shape} "
                           f"of FP32 needs {4 * count} ({count} values × 4 bytes)")
    x = np.frombuffer(body, "<f4", count, split).reshape(shape)
    if not x.flags.aligned:  # a header whose length is no multiple of 4
        x = x.copy()
    return ids, step_ids, x


def encode(ids: list[str], results: Sequence[Any], timesteps: int,
           model_width: Callable[[], int]) -> tuple[bytes, bytes]:
    """(JSON header, outputs) of the reply: one array of every item's outputs, zeros where an
    item failed. The width is the items' outputs', or `model_width()` (the model's latest
    version's) when none succeeded: the same shape whichever items failed, as long as the
    sessions' versions share an output size."""
    if type(results) is StepRows:  # every item applied: the batch's arrays as they are
        header = orjson.dumps({"steps": results.steps.tolist(), "errors": [],
                               "shape": list(results.outputs.shape), "datatype": "FP32"})
        return header, np.ascontiguousarray(results.outputs, "<f4").tobytes()
    done = [r for r in results if isinstance(r, StepResult)]
    width = done[0].outputs.shape[-1] if done else model_width()
    if len(done) == len(results):  # transposed in one C pass, then one copy of the rows
        rows, counts, _ = zip(*done, strict=True)
        outputs = np.concatenate(rows).reshape(len(done), *rows[0].shape).astype("<f4",
                                                                                 copy=False)
        steps: list[int | None] = list(counts)
        errors: list[dict[str, Any]] = []
    else:
        outputs = np.zeros((len(results), timesteps, width), "<f4")
        steps, errors = [], []
        for i, r in enumerate(results):
            if isinstance(r, StepResult):
                outputs[i] = r.outputs
                steps.append(r.steps)
            else:
                steps.append(None)
                fields = error_fields(r)
                fields.pop("retry_after_s", None)
                errors.append({"index": i, "session_id": ids[i], **fields})
    header = orjson.dumps({"steps": steps, "errors": errors, "shape": list(outputs.shape),
                           "datatype": "FP32"})
    return header, np.ascontiguousarray(outputs).tobytes()


def latest_width(engine: Engine, model: str) -> int:
    """The model's latest version's output size, for a reply in which no item succeeded
    (0 when the model is gone by then: the items' own errors still answer, as in JSON)."""
    try:
        return engine.runner(model).signature.output_size
    except RnnServeError:
        return 0


async def step_many_binary(request: Request, model: str) -> Response:
    """The binary form of the bulk steps route (sessions.step_many)."""
    engine = engine_of(request)
    body = await read_body(request)
    ids, step_ids, x = decode(body, request.headers.get(HEADER), engine.settings.max_sequences)
    results = await engine.sessions.step_many(
        model, ids, x, step_ids, owner=owner_of(request))
    header, outputs = encode(ids, results, x.shape[1], lambda: latest_width(engine, model))
    return Response(header + outputs, media_type=MEDIA_TYPE,
                    headers={"Inference-Header-Content-Length": str(len(header))})
