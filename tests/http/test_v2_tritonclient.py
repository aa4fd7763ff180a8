"""KServe v2 over HTTP with the real tritonclient.http (from PyPI) against a real server
process: health, metadata, infer with JSON and binary tensors, requested outputs, request id,
compression, and errors raised with the server's message."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

RNG = np.random.default_rng(11)


def predict_native(server: ServerProcess, model: str, seqs: np.ndarray,
                   version: str = "") -> np.ndarray:
    import httpx

    query = f"?version={version}" if version else ""
    r = httpx.post(f"{server.url}/v1/models/{model}/predict{query}",
                   json={"inputs": seqs.tolist()}, timeout=10)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"], np.float32)


def make_input(x: np.ndarray, binary: bool, name: str = "input") -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_health_and_server_metadata(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "rnnserve"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(triton: httpclient.InferenceServerClient) -> None:
    meta = triton.get_model_metadata("tiny-lstm")
    assert meta["versions"] == ["1", "2"]
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, -1, 3]}
    assert [t["name"] for t in meta["inputs"]] == ["input", "h0", "c0"]
    assert [t["name"] for t in meta["outputs"]] == ["output", "hn", "cn"]
    assert meta["outputs"][1]["shape"] == [2, -1, 8]
    assert triton.get_model_metadata("tiny-lstm", "1")["name"] == "tiny-lstm"
    assert triton.is_model_ready("tiny-gru")
    assert triton.is_model_ready("tiny-lstm", "1")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("broken")


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "tiny-rnn"])
def test_infer_equals_native_predict(
    triton: httpclient.InferenceServerClient, server: ServerProcess, model: str, binary: bool
) -> None:
    x = RNG.normal(size=(3, 9, 3)).astype(np.float32)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary)
               for n in ("output", "hn")]
    result = triton.infer(model, [make_input(x, binary)], outputs=outputs, request_id="req-42")
    assert result.get_response()["id"] == "req-42"
    np.testing.assert_allclose(result.as_numpy("output"), predict_native(server, model, x),
                               atol=1e-5)
    assert result.as_numpy("hn").shape == (2, 3, 8)
    assert result.as_numpy("cn") is None  # only the requested outputs come back


def test_default_outputs_are_binary_and_complete(triton: httpclient.InferenceServerClient) -> None:
    x = RNG.normal(size=(2, 4, 3)).astype(np.float32)
    result = triton.infer("tiny-lstm", [make_input(x, True)])  # no outputs: all, binary
    assert {o["name"] for o in result.get_response()["outputs"]} == {"output", "hn", "cn"}
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])
    assert result.as_numpy("cn").shape == (2, 2, 8)


def test_explicit_state_inputs_continue_a_sequence(
    triton: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    x = RNG.normal(size=(1, 10, 3)).astype(np.float32)
    whole = predict_native(server, "tiny-lstm", x)
    first = triton.infer("tiny-lstm", [make_input(x[:, :4], True)])
    rest = triton.infer("tiny-lstm", [
        make_input(x[:, 4:], True),
        make_input(first.as_numpy("hn"), True, "h0"),
        make_input(first.as_numpy("cn"), False, "c0"),
    ])
    got = np.concatenate([first.as_numpy("output"), rest.as_numpy("output")], axis=1)
    np.testing.assert_allclose(got, whole, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(
    triton: httpclient.InferenceServerClient, server: ServerProcess, algorithm: str
) -> None:
    x = RNG.normal(size=(2, 5, 3)).astype(np.float32)
    result = triton.infer("tiny-gru", [make_input(x, True)],
                          request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("output"), predict_native(server, "tiny-gru", x),
                               atol=1e-5)


def test_versions_route(triton: httpclient.InferenceServerClient, server: ServerProcess) -> None:
    x = RNG.normal(size=(1, 3, 3)).astype(np.float32)
    result = triton.infer("tiny-lstm", [make_input(x, True)], model_version="1")
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy("output"),
                               predict_native(server, "tiny-lstm", x, version="1"), atol=1e-5)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: [make_input(np.zeros((1, 2, 4), np.float32), True)], "expected [batch, time, 3]"),
        (lambda: [make_input(np.zeros((1, 0, 3), np.float32), False)], "empty"),
        (lambda: [make_input(np.full((1, 2, 3), np.nan, np.float32), True)], "finite"),
        (lambda: [make_input(np.zeros((1, 2, 3), np.float32), True, "h9")], "unknown input"),
        (lambda: [make_input(np.zeros((1, 2, 3), np.float32), True),
                  make_input(np.zeros((2, 5, 8), np.float32), True, "h0")], "(layers, batch"),
    ],
)
def test_bad_infer_raises_with_message(
    triton: httpclient.InferenceServerClient, build: Callable[[], list], fragment: str
) -> None:
    with pytest.raises(InferenceServerException) as info:
        triton.infer("tiny-gru", build())
    assert fragment in str(info.value)
    assert triton.is_server_ready()


def test_wrong_datatype_and_unknown_model(triton: httpclient.InferenceServerClient) -> None:
    x = httpclient.InferInput("input", [1, 2, 3], "FP64")
    x.set_data_from_numpy(np.zeros((1, 2, 3), np.float64))
    with pytest.raises(InferenceServerException, match="datatype FP64; this model takes FP32"):
        triton.infer("tiny-gru", [x])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        triton.infer("nope", [make_input(np.zeros((1, 1, 3), np.float32), True)])
    with pytest.raises(InferenceServerException, match="unknown output 'zz'"):
        triton.infer("tiny-gru", [make_input(np.zeros((1, 1, 3), np.float32), True)],
                     outputs=[httpclient.InferRequestedOutput("zz")])
