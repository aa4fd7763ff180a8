"""The KServe v2 header layout cache (http/v2_codec.py, Layouts): a header laid out as an
earlier one skips its tensor checks, so a header that differs in anything the checks read
(a type, a size, an output's flag, an extra field) must be decoded and checked anew. Each
variant below follows a warmed layout and must decode exactly as the full checks decode it
(with no layout kept), or fail with the same message."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from rnnserve.errors import InvalidInput
from rnnserve.http.v2_codec import LAYOUTS, SEEN_MAX_BYTES, InferCall, decode_request

BASE: dict[str, Any] = {
    "parameters": {"sequence_id": 7, "sequence_start": False},
    "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                "parameters": {"binary_data_size": 12}}],
    "outputs": [{"name": "output", "parameters": {"binary_data": True}}],
}


def variant(path: str, value: Any) -> dict[str, Any]:
    header = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = header
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return header


VARIANTS = [
    ("another sequence", variant("parameters.sequence_id", 8)),
    ("a float in the shape", variant("inputs.0.shape", [1, 1, 3.0])),
    ("a bool in the shape", variant("inputs.0.shape", [1, 1, True])),
    ("a float size", variant("inputs.0.parameters.binary_data_size", 12.0)),
    ("another shape, same bytes", variant("inputs.0.shape", [1, 3, 1])),
    ("another datatype", variant("inputs.0.datatype", "FP64")),
    ("data and binary", variant("inputs.0.data", [1, 2, 3])),
    ("output flag 1", variant("outputs.0.parameters.binary_data", 1)),
    ("output as JSON", variant("outputs.0.parameters.binary_data", False)),
    ("no outputs listed", variant("outputs", None)),
    ("binary_data_output", variant("parameters.binary_data_output", True)),
    ("another input name", variant("inputs.0.name", "x")),
    ("an id", variant("id", "request-1")),
    ("an id that is no string", variant("id", 5)),
]


def decoded(header: dict[str, Any], binary: bytes, cached: bool = True) -> Any:
    """What decoding gives: the call's parts as plain values, or the refusal's message.
    Not `cached`: with no layout kept before or after (the full checks)."""
    head = orjson.dumps(header)
    if not cached:
        LAYOUTS.forget()
    try:
        return described(decode_request(head + binary, str(len(head)), "m", None))
    except InvalidInput as exc:
        return str(exc)
    finally:
        if not cached:
            LAYOUTS.forget()


def described(call: InferCall) -> Any:
    return (call.id, dict(call.request.parameters), call.request.outputs, call.outputs,
            call.binary_output,
            {name: (x.dtype.str, x.shape, x.tobytes()) for name, x in call.request.inputs.items()})


@pytest.mark.parametrize(("what", "header"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_a_changed_header_is_decoded_as_the_checks_decode_it(what: str,
                                                             header: dict[str, Any]) -> None:
    binary = np.arange(3, dtype="<f4").tobytes()
    expected_base = decoded(BASE, binary, cached=False)
    expected = decoded(header, binary, cached=False)
    assert not isinstance(expected_base, str)
    for _ in range(2):  # the base layout is kept ...
        assert decoded(BASE, binary) == expected_base
    assert LAYOUTS._kept
    # ... and the variant, after it (twice: its own layout may be kept too)
    for _ in range(2):
        assert decoded(header, binary) == expected, what


def test_a_body_of_another_length_is_checked_anew() -> None:
    binary = np.arange(3, dtype="<f4").tobytes()
    assert not isinstance(decoded(BASE, binary, cached=True), str)
    assert "belong to no input" in decoded(BASE, binary + b"\0\0\0\0", cached=True)
    assert "binary bytes after the header" in decoded(BASE, binary[:8], cached=True)


def test_the_cache_stays_bounded() -> None:
    binary = np.arange(3, dtype="<f4").tobytes()
    for i in range(LAYOUTS.size * 2):
        decoded(variant("inputs.0.name", f"input{i}"), binary, cached=True)
    assert len(LAYOUTS._kept) <= LAYOUTS.size


def test_a_header_met_again_byte_for_byte_carries_the_new_tensors() -> None:
    LAYOUTS.forget()
    head = orjson.dumps(BASE)
    for i in range(3):  # the first is decoded and checked; the next two are met again
        binary = np.array([i, i + 0.5, -i], dtype="<f4").tobytes()
        call = decode_request(head + binary, str(len(head)), "m", None)
        assert call.request.inputs["input"].tobytes() == binary
        assert dict(call.request.parameters) == BASE["parameters"]
    assert len(LAYOUTS._seen) == 1


def test_long_headers_are_not_kept_whole_and_the_kept_stay_bounded() -> None:
    LAYOUTS.forget()
    binary = np.arange(3, dtype="<f4").tobytes()
    long_one = variant("parameters.note", "x" * SEEN_MAX_BYTES)
    assert not isinstance(decoded(long_one, binary), str)
    assert not LAYOUTS._seen and LAYOUTS._kept  # its layout is kept, its bytes are not
    for i in range(LAYOUTS.headers + 10):
        decoded(variant("parameters.sequence_id", i + 1), binary)
    assert 0 < len(LAYOUTS._seen) <= LAYOUTS.headers
