"""Bidirectional models over every transport of a real server: a session (REST create, the
WebSocket stream, the gateway) or a KServe v2 sequence (HTTP, gRPC, gRPC stream) is refused 400
/ INVALID_ARGUMENT with a message that says why and points to predict; predict and stateless
v2 inference serve the model and equal PyTorch; /v1/models tells directions, true layers,
streamable and the graph's cell."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import websockets
from tritonclient.utils import InferenceServerException
from websockets.exceptions import ConnectionClosed

from tests.conftest import BIDIRECTIONAL, ServerProcess, bidirectional_modules, serving

RNG = np.random.default_rng(41)
WHY = "bidirectional: its outputs at time t depend on later inputs"


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)], tmp_path_factory.mktemp("bi") / "log",
                 grpc=True) as proc:
        yield proc


def refusal(model: str) -> str:
    """What every transport answers, whole."""
    return (f"model {model!r} version 1 cannot be stepped in a session or a sequence: the "
            f"model is {WHY}; predict whole sequences instead (POST /v1/models/{model}/predict, "
            "or KServe v2 inference without sequence_id)")


def pytorch(model: str, x: np.ndarray, h0: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The exported modules on x [batch, time, 3] from h0 (zeros): output and hn."""
    rnn, head = bidirectional_modules(model)
    state = None if h0 is None else torch.from_numpy(h0)
    if isinstance(rnn, torch.nn.LSTM):
        state = None if state is None else (state, torch.zeros_like(state))
    with torch.no_grad():
        seq, hn = rnn(torch.from_numpy(x), state)
        hn = hn[0] if isinstance(hn, tuple) else hn
        return head(seq).numpy(), hn.numpy()


# -- what the model list says --------------------------------------------------------------------


def test_models_report_directions_true_layers_streamable_and_cell(server: ServerProcess) -> None:
    listed = {m["name"]: m for m in httpx.get(f"{server.url}/v1/models").json()["models"]}
    for name, cell, layers in (("bi-gru", "gru", 2), ("bi-lstm", "lstm", 1)):
        model = listed[name]
        assert (model["cell"], model["layers"], model["directions"]) == (cell, layers, 2)
        assert model["streamable"] is False and WHY in model["not_streamable_reason"]
        assert model["state"][0]["shape"] == [2 * layers, -1, 8]  # layers × directions
        assert httpx.get(f"{server.url}/v1/models/{name}").json() == model
    for name in ("tiny-gru", "tiny-lstm", "tiny-rnn", "plain-gru"):
        assert listed[name]["streamable"] is True and listed[name]["directions"] == 1
        assert listed[name]["layers"] == 2 and listed[name]["not_streamable_reason"] is None
    assert listed["plain-gru"]["cell"] == "gru"  # no model.json, no metadata: the graph says
    # KServe v2 metadata lists the tensors as they are
    v2 = httpx.get(f"{server.url}/v2/models/bi-gru").json()
    assert [t["shape"] for t in v2["inputs"]] == [[-1, -1, 3], [4, -1, 8]]


# -- sessions are refused ----------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(BIDIRECTIONAL))
def test_rest_refuses_a_session_and_predicts_as_pytorch(server: ServerProcess, model: str
                                                        ) -> None:
    r = httpx.post(f"{server.url}/v1/models/{model}/sessions", json={})
    assert r.status_code == 400
    assert r.json() == {"error": refusal(model)}

    seqs = [RNG.normal(size=(length, 3)).astype(np.float32) for length in (9, 4)]
    r = httpx.post(f"{server.url}/v1/models/{model}/predict",
                   json={"inputs": [s.tolist() for s in seqs]})
    assert r.status_code == 200, r.text
    for seq, got in zip(seqs, r.json()["outputs"], strict=True):
        want, _ = pytorch(model, seq[None])
        np.testing.assert_allclose(np.asarray(got, np.float32), want[0], atol=1e-5)

    r = httpx.post(f"{server.url}/v1/models/plain-gru/sessions", json={})  # one direction
    assert r.status_code == 201, r.text
    assert httpx.delete(f"{server.url}/v1/sessions/{r.json()['session_id']}").status_code == 204


async def test_websocket_connect_gets_the_refusal_then_close_1008(server: ServerProcess) -> None:
    url = f"ws://127.0.0.1:{server.port}/v1/models/bi-lstm/stream"
    async with websockets.connect(url) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert first == {"error": refusal("bi-lstm"), "status": 400}
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_gateway_steps_are_refused(server: ServerProcess) -> None:
    r = httpx.post(f"{server.url}/v1/models/bi-gru/steps",
                   json={"steps": [{"session_id": "any", "inputs": [[0.1, 0.2, 0.3]]}]})
    assert r.status_code == 400
    assert r.json() == {"error": refusal("bi-gru")}


def v2_body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    return {"parameters": parameters, "inputs": [
        {"name": "input", "shape": list(x.shape), "datatype": "FP32",
         "data": x.ravel().tolist()}]}


def v2_outputs(response: httpx.Response) -> dict[str, np.ndarray]:
    assert response.status_code == 200, response.text
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
            for o in response.json()["outputs"]}


@pytest.mark.parametrize("model", sorted(BIDIRECTIONAL))
def test_v2_http_refuses_a_sequence_and_infers_as_pytorch(server: ServerProcess, model: str
                                                          ) -> None:
    x = RNG.normal(size=(1, 2, 3)).astype(np.float32)
    r = httpx.post(f"{server.url}/v2/models/{model}/infer",
                   json=v2_body(x, sequence_id=9, sequence_start=True))
    assert r.status_code == 400
    assert r.json() == {"error": refusal(model)}

    x = RNG.normal(size=(2, 7, 3)).astype(np.float32)
    h0 = RNG.normal(0, 0.5, size=(2 * BIDIRECTIONAL[model][1], 2, 8)).astype(np.float32)
    want_out, want_hn = pytorch(model, x, h0)  # (c0: zeros)
    body = v2_body(x)
    body["inputs"].append({"name": "h0", "shape": list(h0.shape), "datatype": "FP32",
                           "data": h0.ravel().tolist()})
    outputs = v2_outputs(httpx.post(f"{server.url}/v2/models/{model}/infer", json=body))
    np.testing.assert_allclose(outputs["output"], want_out, atol=1e-5)
    np.testing.assert_allclose(outputs["hn"], want_hn, atol=1e-5)


def grpc_input(x: np.ndarray, name: str = "input") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def test_grpc_refuses_a_sequence_and_infers_as_pytorch(server: ServerProcess) -> None:
    x = RNG.normal(size=(1, 2, 3)).astype(np.float32)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("bi-gru", [grpc_input(x)], sequence_id=9, sequence_start=True)
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert caught.value.message() == refusal("bi-gru")

        x = RNG.normal(size=(2, 7, 3)).astype(np.float32)
        h0 = RNG.normal(0, 0.5, size=(4, 2, 8)).astype(np.float32)
        want_out, want_hn = pytorch("bi-gru", x, h0)
        result = client.infer("bi-gru", [grpc_input(x), grpc_input(h0, "h0")])
        np.testing.assert_allclose(result.as_numpy("output"), want_out, atol=1e-5)
        np.testing.assert_allclose(result.as_numpy("hn"), want_hn, atol=1e-5)

        answers: queue.Queue[tuple[Any, InferenceServerException | None]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            client.async_stream_infer("bi-lstm", [grpc_input(x[:1])], sequence_id="s",
                                      sequence_start=True)
            _, error = answers.get(timeout=30)
        finally:
            client.stop_stream()
    assert error is not None and error.message() == refusal("bi-lstm")
