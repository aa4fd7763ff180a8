"""KServe v2 sequences with the real tritonclient.http: the server keeps the state between
requests, as Triton's sequence batcher with implicit state does."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

RNG = np.random.default_rng(17)


def chunk_input(x: np.ndarray) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


def whole(server: ServerProcess, model: str, seq: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/{model}/predict", json={"inputs": [seq.tolist()]})
    return np.asarray(r.json()["outputs"][0])


def run_sequence(triton: httpclient.InferenceServerClient, model: str, sequence_id: int | str,
                 seq: np.ndarray, cuts: list[int]) -> np.ndarray:
    outs, done = [], 0
    for i, size in enumerate(cuts):
        x = seq[None, done:done + size]
        done += size
        result = triton.infer(model, chunk_input(x), sequence_id=sequence_id,
                              sequence_start=(i == 0), sequence_end=(i == len(cuts) - 1))
        outs.append(result.as_numpy("output")[0])
    return np.concatenate(outs)


@pytest.mark.parametrize("sequence_id", [7, 2**63 + 5, "device-42"])
@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru"])
def test_sequence_equals_whole_prediction(
    triton: httpclient.InferenceServerClient, server: ServerProcess, model: str,
    sequence_id: int | str,
) -> None:
    seq = RNG.normal(size=(15, 3)).astype(np.float32)
    got = run_sequence(triton, model, sequence_id, seq, [1, 5, 2, 7])
    np.testing.assert_allclose(got, whole(server, model, seq), atol=1e-5)


def test_interleaved_sequences_keep_apart(
    triton: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    a, b = (RNG.normal(size=(6, 3)).astype(np.float32) for _ in range(2))
    outs: dict[int, list[np.ndarray]] = {1: [], 2: []}
    for t in range(6):
        for sid, seq in ((1, a), (2, b)):
            r = triton.infer("tiny-gru", chunk_input(seq[None, t:t + 1]), sequence_id=sid,
                             sequence_start=t == 0, sequence_end=t == 5)
            outs[sid].append(r.as_numpy("output")[0])
    np.testing.assert_allclose(np.concatenate(outs[1]), whole(server, "tiny-gru", a), atol=1e-5)
    np.testing.assert_allclose(np.concatenate(outs[2]), whole(server, "tiny-gru", b), atol=1e-5)


def test_first_request_must_start_and_end_frees(
    triton: httpclient.InferenceServerClient,
) -> None:
    x = chunk_input(np.zeros((1, 1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="must set sequence_start"):
        triton.infer("tiny-gru", x, sequence_id=991)
    triton.infer("tiny-gru", x, sequence_id=991, sequence_start=True)
    triton.infer("tiny-gru", x, sequence_id=991, sequence_end=True)
    with pytest.raises(InferenceServerException, match="must set sequence_start"):
        triton.infer("tiny-gru", x, sequence_id=991)


def test_start_on_a_live_sequence_restarts_it(
    triton: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    seq = RNG.normal(size=(4, 3)).astype(np.float32)
    triton.infer("tiny-lstm", chunk_input(seq[None, :2]), sequence_id=55, sequence_start=True)
    got = run_sequence(triton, "tiny-lstm", 55, seq, [2, 2])  # starts again
    np.testing.assert_allclose(got, whole(server, "tiny-lstm", seq), atol=1e-5)


def test_sequence_is_a_session(triton: httpclient.InferenceServerClient,
                               server: ServerProcess) -> None:
    triton.infer("tiny-gru", chunk_input(np.ones((1, 3, 3), np.float32)), sequence_id="s-1",
                 sequence_start=True)
    r = httpx.get(f"{server.url}/v1/sessions/v2.tiny-gru.s.s-1")
    assert r.status_code == 200 and r.json()["steps"] == 3


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"sequence_id": True}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": 1.5}, "unsigned 64-bit integer or a string"),
        ({"sequence_id": -3}, "out of range"),
        ({"sequence_id": 3, "sequence_start": "yes"}, "sequence_start must be true or false"),
        ({"sequence_start": True}, "without a sequence_id"),
    ],
)
def test_bad_sequence_parameters(server: ServerProcess, parameters: dict, fragment: str) -> None:
    body = {"parameters": parameters, "inputs": [
        {"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    r = httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json=body)
    assert r.status_code == 400 and fragment in r.json()["error"]


def test_sequence_refuses_state_inputs_and_batches(server: ServerProcess) -> None:
    base = {"parameters": {"sequence_id": 77, "sequence_start": True}}
    r = httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json={**base, "inputs": [
        {"name": "input", "shape": [2, 1, 3], "datatype": "FP32", "data": [0] * 6}]})
    assert r.status_code == 400 and "batch size 1" in r.json()["error"]
    r = httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json={**base, "inputs": [
        {"name": "input", "shape": [1, 1, 3], "datatype": "FP32", "data": [0] * 3},
        {"name": "h0", "shape": [2, 1, 8], "datatype": "FP32", "data": [0] * 16}]})
    assert r.status_code == 400 and "server keeps the state" in r.json()["error"]
    r = httpx.get(f"{server.url}/v1/sessions/v2.tiny-gru.n.77")
    assert r.status_code == 404  # rejected requests created nothing


def test_any_recent_step_id_of_a_sequence_is_replayed(server: ServerProcess) -> None:
    """KServe v2 over HTTP: a retry of an earlier step of the sequence (not only the latest),
    with its step_id, answers that step's recorded outputs and applies nothing."""
    seq = RNG.normal(size=(4, 3)).astype(np.float32)

    def infer(t: int, **parameters: object) -> httpx.Response:
        body = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                            "data": seq[t].tolist()}],
                "parameters": {"sequence_id": "replayed", "step_id": f"v2-{t}", **parameters}}
        return httpx.post(f"{server.url}/v2/models/tiny-gru/infer", json=body)

    first = [infer(0, sequence_start=True)] + [infer(t) for t in (1, 2, 3)]
    assert all(r.status_code == 200 for r in first), [r.text for r in first]
    again = infer(1)  # two steps later, its reply lost, say: sent again
    assert again.status_code == 200

    def output(r: httpx.Response) -> list[float]:  # (state outputs are the session's now)
        return next(o["data"] for o in r.json()["outputs"] if o["name"] == "output")

    assert output(again) == output(first[1])
    got = np.concatenate([np.asarray(r.json()["outputs"][0]["data"], np.float32)
                          for r in first])
    np.testing.assert_allclose(got, whole(server, "tiny-gru", seq).ravel(), atol=1e-5)
    after = infer(3)  # the latest one again: replayed whole, its states too
    assert after.json()["outputs"] == first[3].json()["outputs"]
    steps = httpx.get(f"{server.url}/v1/sessions/v2.tiny-gru.s.replayed").json()["steps"]
    assert steps == 4
