"""Read request bodies: content coding (gzip and deflate are inflated, as on the KServe v2
routes), content type, JSON decoding, and the state object of the contract
({"h0": {"shape": [...], "data": [...]}, ...}) in both directions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Set
from typing import Any

import numpy as np
import orjson
from fastapi import Request

from rnnserve.engine import check_shape
from rnnserve.errors import InvalidInput, UnsupportedMediaType
from rnnserve.http.common import engine_of
from rnnserve.http.content_encoding import decompress
from rnnserve.http.json_arrays import to_float32


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


def parse_json(raw: bytes) -> Any:
    """orjson decoding; its messages say where the JSON broke."""
    if not raw:
        raise InvalidInput("the request body is empty: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            f"malformed JSON: {exc} (NaN and Infinity are not JSON numbers)"
        ) from None


async def read_body(request: Request, headers: Mapping[bytes, bytes] | None = None) -> bytes:
    """The request body as sent before any Content-Encoding: gzip or deflate is inflated,
    never past --max-body-bytes (content_encoding.decompress: 413 beyond, 415 for another
    coding, 400 for data that is not what the header says). `headers`: the request's
    `common.first_headers`, where the caller made them already."""
    if headers is None:
        encoding = request.headers.get("content-encoding")
    else:
        coding = headers.get(b"content-encoding")
        encoding = None if coding is None else coding.decode("latin-1")
    return decompress(await request.body(), encoding, engine_of(request).settings.max_body_bytes)


async def read_json_object(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; 415 for another content type, 400 for bad JSON. With
    `optional`, no body at all is {} (create and reset take an optional body)."""
    raw = await read_body(request)
    if optional and not raw:
        return {}
    content_type = request.headers.get("content-type", "")
    if not _is_json_type(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {content_type!r} is not supported: send JSON with "
            "'Content-Type: application/json'"
        )
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def decode_state(value: Any, what: str) -> dict[str, np.ndarray] | None:
    """{"h0": {"shape": [...], "data": [...]}} → arrays (data flat row-major or nested)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidInput(f'{what} must be an object like {{"h0": {{"shape": [2, 1, 64], '
                           '"data": [...]}}}')
    state: dict[str, np.ndarray] = {}
    for name, tensor in value.items():
        if not isinstance(tensor, Mapping) or "data" not in tensor:
            raise InvalidInput(f'{what}.{name} must be {{"shape": [...], "data": [...]}}')
        data = to_float32(tensor["data"], f"{what}.{name}.data")
        shape = tensor.get("shape", list(data.shape))
        shape = check_shape(shape, f"{what}.{name}")
        if math.prod(shape) != data.size:  # (Python's integers: no overflow to a small size)
            raise InvalidInput(f"{what}.{name} has {data.size} values but shape {shape} "
                               f"needs {math.prod(shape)}")
        state[str(name)] = data.reshape(shape)
    return state


def encode_state(state: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The inverse of decode_state: what GET state returns and create/reset accept back."""
    return {
        name: {"shape": list(arr.shape), "data": np.ascontiguousarray(arr).ravel()}
        for name, arr in state.items()
    }


def only_fields(body: Mapping[str, Any], allowed: Set[str], what: str) -> None:
    """InvalidInput naming the fields of `body` that `what` does not take, and those it does."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; {what} takes {sorted(allowed)}")
