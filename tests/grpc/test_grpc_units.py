"""The gRPC adapter's pure parts, in process: protobuf <-> numpy conversion, the sequence
parameter rules (those of HTTP v2), the per-sequence ordering of a stream, and the committed
stubs being what the .proto generates."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import InvalidInput
from rnnserve.grpc import converters
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.stream import StreamLanes


def request(x: np.ndarray | None = None, raw: bool = True, **params: Any) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", model_version="2", id="r")
    for key, value in params.items():
        message.parameters[key].CopyFrom(value)
    if x is not None:
        tensor = message.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        if raw:
            message.raw_input_contents.append(x.astype("<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return message


X = np.arange(12, dtype=np.float32).reshape(1, 4, 3)


@pytest.mark.parametrize("raw", [True, False])
def test_decode_raw_and_typed(raw: bool) -> None:
    call = converters.decode_infer_request(request(X, raw))
    assert (call.model, call.version, call.id, call.outputs, call.sequence) == (
        "m", "2", "r", None, None)
    np.testing.assert_array_equal(call.inputs["input"], X)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sequence_id": pb.InferParameter(int64_param=7)}, (7, False, False)),
        ({"sequence_id": pb.InferParameter(uint64_param=2**64 - 1),
          "sequence_start": pb.InferParameter(bool_param=True)}, (2**64 - 1, True, False)),
        ({"sequence_id": pb.InferParameter(string_param="a"),
          "sequence_end": pb.InferParameter(bool_param=True)}, ("a", False, True)),
        ({"sequence_id": pb.InferParameter(int64_param=0)}, None),
        ({"sequence_id": pb.InferParameter(string_param="")}, None),
        ({"priority": pb.InferParameter(uint64_param=3)}, None),
    ],
)
def test_sequence_parameters(params: dict[str, pb.InferParameter], expected: Any) -> None:
    assert converters.decode_infer_request(request(X, **params)).sequence == expected


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"sequence_id": pb.InferParameter(bool_param=True)}, "not bool"),
        ({"sequence_id": pb.InferParameter(double_param=1.5)}, "not float"),
        ({"sequence_id": pb.InferParameter(int64_param=-3)}, "out of range"),
        ({"sequence_id": pb.InferParameter(int64_param=3),
          "sequence_start": pb.InferParameter(string_param="yes")},
         "sequence_start must be true or false"),
        ({"sequence_start": pb.InferParameter(bool_param=True)}, "without a sequence_id"),
    ],
)
def test_bad_sequence_parameters(params: dict[str, pb.InferParameter], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        converters.decode_infer_request(request(X, **params))


def test_bad_tensors() -> None:
    def fails(message: pb.ModelInferRequest, fragment: str) -> None:
        with pytest.raises(InvalidInput, match=fragment):
            converters.decode_infer_request(message)

    fails(request(), "has no inputs")
    short = request(X)
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    fails(short, r"holds 44 bytes; shape \[1, 4, 3\] of FP32 needs 48")
    extra = request(X)
    extra.raw_input_contents.append(b"")
    fails(extra, "raw_input_contents has 2 entries for 1 inputs")
    twice = request(X)
    twice.inputs.append(twice.inputs[0])
    twice.raw_input_contents.append(twice.raw_input_contents[0])
    fails(twice, "appears twice")
    both = request(X)
    both.inputs[0].contents.fp32_contents.append(1.0)
    fails(both, "both contents and raw_input_contents")
    empty = request(X, raw=False)
    empty.inputs[0].contents.Clear()
    fails(empty, "has no data")
    typed = request(X)
    typed.inputs[0].datatype = "FP64"
    fails(typed, "has datatype FP64; this model takes FP32")
    typed.inputs[0].datatype = "FLOAT"
    fails(typed, "unknown datatype 'FLOAT'")
    negative = request(X)
    negative.inputs[0].shape[0] = -1
    fails(negative, "shape must be a list of non-negative integers")


def test_encode_raw_outputs_in_requested_order() -> None:
    call = converters.decode_infer_request(request(X))
    results = {"output": np.ones((1, 4, 1), np.float32), "hn": np.zeros((2, 1, 8), np.float64)}
    response = converters.encode_infer_response("m", 2, call, results, ("output", "hn"))
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "r")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("output", "FP32", [1, 4, 1]), ("hn", "FP32", [2, 1, 8])]
    assert [len(b) for b in response.raw_output_contents] == [16, 64]
    wanted = request(X)
    wanted.outputs.add(name="hn")
    subset = converters.encode_infer_response(
        "m", 2, converters.decode_infer_request(wanted), results, ("output", "hn"))
    assert [o.name for o in subset.outputs] == ["hn"] and len(subset.raw_output_contents) == 1


def test_sequence_key() -> None:
    assert converters.sequence_key(request(X)) is None
    seven = converters.sequence_key(request(X, sequence_id=pb.InferParameter(int64_param=7)))
    also = converters.sequence_key(request(X, sequence_id=pb.InferParameter(uint64_param=7)))
    text = converters.sequence_key(request(X, sequence_id=pb.InferParameter(string_param="7")))
    assert seven == also != text


async def run_lanes(items: list[Any], key_of: Any, window: int, delay: Any
                    ) -> tuple[list[Any], int]:
    """Items through StreamLanes whose `start` answers each after `delay()` seconds (a timer,
    as a batch's completion calls back): the replies in the order written, and the most
    items that ran at once."""
    loop = asyncio.get_running_loop()
    running, most, written = 0, 0, []

    async def source() -> AsyncIterator[Any]:
        for item in items:
            yield item

    def start(item: Any, key: Any) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)

        def done() -> None:
            nonlocal running
            running -= 1
            lanes.finish(key, item)
        loop.call_later(delay(), done)

    async def write(reply: Any) -> None:
        await asyncio.sleep(0)  # a write yields, as grpc's does
        written.append(reply)

    lanes: StreamLanes[Any, Any] = StreamLanes(start, key_of, window)
    await lanes.run(source(), write)
    return written, most


async def test_lanes_keep_order_per_key_and_run_keys_concurrently() -> None:
    """Random delays: each key's items are answered in sending order, keys overlap, and at
    most `window` items are in flight."""
    items = [(key, n) for n in range(20) for key in "abcdef"]
    out, most = await run_lanes(items, lambda item: item[0], 8, lambda: random.random() / 500)
    assert sorted(out) == sorted(items)
    for key in "abcdef":
        assert [n for k, n in out if k == key] == list(range(20))
    assert 1 < most <= 6  # concurrent across keys, never two of one key


async def test_lanes_without_keys_are_bounded_by_the_window() -> None:
    out, most = await run_lanes(list(range(50)), lambda _: None, 5, lambda: 0.001)
    assert sorted(out) == list(range(50)) and most == 5


async def test_lanes_answer_an_item_answered_at_once_and_go_on() -> None:
    """A start that answers at once (an error reply, a revoked key) inside the reader's own
    call: the key's later items still run, in order, and the stream ends when all are out."""
    items = [("k", n) for n in range(300)]  # more than a window of one key, all immediate
    written: list[Any] = []

    async def source() -> AsyncIterator[Any]:
        for item in items:
            yield item

    def start(item: Any, key: Any) -> None:
        lanes.finish(key, item)

    async def write(reply: Any) -> None:
        written.append(reply)

    lanes: StreamLanes[Any, Any] = StreamLanes(start, lambda item: item[0], 256)
    await asyncio.wait_for(lanes.run(source(), write), 10)
    assert written == items


async def test_lanes_raise_the_request_streams_error() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        raise ConnectionError("client gone")

    async def write(reply: Any) -> None:
        pass

    lanes: StreamLanes[Any, Any] = StreamLanes(lambda item, key: lanes.finish(key, item),
                                               lambda _: None, 4)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(lanes.run(source(), write), 10)


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    """The committed stubs describe proto/*.proto as they are now (compared by their
    descriptor, so that another grpcio-tools version's formatting does not matter)."""
    pytest.importorskip("grpc_tools")
    import importlib.util

    from rnnserve.grpc.generate import generate
    from rnnserve.grpc.generated import health_pb2

    generate(tmp_path)
    for name, committed in (("inference_pb2", pb), ("health_pb2", health_pb2)):
        spec = importlib.util.spec_from_file_location(f"fresh_{name}", tmp_path / f"{name}.py")
        assert spec is not None and spec.loader is not None
        fresh = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fresh)  # loads into a private pool of its own: no clash
        assert fresh.DESCRIPTOR.serialized_pb == committed.DESCRIPTOR.serialized_pb, (
            f"service/rnnserve/grpc/generated/{name}.py is stale: "
            "run python -m rnnserve.grpc.generate")


class FakeEngine:
    ready = True


async def test_health_follows_readiness() -> None:
    from rnnserve.grpc.generated import health_pb2
    from rnnserve.grpc.health import HealthServicer

    engine = FakeEngine()
    checks = HealthServicer(engine, ("inference.GRPCInferenceService",))  # type: ignore[arg-type]
    ask = health_pb2.HealthCheckRequest
    serving, not_serving = (health_pb2.HealthCheckResponse.SERVING,
                            health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await checks.Check(ask(service=""), None)).status == serving
    engine.ready = False  # e.g. draining at shutdown
    assert (await checks.Check(ask(service="inference.GRPCInferenceService"), None)
            ).status == not_serving


async def test_port_in_use_is_an_error(tmp_path: Path) -> None:
    import socket

    from rnnserve.engine import Engine
    from rnnserve.grpc.server import start_grpc_server
    from rnnserve.settings import Settings

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = Settings(models=tmp_path, grpc_port=busy.getsockname()[1])
        with pytest.raises(RuntimeError, match="is the port in use"):
            await start_grpc_server(Engine(settings), settings)
