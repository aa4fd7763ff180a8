"""grpc/wire.py writes ModelStreamInfer replies as bytes by hand: they must be exactly what the
generated classes serialize, for short and long fields (one- and multi-byte lengths), any
number of outputs, empty ids and shapes with large dimensions."""

from __future__ import annotations

import numpy as np
import pytest
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.wire import ReplyWriter


def generated(model: str, version: str, request_id: str,
              outputs: list[tuple[str, np.ndarray]]) -> bytes:
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    for name, array in outputs:
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.astype("<f4").tobytes())
    data: bytes = pb.ModelStreamInferResponse(infer_response=response).SerializeToString()
    return data


RNG = np.random.default_rng(5)


@pytest.mark.parametrize(("model", "request_id", "outputs"), [
    ("m", "", [("output", RNG.normal(size=(1, 1, 1)).astype(np.float32))]),
    ("medium-lstm", "7", [("output", RNG.normal(size=(1, 3, 2)).astype(np.float32)),
                          ("hn", RNG.normal(size=(2, 1, 128)).astype(np.float32)),
                          ("cn", RNG.normal(size=(2, 1, 128)).astype(np.float32))]),
    ("x" * 200, "id-" * 100, [("o" * 130, RNG.normal(size=(1, 300, 1)).astype(np.float32))]),
    ("m", "big", [("output", np.zeros((1, 20000, 1), np.float32))]),
    ("m", "none", []),
])
def test_replies_are_the_generated_bytes(model: str, request_id: str,
                                         outputs: list[tuple[str, np.ndarray]]) -> None:
    writer = ReplyWriter()
    for _ in range(2):  # the second time from the caches
        assert writer.stream_reply(model, "12", request_id, outputs) == generated(
            model, "12", request_id, outputs)


def test_values_are_little_endian_float32_whatever_the_array() -> None:
    """A float64 or non-contiguous array is written as the float32 values it holds."""
    values = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    reply = pb.ModelStreamInferResponse.FromString(
        ReplyWriter().stream_reply("m", "1", "r", [("output", values)]))
    raw = reply.infer_response.raw_output_contents[0]
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(3, 2), values)
    assert list(reply.infer_response.outputs[0].shape) == [3, 2]
