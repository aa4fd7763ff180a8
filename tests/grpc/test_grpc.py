"""The gRPC adapter end to end: a real server process, the real tritonclient.grpc, grpcio's
health and reflection clients, and rnnserve's own stubs. Every result is checked against the
native HTTP prediction of the same data, every error against the HTTP v2 error."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from rnnserve.grpc.generated import health_pb2, health_pb2_grpc, inference_pb2_grpc
from rnnserve.grpc.generated import inference_pb2 as pb
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, serving

RNG = np.random.default_rng(23)
SERVICE = "inference.GRPCInferenceService"


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    # more total timesteps than the default, so that a valid request can exceed grpcio's 4 MiB
    with serving(["--models", str(tiny_repo), "--max-total-timesteps", "500000"],
                 tmp_path_factory.mktemp("grpc") / "log", grpc=True) as proc:
        yield proc


def make_input(x: np.ndarray, name: str = "input", datatype: str = "FP32"
               ) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def native(server: ServerProcess, model: str, seqs: list[np.ndarray], version: int | None = None
           ) -> list[np.ndarray]:
    """POST /v1/models/{m}/predict: one output array per sequence."""
    params = {"version": str(version)} if version else None
    r = httpx.post(f"{server.url}/v1/models/{model}/predict", params=params,
                   json={"inputs": [s.tolist() for s in seqs]})
    assert r.status_code == 200, r.text
    return [np.asarray(o, np.float32) for o in r.json()["outputs"]]


def v2_http_error(server: ServerProcess, model: str, tensors: list[dict[str, Any]]
                  ) -> tuple[int, str]:
    r = httpx.post(f"{server.url}/v2/models/{model}/infer", json={"inputs": tensors})
    return r.status_code, r.json()["error"]


def grpc_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


# -- health, readiness, metadata ----------------------------------------------------------------


def test_live_and_ready(triton: grpcclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("tiny-lstm")
    assert triton.is_model_ready("tiny-lstm", "1")
    assert not triton.is_model_ready("tiny-lstm", "9")
    assert not triton.is_model_ready("no-such-model")


def test_server_metadata(triton: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    meta = triton.get_server_metadata(as_json=True)
    http = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == http["name"] == "rnnserve"
    assert meta["version"] == http["version"]
    assert {"sequence", "sequence(string_id)"} <= set(meta["extensions"])


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "renamed-gru"])
def test_model_metadata_equals_http(triton: grpcclient.InferenceServerClient, server: ServerProcess,
                                    model: str) -> None:
    meta = triton.get_model_metadata(model, as_json=True)
    http = httpx.get(f"{server.url}/v2/models/{model}").json()
    for tensors in (meta["inputs"], meta["outputs"]):
        for tensor in tensors:
            tensor["shape"] = [int(d) for d in tensor["shape"]]  # int64 travels as JSON strings
    assert meta == http


def test_model_metadata_of_unknown_model(triton: grpcclient.InferenceServerClient,
                                         server: ServerProcess) -> None:
    err = grpc_error(lambda: triton.get_model_metadata("no-such-model"))
    http = httpx.get(f"{server.url}/v2/models/no-such-model")
    assert err.status() == "StatusCode.NOT_FOUND"
    assert http.status_code == 404 and err.message() == http.json()["error"]


def test_health_checking(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        listed = stub.List(health_pb2.HealthListRequest(), timeout=5).statuses
        assert {name: s.status for name, s in listed.items()} == {
            "": health_pb2.HealthCheckResponse.SERVING,
            SERVICE: health_pb2.HealthCheckResponse.SERVING}
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_reflection_describes_the_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert SERVICE in set(database.get_services())
        service = DescriptorPool(database).FindServiceByName(SERVICE)
        methods = {m.name: m for m in service.methods}
        assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer", "ModelStreamInfer"} <= set(methods)
        stream = methods["ModelStreamInfer"]
        assert stream.client_streaming and stream.server_streaming
        request = methods["ModelInfer"].input_type
        assert request.fields_by_name["raw_input_contents"].number == 7
        assert stream.output_type.fields_by_name["error_message"].number == 1


# -- stateless inference ------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "tiny-rnn"])
def test_infer_equals_native_predict(triton: grpcclient.InferenceServerClient,
                                     server: ServerProcess, model: str) -> None:
    x = RNG.normal(size=(3, 7, 3)).astype(np.float32)
    result = triton.infer(model, [make_input(x)], request_id="req-1")
    np.testing.assert_allclose(result.as_numpy("output"), np.stack(native(server, model, list(x))),
                               atol=1e-5)
    assert result.as_numpy("hn").shape == (2, 3, 8)
    response = result.get_response()
    assert (response.model_name, response.id) == (model, "req-1")
    assert response.model_version in ("1", "2")


def test_versions(triton: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    x = RNG.normal(size=(1, 5, 3)).astype(np.float32)
    for version in (1, 2):
        result = triton.infer("tiny-lstm", [make_input(x)], model_version=str(version))
        assert result.get_response().model_version == str(version)
        np.testing.assert_allclose(result.as_numpy("output")[0],
                                   native(server, "tiny-lstm", [x[0]], version)[0], atol=1e-5)


def test_requested_outputs_subset(triton: grpcclient.InferenceServerClient) -> None:
    x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    full = triton.infer("tiny-lstm", [make_input(x)])
    only = triton.infer("tiny-lstm", [make_input(x)],
                        outputs=[grpcclient.InferRequestedOutput("cn"),
                                 grpcclient.InferRequestedOutput("output")])
    assert [o.name for o in only.get_response().outputs] == ["cn", "output"]
    assert only.as_numpy("hn") is None
    np.testing.assert_array_equal(only.as_numpy("cn"), full.as_numpy("cn"))
    np.testing.assert_array_equal(only.as_numpy("output"), full.as_numpy("output"))


def test_explicit_state_inputs(triton: grpcclient.InferenceServerClient,
                               server: ServerProcess) -> None:
    seq = RNG.normal(size=(6, 3)).astype(np.float32)
    first = triton.infer("tiny-gru", [make_input(seq[None, :4])])
    second = triton.infer("tiny-gru", [make_input(seq[None, 4:]),
                                       make_input(first.as_numpy("hn"), "h0")])
    got = np.concatenate([first.as_numpy("output")[0], second.as_numpy("output")[0]])
    np.testing.assert_allclose(got, native(server, "tiny-gru", [seq])[0], atol=1e-5)


def test_messages_above_grpcio_default_limit(triton: grpcclient.InferenceServerClient,
                                             server: ServerProcess) -> None:
    x = RNG.normal(size=(100, 4000, 3)).astype(np.float32)  # 4.8 MB > grpcio's 4 MiB
    result = triton.infer("tiny-gru", [make_input(x)])
    assert result.as_numpy("output").shape == (100, 4000, 1)
    np.testing.assert_allclose(result.as_numpy("output")[7],
                               native(server, "tiny-gru", [x[7]])[0], atol=1e-5)
    big = np.zeros((1, 1_500_000, 3), np.float32)  # 18 MB > max_body_bytes (16 MiB)
    err = grpc_error(lambda: triton.infer("tiny-gru", [make_input(big)]))
    assert err.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_typed_fp32_contents(server: ServerProcess) -> None:
    """contents.fp32_contents instead of raw bytes, through rnnserve's own stubs."""
    import asyncio

    x = RNG.normal(size=(2, 5, 3)).astype(np.float32)

    def request(values: list[float]) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(model_name="tiny-rnn", id="typed")
        tensor = message.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(values)
        return message

    async def call() -> tuple[pb.ModelInferResponse, grpc.aio.AioRpcError]:
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
            good = await stub.ModelInfer(request(x.ravel().tolist()), timeout=10)
            try:
                await stub.ModelInfer(request(x.ravel().tolist()[:-1]), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return good, exc
            raise AssertionError("a short fp32_contents was accepted")

    good, bad = asyncio.run(call())
    assert good.id == "typed" and [o.name for o in good.outputs] == ["output", "hn"]
    assert list(good.outputs[0].shape) == [2, 5, 1]
    y = np.frombuffer(good.raw_output_contents[0], "<f4").reshape(2, 5, 1)
    np.testing.assert_allclose(y, np.stack(native(server, "tiny-rnn", list(x))), atol=1e-5)
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has 29 values; shape [2, 5, 3] needs 30" in (bad.details() or "")


# -- errors: the same status and message as HTTP v2 ---------------------------------------------


def test_unknown_model_is_not_found(triton: grpcclient.InferenceServerClient,
                                    server: ServerProcess) -> None:
    x = np.zeros((1, 2, 3), np.float32)
    err = grpc_error(lambda: triton.infer("no-such-model", [make_input(x)]))
    status, message = v2_http_error(server, "no-such-model", [
        {"name": "input", "shape": [1, 2, 3], "datatype": "FP32", "data": [0] * 6}])
    assert err.status() == "StatusCode.NOT_FOUND" and status == 404
    assert err.message() == message


@pytest.mark.parametrize(
    ("x", "name", "datatype", "code", "http_status"),
    [
        (np.zeros((1, 5, 4), np.float32), "input", "FP32", "INVALID_ARGUMENT", 400),  # features
        (np.zeros((5, 3), np.float32), "input", "FP32", "INVALID_ARGUMENT", 400),  # no batch
        (np.zeros((1, 2, 3), np.int32), "input", "INT32", "INVALID_ARGUMENT", 400),  # datatype
        (np.zeros((1, 2, 3), np.float32), "x", "FP32", "INVALID_ARGUMENT", 400),  # unknown input
        (np.zeros((1, 10_001, 3), np.float32), "input", "FP32", "RESOURCE_EXHAUSTED", 413),
    ],
)
def test_bad_input_same_as_http(triton: grpcclient.InferenceServerClient, server: ServerProcess,
                                x: np.ndarray, name: str, datatype: str, code: str,
                                http_status: int) -> None:
    err = grpc_error(lambda: triton.infer("tiny-lstm", [make_input(x, name, datatype)]))
    status, message = v2_http_error(server, "tiny-lstm", [
        {"name": name, "shape": list(x.shape), "datatype": datatype,
         "data": x.ravel().tolist()}])
    assert err.status() == f"StatusCode.{code}"
    assert status == http_status and err.message() == message


def test_nan_input(triton: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 3, 3), np.float32)
    x[0, 1, 2] = np.nan  # JSON cannot carry NaN, so there is no HTTP twin to compare with
    err = grpc_error(lambda: triton.infer("tiny-lstm", [make_input(x)]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.message().startswith("input[0, 1, 2] is nan: values must be finite")


def test_unknown_requested_output(triton: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 2, 3), np.float32)
    err = grpc_error(lambda: triton.infer("tiny-gru", [make_input(x)],
                                          outputs=[grpcclient.InferRequestedOutput("nope")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert err.message() == "unknown output 'nope'; the model gives ['output', 'hn']"


# -- sequences (stateful) -----------------------------------------------------------------------


def run_sequence(triton: grpcclient.InferenceServerClient, model: str, sequence_id: int | str,
                 seq: np.ndarray, cuts: list[int]) -> np.ndarray:
    outs, done = [], 0
    for i, size in enumerate(cuts):
        result = triton.infer(model, [make_input(seq[None, done:done + size])],
                              sequence_id=sequence_id, sequence_start=i == 0,
                              sequence_end=i == len(cuts) - 1)
        done += size
        outs.append(result.as_numpy("output")[0])
    return np.concatenate(outs)


@pytest.mark.parametrize("sequence_id", [7, 2**62 + 5, "device-42"])
@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru"])
def test_sequence_equals_whole_prediction(triton: grpcclient.InferenceServerClient,
                                          server: ServerProcess, model: str,
                                          sequence_id: int | str) -> None:
    seq = RNG.normal(size=(15, 3)).astype(np.float32)
    got = run_sequence(triton, model, sequence_id, seq, [1, 5, 2, 7])
    np.testing.assert_allclose(got, native(server, model, [seq])[0], atol=1e-5)


def test_sequence_errors(triton: grpcclient.InferenceServerClient, server: ServerProcess) -> None:
    x = [make_input(np.zeros((1, 1, 3), np.float32))]
    err = grpc_error(lambda: triton.infer("tiny-gru", x, sequence_id=4242))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "must set sequence_start" in err.message()
    both = [make_input(np.zeros((1, 1, 3), np.float32)),
            make_input(np.zeros((2, 1, 8), np.float32), "h0")]
    err = grpc_error(lambda: triton.infer("tiny-gru", both, sequence_id=4243,
                                          sequence_start=True))
    assert "server keeps the state" in err.message()
    assert httpx.get(f"{server.url}/v1/sessions/v2.tiny-gru.n.4243").status_code == 404


def test_sequence_moves_between_grpc_and_http(triton: grpcclient.InferenceServerClient,
                                              server: ServerProcess) -> None:
    """One session behind both transports: start over gRPC, step over HTTP v2, end over gRPC
    (and the same the other way round, with a string id)."""
    for sequence_id in (31337, "moving-sequence"):
        seq = RNG.normal(size=(9, 3)).astype(np.float32)
        first = triton.infer("tiny-lstm", [make_input(seq[None, :3])], sequence_id=sequence_id,
                             sequence_start=True)
        body = {"parameters": {"sequence_id": sequence_id},
                "inputs": [{"name": "input", "shape": [1, 4, 3], "datatype": "FP32",
                            "data": seq[3:7].ravel().tolist()}]}
        r = httpx.post(f"{server.url}/v2/models/tiny-lstm/infer", json=body)
        assert r.status_code == 200, r.text
        middle = next(o for o in r.json()["outputs"] if o["name"] == "output")
        last = triton.infer("tiny-lstm", [make_input(seq[None, 7:])], sequence_id=sequence_id,
                            sequence_end=True)
        got = np.concatenate([first.as_numpy("output")[0],
                              np.asarray(middle["data"], np.float32).reshape(4, 1),
                              last.as_numpy("output")[0]])
        np.testing.assert_allclose(got, native(server, "tiny-lstm", [seq])[0], atol=1e-5)


def test_sequence_started_over_http_continues_over_grpc(
    triton: grpcclient.InferenceServerClient, server: ServerProcess
) -> None:
    seq = RNG.normal(size=(5, 3)).astype(np.float32)
    body = {"parameters": {"sequence_id": 9001, "sequence_start": True},
            "inputs": [{"name": "input", "shape": [1, 2, 3], "datatype": "FP32",
                        "data": seq[:2].ravel().tolist()}]}
    r = httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json=body)
    assert r.status_code == 200, r.text
    head = next(o for o in r.json()["outputs"] if o["name"] == "output")["data"]
    tail = triton.infer("tiny-gru", [make_input(seq[None, 2:])], sequence_id=9001,
                        sequence_end=True).as_numpy("output")[0]
    got = np.concatenate([np.asarray(head, np.float32).reshape(2, 1), tail])
    np.testing.assert_allclose(got, native(server, "tiny-gru", [seq])[0], atol=1e-5)


# -- ModelStreamInfer -----------------------------------------------------------------------------


class Responses:
    """tritonclient's stream callback, collected in a queue."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[Any, InferenceServerException | None]] = queue.Queue()

    def __call__(self, result: Any, error: InferenceServerException | None) -> None:
        self.queue.put((result, error))

    def take(self, n: int) -> list[tuple[Any, InferenceServerException | None]]:
        return [self.queue.get(timeout=30) for _ in range(n)]


@pytest.fixture
def stream(server: ServerProcess) -> Iterator[tuple[grpcclient.InferenceServerClient, Responses]]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    responses = Responses()
    client.start_stream(callback=responses)
    yield client, responses
    client.stop_stream()
    client.close()


def test_stream_many_interleaved_sequences(
    stream: tuple[grpcclient.InferenceServerClient, Responses], server: ServerProcess
) -> None:
    """40 sequences (int and string ids, two models) interleaved on one stream, in chunks of
    different sizes, all sent before any answer is read; each equals its whole prediction."""
    client, responses = stream
    sequences = []
    for i in range(40):
        model = "tiny-lstm" if i % 2 else "tiny-gru"
        sequence_id: int | str = 5000 + i if i % 3 else f"stream-{i}"
        cuts = [int(c) for c in RNG.integers(1, 5, size=int(RNG.integers(3, 7)))]
        seq = RNG.normal(size=(sum(cuts), 3)).astype(np.float32)
        sequences.append((model, sequence_id, seq, cuts))
    sent = 0
    for step in range(max(len(s[3]) for s in sequences)):
        for index, (model, sequence_id, seq, cuts) in enumerate(sequences):
            if step >= len(cuts):
                continue
            start = sum(cuts[:step])
            client.async_stream_infer(
                model, [make_input(seq[None, start:start + cuts[step]])],
                request_id=f"{index}/{step}", sequence_id=sequence_id,
                sequence_start=step == 0, sequence_end=step == len(cuts) - 1)
            sent += 1
    chunks: dict[str, np.ndarray] = {}
    for result, error in responses.take(sent):
        assert error is None, error
        chunks[result.get_response().id] = result.as_numpy("output")[0]
    for index, (model, _, seq, cuts) in enumerate(sequences):
        got = np.concatenate([chunks[f"{index}/{step}"] for step in range(len(cuts))])
        np.testing.assert_allclose(got, native(server, model, [seq])[0], atol=1e-5)


def test_stream_error_is_in_band_and_the_stream_goes_on(
    stream: tuple[grpcclient.InferenceServerClient, Responses], server: ServerProcess
) -> None:
    client, responses = stream
    seq = RNG.normal(size=(6, 3)).astype(np.float32)

    def send(model: str, x: np.ndarray, **kwargs: Any) -> tuple[Any, Any]:
        client.async_stream_infer(model, [make_input(x)], sequence_id=777, **kwargs)
        return responses.take(1)[0]

    result, error = send("tiny-rnn", seq[None, :2], sequence_start=True)
    assert error is None
    outs = [result.as_numpy("output")[0]]
    _, error = send("tiny-rnn", np.zeros((1, 2, 5), np.float32))  # wrong feature count
    assert error is not None
    assert error.message() == "input 'input' has shape [1, 2, 5]; expected [batch, time, 3]"
    _, error = send("no-such-model", seq[None, 2:4], sequence_start=True)
    assert error is not None and "unknown model 'no-such-model'" in error.message()
    result, error = send("tiny-rnn", seq[None, 2:], sequence_end=True)  # the rejected step
    assert error is None  # changed nothing: the sequence continues where it was
    outs.append(result.as_numpy("output")[0])
    np.testing.assert_allclose(np.concatenate(outs), native(server, "tiny-rnn", [seq])[0],
                               atol=1e-5)


def test_stream_stateless_requests(stream: tuple[grpcclient.InferenceServerClient, Responses],
                                   server: ServerProcess) -> None:
    client, responses = stream
    xs = [RNG.normal(size=(2, 3, 3)).astype(np.float32) for _ in range(8)]
    for i, x in enumerate(xs):
        client.async_stream_infer("tiny-gru", [make_input(x)], request_id=str(i))
    for result, error in responses.take(len(xs)):
        assert error is None
        x = xs[int(result.get_response().id)]
        np.testing.assert_allclose(result.as_numpy("output"),
                                   np.stack(native(server, "tiny-gru", list(x))), atol=1e-5)


def test_server_log_is_clean(server: ServerProcess) -> None:
    """Runs last in this module: nothing above made the gRPC adapter fail unexpectedly."""
    log = server.log()
    assert "gRPC listening on " + server.grpc_url in log
    assert "Traceback" not in log and "ERROR rnnserve.grpc" not in log
