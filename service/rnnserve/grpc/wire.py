"""ModelStreamInfer replies written straight to protobuf bytes: what rnnserve sends a step
(model name, version, request id, each output's name, datatype FP32 and shape, and its values in
`raw_output_contents`) without building message objects per reply.

Building a ModelStreamInferResponse in Python costs a message, a nested message, a tensor
message per output and their serialization for every step; here the parts that repeat (the
model and version fields, each output's metadata for a shape) are encoded once and cached, and
a reply is those parts, the id and the values joined. The bytes are what the generated classes
serialize (tests/grpc/test_grpc_wire.py parses them back and compares), so any gRPC client reads
them as usual."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_LENGTH_DELIMITED = 2
_CACHE_LIMIT = 4096  # cached heads and tensor metadata; cleared past it (a client sending
#                     ever new model names or shapes must not grow memory without bound)


_SMALL = [bytes([n]) for n in range(0x80)]  # one-byte varints: most lengths here


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int) -> bytes:
    return _varint(field << 3 | _LENGTH_DELIMITED)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message, packed repeated)."""
    return tag + _varint(len(payload)) + payload


# field numbers, proto/inference.proto
_NAME, _DATATYPE, _SHAPE = _tag(1), _tag(2), _tag(3)  # InferOutputTensor
_MODEL, _VERSION, _ID, _OUTPUTS, _RAW = _tag(1), _tag(2), _tag(3), _tag(5), _tag(6)  # response
_ERROR, _INFER_RESPONSE = _tag(1), _tag(2)  # ModelStreamInferResponse
_FP32 = _field(_DATATYPE, b"FP32")


class ReplyWriter:
    """Encodes ModelStreamInferResponse bytes; one per servicer (its caches are shared)."""

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], bytes] = {}
        self._tensors: dict[tuple[str, tuple[int, ...]], bytes] = {}

    def _head(self, model: str, version: str) -> bytes:
        head = self._heads.get((model, version))
        if head is None:
            if len(self._heads) >= _CACHE_LIMIT:
                self._heads.clear()
            head = self._heads[model, version] = (
                _field(_MODEL, model.encode()) + _field(_VERSION, version.encode()))
        return head

    def _tensor(self, name: str, shape: tuple[int, ...]) -> bytes:
        tensor = self._tensors.get((name, shape))
        if tensor is None:
            if len(self._tensors) >= _CACHE_LIMIT:
                self._tensors.clear()
            dims = _field(_SHAPE, b"".join(_varint(d) for d in shape)) if shape else b""
            tensor = self._tensors[name, shape] = _field(
                _OUTPUTS, _field(_NAME, name.encode()) + _FP32 + dims)
        return tensor

    def infer_response(self, model: str, version: str, request_id: str,
                       outputs: Iterable[tuple[str, np.ndarray]]) -> bytes:
        """A ModelInferResponse: the outputs, in the order given, as FP32 little-endian."""
        parts = [self._head(model, version)]
        if request_id:
            parts.append(_field(_ID, request_id.encode()))
        values = []
        for name, array in outputs:
            parts.append(self._tensor(name, array.shape))
            values.append(_field(_RAW, np.ascontiguousarray(array, dtype="<f4").tobytes()))
        parts.extend(values)
        return b"".join(parts)

    def stream_reply(self, model: str, version: str, request_id: str,
                     outputs: Iterable[tuple[str, np.ndarray]]) -> bytes:
        """A ModelStreamInferResponse carrying `infer_response(...)`."""
        return _field(_INFER_RESPONSE, self.infer_response(model, version, request_id, outputs))
