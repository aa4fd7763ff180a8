"""ModelStreamInfer's short way for the steady steps of a sequence (grpc/stream_call.py) gives
what the whole way (unary ModelInfer, the v2 data plane) gives: the same outputs and states,
the same step_id replay, the same errors when the sequence went meanwhile, and replies of one
sequence in the order sent while many sequences share the stream. A real server, rnnserve's
own stubs on a raw bidirectional stream, every number checked against the whole way or the
native prediction."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc

from tests.conftest import ServerProcess, serving
from tests.grpc.test_grpc import native

RNG = np.random.default_rng(31)
MODEL = "tiny-lstm"


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)], tmp_path_factory.mktemp("grpc-steps") / "log",
                 grpc=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[inference_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield inference_pb2_grpc.GRPCInferenceServiceStub(channel)


def request(x: np.ndarray, sequence_id: int | str, request_id: str = "", *,
            start: bool = False, end: bool = False, outputs: tuple[str, ...] = (),
            step_id: str | None = None) -> pb.ModelInferRequest:
    """A sequence step: x [time, features] as the [1, time, features] raw FP32 input."""
    message = pb.ModelInferRequest(model_name=MODEL, id=request_id)
    if isinstance(sequence_id, int):
        message.parameters["sequence_id"].int64_param = sequence_id
    else:
        message.parameters["sequence_id"].string_param = sequence_id
    if start:
        message.parameters["sequence_start"].bool_param = True
    if end:
        message.parameters["sequence_end"].bool_param = True
    if step_id is not None:
        message.parameters["step_id"].string_param = step_id
    message.inputs.add(name="input", datatype="FP32", shape=[1, *x.shape])
    message.raw_input_contents.append(x.astype("<f4").tobytes())
    for name in outputs:
        message.outputs.add(name=name)
    return message


def outputs_of(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    return {t.name: np.frombuffer(raw, "<f4").reshape(list(t.shape))
            for t, raw in zip(response.outputs, response.raw_output_contents, strict=True)}


class Stream:
    """One ModelStreamInfer call: `send` queues a request, `take` reads the next reply."""

    def __init__(self, stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> None:
        self._requests: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()
        self._replies = stub.ModelStreamInfer(iter(self._requests.get, None), timeout=60)

    def send(self, message: pb.ModelInferRequest) -> None:
        self._requests.put(message)

    def take(self) -> pb.ModelStreamInferResponse:
        reply: pb.ModelStreamInferResponse = next(self._replies)
        return reply

    def step(self, message: pb.ModelInferRequest) -> pb.ModelStreamInferResponse:
        self.send(message)
        return self.take()

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._replies:  # the server ends the call once every reply is out
            pass


@pytest.fixture
def stream(stub: inference_pb2_grpc.GRPCInferenceServiceStub) -> Iterator[Stream]:
    call = Stream(stub)
    yield call
    call.close()


def unary(stub: inference_pb2_grpc.GRPCInferenceServiceStub, message: pb.ModelInferRequest
          ) -> dict[str, np.ndarray]:
    response: pb.ModelInferResponse = stub.ModelInfer(message, timeout=30)
    return outputs_of(response)


def test_stream_steps_equal_the_whole_way_outputs_states_and_replays(
    stream: Stream, stub: inference_pb2_grpc.GRPCInferenceServiceStub
) -> None:
    """One sequence over the stream, its twin over unary ModelInfer, the same inputs: every
    step's outputs and states agree, whichever outputs are asked for (none: all of them, the
    states included), and a repeated step_id replays its step without applying it again."""
    names = [t.name for t in stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL)).outputs]
    assert len(names) == 3  # output and the LSTM's two states
    asks: list[tuple[str, ...]] = [(), ("output",), (names[2], "output"), (), ("output",)]
    xs = [RNG.normal(size=(1 + i % 3, 3)).astype(np.float32) for i in range(len(asks) + 1)]
    first = stream.step(request(xs[0], 6101, "s0", start=True))
    assert not first.error_message
    twin = unary(stub, request(xs[0], 6102, start=True))
    np.testing.assert_allclose(outputs_of(first.infer_response)["output"], twin["output"])
    for i, ask in enumerate(asks, start=1):
        step_id = f"step-{i}"
        reply = stream.step(request(xs[i], 6101, f"s{i}", outputs=ask, step_id=step_id))
        assert not reply.error_message, reply.error_message
        assert reply.infer_response.id == f"s{i}"
        got = outputs_of(reply.infer_response)
        assert list(got) == list(ask or names)
        want = unary(stub, request(xs[i], 6102, outputs=ask, step_id=step_id))
        for name in got:
            np.testing.assert_allclose(got[name], want[name], atol=1e-6)
        again = stream.step(request(xs[i], 6101, f"r{i}", outputs=ask, step_id=step_id))
        for name, value in outputs_of(again.infer_response).items():
            np.testing.assert_allclose(value, got[name])  # replayed, not applied twice
    end = stream.step(request(xs[0], 6101, "end", end=True))
    want = unary(stub, request(xs[0], 6102, end=True))
    np.testing.assert_allclose(outputs_of(end.infer_response)["output"], want["output"],
                               atol=1e-6)


def test_a_sequence_ended_elsewhere_is_not_active_and_the_stream_goes_on(
    stream: Stream, stub: inference_pb2_grpc.GRPCInferenceServiceStub, server: ServerProcess
) -> None:
    """The stream steps sequence 6201; a unary call ends it; the stream's next plain step is
    refused in-band as the whole way refuses it (not active, start it), the stream stays
    usable: a restart on it and later steps answer the right numbers."""
    seq = RNG.normal(size=(5, 3)).astype(np.float32)
    assert not stream.step(request(seq[:1], 6201, start=True)).error_message
    assert not stream.step(request(seq[1:2], 6201)).error_message
    unary(stub, request(seq[1:2], 6201, end=True))
    refused = stream.step(request(seq[2:3], 6201, "late"))
    assert refused.error_message == (f"sequence 6201 of model {MODEL!r} is not active; the "
                                     "first request of a sequence must set sequence_start=true")
    assert refused.infer_response.id == "late"
    outs = [outputs_of(stream.step(request(seq[:2], 6201, start=True)).infer_response)]
    outs += [outputs_of(stream.step(request(seq[2:], 6201)).infer_response)]
    got = np.concatenate([o["output"][0] for o in outs])
    np.testing.assert_allclose(got, native(server, MODEL, [seq])[0], atol=1e-5)


def test_bad_steps_mid_stream_are_refused_alone(stream: Stream, server: ServerProcess) -> None:
    """Steps the short way would not take (NaN, a wrong shape, an unknown output, start and
    end flags of the wrong type) get the data plane's own in-band errors; the sequence goes
    on from where it was."""
    seq = RNG.normal(size=(4, 3)).astype(np.float32)
    outs = [stream.step(request(seq[:1], 6301, start=True))]
    bad_values = seq[1:2].copy()
    bad_values[0, 1] = np.nan
    wrong_flag = request(seq[1:2], 6301)
    wrong_flag.parameters["sequence_end"].string_param = "yes"
    refusals = {
        "nan": stream.step(request(bad_values, 6301)).error_message,
        "shape": stream.step(request(np.zeros((1, 5), np.float32), 6301)).error_message,
        "output": stream.step(request(seq[1:2], 6301, outputs=("nope",))).error_message,
        "flag": stream.step(wrong_flag).error_message,
    }
    assert refusals["nan"].startswith("input[0, 0, 1] is nan: values must be finite")
    assert refusals["shape"] == "input 'input' has shape [1, 1, 5]; expected [batch, time, 3]"
    assert refusals["output"].startswith("unknown output 'nope'")
    assert refusals["flag"] == "sequence_end must be true or false"
    outs.append(stream.step(request(seq[1:], 6301, outputs=("output",))))
    got = np.concatenate([outputs_of(o.infer_response)["output"][0] for o in outs])
    np.testing.assert_allclose(got, native(server, MODEL, [seq])[0], atol=1e-5)


def test_pipelined_steps_of_many_sequences_answer_in_order_per_sequence(
    stream: Stream, server: ServerProcess
) -> None:
    """8 sequences, 12 one-timestep steps each, all sent before any reply is read (one
    sequence's steps in flight together, behind each other): each sequence's replies come in
    the order sent, and their outputs are its whole prediction."""
    seqs = {6400 + i: RNG.normal(size=(12, 3)).astype(np.float32) for i in range(8)}
    sent = 0
    for t in range(12):
        for sid, seq in seqs.items():
            stream.send(request(seq[t:t + 1], sid, f"{sid}/{t}", start=t == 0,
                                outputs=("output",)))
            sent += 1
    seen: dict[int, list[int]] = {sid: [] for sid in seqs}
    rows: dict[int, list[np.ndarray]] = {sid: [] for sid in seqs}
    for _ in range(sent):
        reply = stream.take()
        assert not reply.error_message, reply.error_message
        sid, t = (int(part) for part in reply.infer_response.id.split("/"))
        seen[sid].append(t)
        rows[sid].append(outputs_of(reply.infer_response)["output"][0])
    for sid, seq in seqs.items():
        assert seen[sid] == list(range(12))
        np.testing.assert_allclose(np.concatenate(rows[sid]), native(server, MODEL, [seq])[0],
                                   atol=1e-5)


def test_many_streams_at_once_share_batches(
    stub: inference_pb2_grpc.GRPCInferenceServiceStub, server: ServerProcess
) -> None:
    """32 streams, a sequence each, stepped closed-loop from threads: every sequence's
    outputs are its whole prediction (steps of different streams batched together never mix
    their states)."""
    seqs = [RNG.normal(size=(6, 3)).astype(np.float32) for _ in range(32)]
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        call = Stream(stub)
        try:
            got = [outputs_of(call.step(request(seqs[i][t:t + 1], f"many-{i}", start=t == 0,
                                                outputs=("output",))).infer_response)
                   for t in range(6)]
            results[i] = np.concatenate([g["output"][0] for g in got])
        except Exception as exc:  # reported below, with its sequence
            results[i] = exc
        finally:
            call.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(seqs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = native(server, MODEL, seqs)
    for i, want in enumerate(expected):
        assert isinstance(results.get(i), np.ndarray), results.get(i)
        np.testing.assert_allclose(results[i], want, atol=1e-5)


def test_server_log_is_clean(server: ServerProcess) -> None:
    """Runs last: nothing above made the gRPC adapter fail unexpectedly."""
    log = server.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    assert "ERROR rnnserve.grpc" not in log
