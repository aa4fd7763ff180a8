"""KServe v2 / Open Inference Protocol request and response bodies, with Triton's binary
tensor data extension: the JSON header, then raw little-endian tensors in the order the
header lists them, split at `Inference-Header-Content-Length`.

The data plane's rules (datatypes, outputs, sequences) are the engine's (engine/v2.py); this
module only reads and writes the HTTP bodies."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rnnserve.engine import V2Request, V2Response, check_datatype, check_request_id, check_shape
from rnnserve.errors import InvalidInput
from rnnserve.http.body import parse_json
from rnnserve.http.json_arrays import to_float32
from rnnserve.whole_numbers import whole_number


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferCall:
    """A decoded v2 infer request: the data plane's request, and how to answer it."""

    request: V2Request
    id: str | None
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool  # default for outputs not listed (request-level binary_data_output)
    seen: Seen | None = None  # its short JSON header's decoding, when LAYOUTS keeps it


@dataclass(frozen=True)
class Layout:
    """What a header's tensors decode to, apart from the bytes: each binary input's name,
    shape and place in the body, and the requested outputs (shared by the calls of this
    layout: read, never changed)."""

    tensors: tuple[tuple[str, tuple[int, ...], int, int], ...]
    outputs: list[RequestedOutput] | None
    names: list[str] | None
    binary_output: bool


class Layouts:
    """The layouts of recent headers. A sequence's clients send one header layout again and
    again, the sequence id and flags apart (tritonclient builds it the same way each time),
    and checking its tensors cost more server CPU than parsing it. The key is the header's
    tensors, requested outputs and binary_data_output written back as JSON by orjson, which
    keeps every type (8 and 8.0, 1 and true are different keys), with the binary part's
    length: two headers with one key decode alike, so a hit is the decoding the checks would
    give. Only headers whose inputs are all binary are kept (JSON data differs each time);
    at most `size`, forgotten all at once when full."""

    def __init__(self, size: int = 256, headers: int = 4096) -> None:
        self.size = size
        self._kept: dict[bytes, Layout] = {}
        self.headers = headers
        self._seen: dict[tuple[bytes, int], Seen] = {}

    def forget(self) -> None:
        """Forget every layout and header (as if none came yet)."""
        self._kept.clear()
        self._seen.clear()

    def seen(self, raw: bytes, binary_bytes: int) -> Seen | None:
        """A header met before, byte for byte, with as many binary bytes after it: its layout,
        parameters and id, as they were decoded then (a sequence's steps repeat their header
        exactly: the sequence id is the same on each)."""
        return self._seen.get((raw, binary_bytes))

    def see(self, raw: bytes, binary_bytes: int, seen: Seen) -> Seen | None:
        """Keep (and return) what a short header decoded to (at most SEEN_MAX_BYTES: they are
        kept whole; forgotten all at once when full); None for a longer one."""
        if len(raw) > SEEN_MAX_BYTES:
            return None
        if len(self._seen) >= self.headers:
            self._seen.clear()
        self._seen[(raw, binary_bytes)] = seen
        return seen

    def key(self, header: dict[str, Any], parameters: dict[str, Any],
            binary_bytes: int) -> bytes | None:
        """The header's layout key; None when some input is not binary (not kept)."""
        inputs = header.get("inputs")
        if not isinstance(inputs, list) or not all(
                isinstance(tensor, dict) and isinstance(tensor.get("parameters"), dict)
                and tensor["parameters"].get("binary_data_size") is not None
                for tensor in inputs):  # (a null size is no size: the data is in "data")
            return None
        try:
            return orjson.dumps((inputs, header.get("outputs"),
                                 parameters.get("binary_data_output"), binary_bytes))
        except orjson.JSONEncodeError:  # (an integer past 64 bits: the checks refuse it)
            return None

    def get(self, key: bytes | None) -> Layout | None:
        return None if key is None else self._kept.get(key)

    def keep(self, key: bytes | None, call: InferCall) -> Layout | None:
        """Keep (and return) the layout of a call decoded from a header with that key (its
        inputs are the body's binary part, in order); None without a key."""
        if key is None:
            return None
        tensors = []
        start = 0
        for name, x in call.request.inputs.items():
            tensors.append((name, x.shape, start, start + x.nbytes))
            start += x.nbytes
        if len(self._kept) >= self.size:
            self._kept.clear()
        layout = self._kept[key] = Layout(tuple(tensors), call.outputs, call.request.outputs,
                                          call.binary_output)
        return layout


SEEN_MAX_BYTES = 1024
"""The longest JSON header whose decoding is kept by its bytes (Layouts.see)."""

Seen = tuple[Layout, dict[str, Any], Any]
"""What a header decoded to: its layout, its parameters (read, never changed) and its id."""

LAYOUTS = Layouts()
"""The process's header layouts (decode_request)."""


def _binary_flag(parameters: Any, key: str, default: bool) -> bool:
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise InvalidInput("parameters must be a JSON object")
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"parameter {key!r} must be true or false")
    return value


def decode_request(body: bytes, header_length: str | None, model: str,
                   version: str | None) -> InferCall:
    """Parse the JSON header and attach binary tensor data where `binary_data_size` says.
    A header whose tensors are laid out as an earlier request's (LAYOUTS) skips their
    checks: only its id and parameters (the sequence's) are read anew; a short header met
    before byte for byte (a sequence's next step) is not parsed again."""
    if header_length is not None:
        split = whole_number(header_length)
        if split is None or not 0 < split <= len(body):
            raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} must be the "
                               f"byte length of the JSON header, 1 to the body's {len(body)} "
                               "bytes")
        raw, binary = body[:split], memoryview(body)[split:]
        seen = LAYOUTS.seen(raw, len(binary))
        if seen is not None:
            call = laid_out(seen, binary, model, version)
            call.seen = seen
            return call
        header = parse_json(raw)
    else:
        raw = b""
        try:
            header, binary = parse_json(body), memoryview(b"")
        except InvalidInput as exc:
            raise InvalidInput(f"{exc.message}; a body with binary tensors after its JSON "
                               "header needs the Inference-Header-Content-Length header (the "
                               "JSON header's byte length)") from None
    if not isinstance(header, dict):
        raise InvalidInput("the infer request must be a JSON object with an \"inputs\" list")
    request_id = header.get("id")
    check_request_id(request_id)
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InvalidInput('"parameters" must be a JSON object')
    key = LAYOUTS.key(header, parameters, len(binary))
    layout = LAYOUTS.get(key)
    if layout is None:
        call = _decoded(header, parameters, binary, model, version)
        layout = LAYOUTS.keep(key, call)
        if layout is not None and raw:
            call.seen = LAYOUTS.see(raw, len(binary), (layout, parameters, request_id))
        return call
    seen = (layout, parameters, request_id)
    call = laid_out(seen, binary, model, version)
    if raw:
        call.seen = LAYOUTS.see(raw, len(binary), seen)
    return call


def laid_out(seen: Seen, binary: memoryview, model: str, version: str | None) -> InferCall:
    """A call whose header decodes as a known layout: only its tensors are read anew."""
    layout, parameters, request_id = seen
    inputs = {name: np.frombuffer(binary[start:end], dtype="<f4").reshape(shape)
              for name, shape, start, end in layout.tensors}
    return InferCall(V2Request(model, version, inputs, parameters, layout.names), request_id,
                     layout.outputs, layout.binary_output)


def _decoded(header: dict[str, Any], parameters: dict[str, Any], binary: memoryview,
             model: str, version: str | None) -> InferCall:
    """The whole decoding and every check of a header's tensors and requested outputs."""
    request_id = header.get("id")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput('"inputs" must be a non-empty list of tensors '
                           '{"name", "shape", "datatype", "data"}')

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for position, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise InvalidInput(f"inputs[{position}] must be an object with a string \"name\"")
        name = tensor["name"]
        if name in inputs:
            raise InvalidInput(f"input {name!r} appears twice")
        shape = check_shape(tensor.get("shape"), f"input {name!r}")
        check_datatype(name, tensor.get("datatype"))
        count = math.prod(shape)
        tensor_params = tensor.get("parameters") or {}
        if not isinstance(tensor_params, dict):
            raise InvalidInput(f"input {name!r}: parameters must be a JSON object")
        size = tensor_params.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise InvalidInput(f"input {name!r} has both binary_data_size and data")
            if not isinstance(size, int) or isinstance(size, bool) or size != count * 4:
                raise InvalidInput(f"input {name!r}: binary_data_size {size!r} does not match "
                                   f"shape {shape} of FP32 ({count * 4} bytes)")
            if offset + size > len(binary):
                raise InvalidInput(f"input {name!r}: the body holds {len(binary) - offset} "
                                   f"binary bytes after the header, {size} are needed")
            chunk = binary[offset : offset + size]
            offset += size
            inputs[name] = np.frombuffer(chunk, dtype="<f4").reshape(shape)
        else:
            if "data" not in tensor:
                raise InvalidInput(f"input {name!r} has no data: give \"data\" or binary data "
                                   "with the binary_data_size parameter")
            data = to_float32(tensor["data"], f"input {name!r} data")
            if data.size != count:
                raise InvalidInput(f"input {name!r} has {data.size} values; shape {shape} "
                                   f"needs {count}")
            inputs[name] = data.reshape(shape)
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} bytes of binary data after the header "
                           "belong to no input (check binary_data_size)")

    binary_output = _binary_flag(parameters, "binary_data_output", False)
    outputs: list[RequestedOutput] | None = None
    raw_outputs = header.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InvalidInput('"outputs" must be a list of {"name": ...}')
        outputs = []
        for item in raw_outputs:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise InvalidInput('each requested output must be an object with a "name"')
            as_binary = _binary_flag(item.get("parameters"), "binary_data", binary_output)
            outputs.append(RequestedOutput(item["name"], as_binary))
    names = None if outputs is None else [o.name for o in outputs]
    return InferCall(V2Request(model, version, inputs, parameters, names), request_id, outputs,
                     binary_output)


def encode_response(call: InferCall, answer: V2Response) -> tuple[bytes, int | None]:
    """The response body and, when any tensor travels as binary, the JSON header's length."""
    binary = ({o.name: o.binary for o in call.outputs} if call.outputs
              else dict.fromkeys(answer.outputs, call.binary_output))
    header: dict[str, Any] = {"model_name": answer.model, "model_version": str(answer.version)}
    if call.id is not None:
        header["id"] = call.id
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, value in answer.outputs.items():
        arr = np.ascontiguousarray(value, dtype="<f4")
        tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary[name]:
            blob = arr.tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = arr.ravel()
        tensors.append(tensor)
    header["outputs"] = tensors
    head = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
