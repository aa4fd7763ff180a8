"""Messages a fuzzer found answered INTERNAL, UNKNOWN or not at all get the clear status of any
bad input (INVALID_ARGUMENT, NOT_FOUND), the sequence they name is not stepped, and a stream
goes on after one: a shape numpy refuses, a version of 5,000 digits, bytes that are no
protobuf, a request id longer than a reply may carry, names echoed past the metadata limit,
repeated outputs, contents of two types, a parameter with no value, a later step naming an
unknown model or version. A real server; the sequence's step count read over HTTP."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from rnnserve.grpc.errors import MAX_MESSAGE_BYTES
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc

from tests.conftest import ServerProcess, serving
from tests.grpc.test_grpc_stream_steps import MODEL, request

X = np.random.default_rng(5).standard_normal((1, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)], tmp_path_factory.mktemp("grpc-bad") / "log",
                 grpc=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_url) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> inference_pb2_grpc.GRPCInferenceServiceStub:
    return inference_pb2_grpc.GRPCInferenceServiceStub(channel)


def refused(call: object, message: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(message, timeout=20)  # type: ignore[operator]
    return caught.value


def steps(server: ServerProcess, sequence_id: int) -> int:
    r = httpx.get(f"{server.url}/v1/sessions/v2.{MODEL}.n.{sequence_id}", timeout=10)
    assert r.status_code == 200, r.text
    return int(r.json()["steps"])


def started(stub: inference_pb2_grpc.GRPCInferenceServiceStub, sequence_id: int) -> None:
    stub.ModelInfer(request(X, sequence_id, start=True), timeout=20)


def test_shapes_numpy_refuses_are_invalid_argument(
        stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    for shape, raw, fragment in (([0, 2**62, 3], b"", "describes more than"),
                                 ([2**31 - 1, 2**31 - 1, 0], b"", "describes more than"),
                                 ([1] * 65, b"\0" * 4, "65 dimensions")):
        message = pb.ModelInferRequest(model_name=MODEL)
        message.inputs.add(name="input", datatype="FP32", shape=shape)
        message.raw_input_contents.append(raw)
        error = refused(stub.ModelInfer, message)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert fragment in error.details()


def test_a_version_of_thousands_of_digits_is_not_found(
        stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    message = request(X, 0)
    del message.parameters["sequence_id"]
    message.model_version = "9" * 5000
    error = refused(stub.ModelInfer, message)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    error = refused(stub.ModelMetadata, pb.ModelMetadataRequest(name=MODEL, version="9" * 5000))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    ready = stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="9" * 5000), timeout=20)
    assert ready.ready is False


def test_bytes_that_are_no_protobuf_are_invalid_argument(channel: grpc.Channel) -> None:
    raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                              request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
    error = refused(raw, b"\xff" * 10)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid inference.ModelInferRequest" in error.details()


def test_a_stream_answers_bad_bytes_in_band_and_every_step_before_and_after(
        server: ServerProcess, channel: grpc.Channel,
        stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    started(stub, 71)
    sent: queue.Queue[bytes | None] = queue.Queue()
    for i in range(3):
        sent.put(request(X, 71, f"m{i}", step_id=f"s{i}").SerializeToString())
    sent.put(b"\xff" * 10)
    sent.put(request(X, 71, "m3", step_id="s3").SerializeToString())
    sent.put(None)
    call = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                 request_serializer=lambda b: b,
                                 response_deserializer=pb.ModelStreamInferResponse.FromString)
    replies = list(call(iter(sent.get, None), timeout=30))  # ends OK: no RpcError
    answered = sorted(r.infer_response.id for r in replies if not r.error_message)
    errors = [r.error_message for r in replies if r.error_message]
    assert answered == ["m0", "m1", "m2", "m3"]
    assert len(errors) == 1 and "not a valid inference.ModelInferRequest" in errors[0]
    assert steps(server, 71) == 5  # the start and the four steps, each once


def test_a_request_id_longer_than_a_reply_may_carry_is_refused_before_the_step(
        server: ServerProcess, stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    started(stub, 72)
    error = refused(stub.ModelInfer, request(X, 72, "i" * 2000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2000 characters; the most is 1024" in error.details()
    replies = list(stub.ModelStreamInfer(iter([request(X, 72, "i" * 2000)]), timeout=20))
    assert len(replies) == 1 and "the most is 1024" in replies[0].error_message
    assert replies[0].infer_response.id == ""  # not echoed: the reply must fit
    assert steps(server, 72) == 1  # the start only
    stub.ModelInfer(request(X, 72, "i" * 1024), timeout=20)
    assert steps(server, 72) == 2


def test_status_messages_are_cut_to_fit_the_metadata_limit(
        stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    error = refused(stub.ModelMetadata, pb.ModelMetadataRequest(name="m" * 20000))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # not the client's RESOURCE_EXHAUSTED
    assert "unknown model 'mmm" in error.details()
    assert "message cut" in error.details()
    assert len(error.details().encode()) <= MAX_MESSAGE_BYTES


def test_repeated_outputs_typed_contents_of_two_kinds_and_empty_parameters_are_refused(
        server: ServerProcess, stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    started(stub, 73)
    twice = request(X, 73, outputs=("output", "output"))
    error = refused(stub.ModelInfer, twice)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "['output'] requested more than once" in error.details()
    streamed = list(stub.ModelStreamInfer(iter([twice]), timeout=20))
    assert "requested more than once" in streamed[0].error_message

    typed = pb.ModelInferRequest(model_name=MODEL)
    tensor = typed.inputs.add(name="input", datatype="FP32", shape=[1, 1, 3])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    tensor.contents.int64_contents.extend([1])
    error = refused(stub.ModelInfer, typed)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "int64_contents" in error.details()

    empty = request(X, 73)
    empty.parameters["sequence_id"].Clear()
    error = refused(stub.ModelInfer, empty)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameter 'sequence_id' has no value" in error.details()
    assert steps(server, 73) == 1  # none of them stepped it


def test_a_later_step_naming_an_unknown_model_or_version_is_not_found(
        server: ServerProcess, stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
    started(stub, 74)
    unknown = request(X, 74)
    unknown.model_name = "no-such-model"
    error = refused(stub.ModelInfer, unknown)
    assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()
    for version in ("x", "7"):
        message = request(X, 74)
        message.model_version = version
        error = refused(stub.ModelInfer, message)
        assert error.code() == grpc.StatusCode.NOT_FOUND, (version, error.details())
    other = request(X, 74)
    other.model_version = "1"  # a version the model has, not the sequence's (the latest, 2)
    error = refused(stub.ModelInfer, other)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "runs on version 2, not 1" in error.details()
    padded = request(X, 74)
    padded.model_version = "02"  # version 2, written with a zero: the sequence's own
    stub.ModelInfer(padded, timeout=20)
    assert steps(server, 74) == 2


def test_the_health_service_refuses_bytes_that_are_no_protobuf(
        server: ServerProcess, channel: grpc.Channel) -> None:
    """The health service needs no key: what it cannot parse is INVALID_ARGUMENT, with no
    error in the server log (grpc's own answer was UNKNOWN and a logged traceback)."""
    from rnnserve.grpc.generated import health_pb2, health_pb2_grpc

    for method, streaming in (("Check", False), ("List", False), ("Watch", True)):
        path = f"/grpc.health.v1.Health/{method}"
        call = (channel.unary_stream if streaming else channel.unary_unary)(
            path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as caught:
            answer = call(b"\xff" * 10, timeout=20)
            if streaming:
                next(iter(answer))  # type: ignore[call-overload]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, caught.value)
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=20).status == 1
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="s" * 20000), timeout=20)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # its message fits the metadata
    assert "Exception deserializing" not in server.log()


def test_the_reflection_service_answers_bytes_that_are_no_protobuf_in_band(
        server: ServerProcess, channel: grpc.Channel) -> None:
    """Reflection needs no key: a stream message it cannot parse gets an error response (as a
    request of no known kind does) and the stream goes on, with no error in the server log
    (grpc's own answer ended the stream with UNKNOWN and a logged traceback)."""
    from grpc_reflection.v1alpha import reflection_pb2

    call = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    listing = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    replies = [reflection_pb2.ServerReflectionResponse.FromString(b)
               for b in call(iter([b"\xff" * 10, listing]), timeout=20)]
    assert len(replies) == 2, replies
    assert replies[0].error_response.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "ServerReflectionRequest" in replies[0].error_response.error_message
    assert "inference.GRPCInferenceService" in {
        s.name for s in replies[1].list_services_response.service}
    assert "Exception deserializing" not in server.log()
