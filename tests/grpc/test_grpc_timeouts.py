"""Time limits over gRPC tell the truth about sequence steps. The server's own limit
(--request-timeout-s) withdraws a step that has not reached its state write and says so with
DEADLINE_EXCEEDED; a client's deadline ends the call on its side whatever happened, so the
client sends the step again with the same step_id, and every step_id is applied exactly once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc

from tests.conftest import ServerProcess, serving

MODEL = "tiny-lstm"
RNG = np.random.default_rng(61)


def step_request(x: np.ndarray, sequence_id: str, *, start: bool = False,
                 step_id: str | None = None) -> pb.ModelInferRequest:
    """One sequence step [1, time, 3] as tritonclient sends it (raw little-endian bytes)."""
    message = pb.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name="input", datatype="FP32", shape=[1, *x.shape])
    message.raw_input_contents.append(x.astype("<f4").tobytes())
    message.parameters["sequence_id"].string_param = sequence_id
    if start:
        message.parameters["sequence_start"].bool_param = True
    if step_id is not None:
        message.parameters["step_id"].string_param = step_id
    return message


def output(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(shape)[0]


def sequence_steps(server: ServerProcess, sequence_id: str) -> int:
    r = httpx.get(f"{server.url}/v1/sessions/v2.{MODEL}.s.{sequence_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["steps"])


async def started(stub: inference_pb2_grpc.GRPCInferenceServiceStub, sequence_id: str) -> None:
    """Start a sequence with one timestep; under a tiny server limit a start that timed out
    changed nothing, so it goes again."""
    for _ in range(50):
        try:
            await stub.ModelInfer(step_request(np.zeros((1, 3)), sequence_id, start=True),
                                  timeout=30)
            return
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
    raise AssertionError("the start kept timing out")


@pytest.fixture(scope="module")
def tight(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--request-timeout-s", "0.02"],
                 tmp_path_factory.mktemp("grpc-tight") / "log", grpc=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("grpc-deadlines") / "log", grpc=True) as proc:
        yield proc


async def test_the_servers_limit_withdraws_or_answers_each_step(tight: ServerProcess) -> None:
    """300 concurrent 1000-timestep steps of one sequence, a 20 ms server limit, a patient
    client: each is OK or DEADLINE_EXCEEDED saying not applied; the sequence counts the OKs."""
    x = RNG.normal(size=(1000, 3))
    async with grpc.aio.insecure_channel(tight.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        await started(stub, "tight-1")
        answers = await asyncio.gather(*(stub.ModelInfer(step_request(x, "tight-1"), timeout=30)
                                         for _ in range(300)), return_exceptions=True)
    ok = [a for a in answers if isinstance(a, pb.ModelInferResponse)]
    failed = [a for a in answers if not isinstance(a, pb.ModelInferResponse)]
    assert failed
    for exc in failed:
        assert isinstance(exc, grpc.aio.AioRpcError), exc
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
        assert "not applied" in (exc.details() or "") or "changed anything" in (
            exc.details() or ""), exc.details()
    assert sequence_steps(tight, "tight-1") == 1 + 1000 * len(ok)
    await asyncio.sleep(0.5)  # and no withdrawn step lands later
    assert sequence_steps(tight, "tight-1") == 1 + 1000 * len(ok)


async def test_a_client_deadline_retried_with_the_same_step_id_applies_once(
        server: ServerProcess) -> None:
    """Steps sent one after another, each first with a deadline of a few milliseconds while
    other work keeps the server busy; a step whose deadline passed goes again with the same
    step_id until it is answered. Whether the first try was withdrawn or applied, the
    sequence ends up with every step exactly once, in order: its outputs equal the stateless
    prediction of the whole input."""
    steps, length = 40, 50
    seq = RNG.normal(size=(steps * length, 3)).astype(np.float32)
    deadlines = itertools.cycle([0.0005, 0.001, 0.002, 0.003, 0.005, 0.008])
    stop = asyncio.Event()

    async def busy(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
        load = pb.ModelInferRequest(model_name=MODEL)
        load.inputs.add(name="input", datatype="FP32", shape=[64, 1000, 3])
        load.raw_input_contents.append(np.zeros((64, 1000, 3), "<f4").tobytes())
        while not stop.is_set():
            await stub.ModelInfer(load, timeout=30)

    outs: list[np.ndarray] = []
    expired = 0
    async with grpc.aio.insecure_channel(server.grpc_url) as channel:
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        load = [asyncio.create_task(busy(stub)) for _ in range(2)]
        try:
            for i in range(steps):
                x = seq[i * length:(i + 1) * length]
                timeout = next(deadlines)
                for _ in range(20):
                    message = step_request(x, "deadline-1", start=i == 0, step_id=f"s{i}")
                    try:
                        answer = await stub.ModelInfer(message, timeout=timeout)
                        break
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc.details()
                        expired += 1
                        timeout = 30
                else:
                    raise AssertionError(f"step {i} was never answered")
                outs.append(output(answer))
        finally:
            stop.set()
            await asyncio.gather(*load)
    assert expired  # the case under test happened
    assert sequence_steps(server, "deadline-1") == steps * length
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict", json={"inputs": [seq.tolist()]})
    np.testing.assert_allclose(np.concatenate(outs), np.asarray(r.json()["outputs"][0]),
                               atol=1e-5)
