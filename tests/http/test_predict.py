"""Stateless prediction over native REST: ragged batches, versions, states in and out.
Expected values come from ONNX Runtime called directly on the same file, one sequence alone."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

RNG = np.random.default_rng(7)


def run_alone(path: Path, seq: np.ndarray, state: dict[str, np.ndarray] | None = None,
              ) -> dict[str, np.ndarray]:
    """The reference: the model run on one sequence by ONNX Runtime itself."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input": seq[None].astype(np.float32)}
    for arg in session.get_inputs()[1:]:
        feeds[arg.name] = (state or {}).get(arg.name, np.zeros((2, 1, 8), np.float32))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "tiny-rnn"])
async def test_ragged_batch_equals_each_sequence_alone(
    client: httpx.AsyncClient, tiny_repo: Path, model: str
) -> None:
    lengths = [5, 1, 17, 5, 9, 1]
    seqs = [RNG.normal(size=(n, 3)).astype(np.float32) for n in lengths]
    r = await client.post(f"/v1/models/{model}/predict",
                          json={"inputs": [s.tolist() for s in seqs]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [len(o) for o in body["outputs"]] == lengths
    path = next((tiny_repo / model).rglob("model.onnx")) if model != "tiny-lstm" else (
        tiny_repo / "tiny-lstm" / "2" / "model.onnx")
    for seq, got in zip(seqs, body["outputs"], strict=True):
        want = run_alone(path, seq)["output"][0]
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-5)


async def test_equal_lengths_batch_equals_alone(client: httpx.AsyncClient, tiny_repo: Path) -> None:
    seqs = RNG.normal(size=(4, 12, 3)).astype(np.float32)
    r = await client.post("/v1/models/tiny-gru/predict", json={"inputs": seqs.tolist()})
    assert r.status_code == 200
    got = np.asarray(r.json()["outputs"])
    assert got.shape == (4, 12, 1)
    for i in range(4):
        want = run_alone(tiny_repo / "tiny-gru" / "model.onnx", seqs[i])["output"][0]
        np.testing.assert_allclose(got[i], want, atol=1e-5)


async def test_version_query_selects_weights(client: httpx.AsyncClient, tiny_repo: Path) -> None:
    seq = RNG.normal(size=(6, 3)).astype(np.float32)
    outs = {}
    for version in ("1", "2"):
        r = await client.post(f"/v1/models/tiny-lstm/predict?version={version}",
                              json={"inputs": [seq.tolist()]})
        assert r.status_code == 200 and r.json()["version"] == int(version)
        outs[version] = np.asarray(r.json()["outputs"][0])
        want = run_alone(tiny_repo / "tiny-lstm" / version / "model.onnx", seq)["output"][0]
        np.testing.assert_allclose(outs[version], want, atol=1e-5)
    assert not np.allclose(outs["1"], outs["2"])


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru"])
async def test_returned_state_continues_the_sequence(client: httpx.AsyncClient, model: str) -> None:
    """Predict the first part with return_state, feed the state back with the rest: the
    outputs equal one whole-sequence prediction (what sessions rely on)."""
    whole = RNG.normal(size=(20, 3)).astype(np.float32)
    r = await client.post(f"/v1/models/{model}/predict", json={"inputs": [whole.tolist()]})
    want = np.asarray(r.json()["outputs"][0])

    first = await client.post(f"/v1/models/{model}/predict",
                              json={"inputs": [whole[:7].tolist()], "return_state": True})
    state = first.json()["states"][0]
    assert set(state) == ({"h0", "c0"} if model == "tiny-lstm" else {"h0"})
    assert state["h0"]["shape"] == [2, 1, 8]
    rest = await client.post(f"/v1/models/{model}/predict",
                             json={"inputs": [whole[7:].tolist()], "initial_states": [state]})
    assert rest.status_code == 200, rest.text
    got = np.concatenate([np.asarray(first.json()["outputs"][0]),
                          np.asarray(rest.json()["outputs"][0])])
    np.testing.assert_allclose(got, want, atol=1e-5)


async def test_initial_states_mixed_with_zeros(client: httpx.AsyncClient, tiny_repo: Path) -> None:
    seq = RNG.normal(size=(4, 3)).astype(np.float32)
    h0 = RNG.normal(size=(2, 1, 8)).astype(np.float32)
    state = {"h0": {"shape": [2, 1, 8], "data": h0.ravel().tolist()}}
    r = await client.post("/v1/models/tiny-gru/predict",
                          json={"inputs": [seq.tolist(), seq.tolist()],
                                "initial_states": [state, None]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    path = tiny_repo / "tiny-gru" / "model.onnx"
    np.testing.assert_allclose(out[0], run_alone(path, seq, {"h0": h0})["output"][0], atol=1e-5)
    np.testing.assert_allclose(out[1], run_alone(path, seq)["output"][0], atol=1e-5)


async def test_renamed_model_is_served(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/renamed-gru/predict",
                          json={"inputs": [[[0.1, 0.2, 0.3]]], "return_state": True})
    assert r.status_code == 200, r.text
    assert set(r.json()["states"][0]) == {"state_in"}


async def test_list_and_describe(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    by_name = {m["name"]: m for m in body["models"]}
    assert by_name["tiny-lstm"]["versions"] == [1, 2]
    assert by_name["tiny-lstm"]["state"] == [
        {"input": "h0", "output": "hn", "shape": [2, -1, 8]},
        {"input": "c0", "output": "cn", "shape": [2, -1, 8]}]
    assert by_name["tiny-gru"]["cell"] == "gru"
    assert [u["name"] for u in body["unavailable"]] == ["broken"]
    r = await client.get("/v1/models/tiny-gru")
    assert r.json()["input_size"] == 3 and r.json()["hidden_size"] == 8


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    await client.post("/v1/models/tiny-gru/predict", json={"inputs": [[[1, 2, 3]]]})
    await client.post("/v1/models/tiny-gru/predict", json={"inputs": []})
    text = (await client.get("/metrics")).text
    assert ('rnnserve_http_requests_total{method="POST",model="tiny-gru",'
            'route="/v1/models/{model}/predict",status="200"} 1.0') in text
    assert 'status="400"} 1.0' in text
    assert 'rnnserve_model_loaded' in text
