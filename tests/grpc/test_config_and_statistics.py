"""Triton's model configuration and statistics extensions, asked as a Triton user asks them:
the newest tritonclient.http and tritonclient.grpc (get_model_config,
get_inference_statistics) against a real server process. The configuration describes each
model from its metadata (input width, state shapes: read from the server, never assumed) and
the flags it was started with; the statistics count exactly the requests made on every
transport (REST, the gateway, WebSocket, KServe v2 over HTTP, gRPC unary and stream), the
refused ones apart, and ONNX Runtime runs by their rows."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException
from websockets.sync.client import connect as ws_connect

from tests.conftest import ServerProcess, serving

RNG = np.random.default_rng(18)
TTL_S, MAX_BATCH, MAX_DELAY_MS = 123, 64, 2
MODEL = "tiny-gru"  # one version: its statistics are one entry


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--session-ttl-s", str(TTL_S),
                  "--max-batch", str(MAX_BATCH), "--max-delay-ms", str(MAX_DELAY_MS)],
                 tmp_path_factory.mktemp("config-stats") / "server.log", grpc=True) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@dataclass(frozen=True)
class Shapes:
    """A model's tensors as its metadata states them."""

    input: str
    width: int
    output: str
    output_width: int
    states: list[tuple[str, str, int, int]]  # (input, output, layers·directions, hidden)


def shapes_of(http: httpclient.InferenceServerClient, model: str) -> Shapes:
    meta = http.get_model_metadata(model)
    sequence_in, *state_ins = meta["inputs"]
    sequence_out, *state_outs = meta["outputs"]
    return Shapes(sequence_in["name"], sequence_in["shape"][2], sequence_out["name"],
                  sequence_out["shape"][2],
                  [(i["name"], o["name"], i["shape"][0], i["shape"][2])
                   for i, o in zip(state_ins, state_outs, strict=True)])


def tensors_of(config: dict[str, Any], key: str) -> list[tuple[str, str, list[int]]]:
    return [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[key]]


def grpc_config(grpc: grpcclient.InferenceServerClient, model: str,
                version: str = "") -> dict[str, Any]:
    """The gRPC answer, parsed by tritonclient's own model_config.proto, in the HTTP shape."""
    config = grpc.get_model_config(model, version).config
    assert isinstance(config, model_config_pb2.ModelConfig)
    name = model_config_pb2.DataType.Name
    plain: dict[str, Any] = {
        "name": config.name, "platform": config.platform, "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "input": [{"name": t.name, "data_type": name(t.data_type), "dims": list(t.dims),
                   **({"optional": True} if t.optional else {})} for t in config.input],
        "output": [{"name": t.name, "data_type": name(t.data_type), "dims": list(t.dims)}
                   for t in config.output],
        "default_model_filename": config.default_model_filename,
        "parameters": {k: {"string_value": v.string_value}
                       for k, v in config.parameters.items()},
    }
    if config.HasField("sequence_batching"):
        seq = config.sequence_batching
        plain["sequence_batching"] = {
            "max_sequence_idle_microseconds": seq.max_sequence_idle_microseconds,
            "state": [{"input_name": s.input_name, "output_name": s.output_name,
                       "data_type": name(s.data_type), "dims": list(s.dims),
                       "initial_state": [{"name": i.name, "data_type": name(i.data_type),
                                          "dims": list(i.dims), "zero_data": i.zero_data}
                                         for i in s.initial_state]}
                      for s in seq.state]}
    return plain


# -- model configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-lstm", "tiny-gru", "renamed-gru"])
def test_config_describes_the_stateful_model_alike_over_both_transports(
        http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient,
        model: str) -> None:
    shapes = shapes_of(http, model)
    config = http.get_model_config(model)
    assert config == grpc_config(grpc, model)
    assert (config["name"], config["platform"], config["max_batch_size"]) == (
        model, "onnxruntime_onnx", 0)
    assert tensors_of(config, "input") == [(shapes.input, "TYPE_FP32", [-1, -1, shapes.width])]
    assert tensors_of(config, "output") == [
        (shapes.output, "TYPE_FP32", [-1, -1, shapes.output_width])]
    sequence = config["sequence_batching"]
    assert sequence["max_sequence_idle_microseconds"] == TTL_S * 1_000_000
    assert shapes.states and [
        (s["input_name"], s["output_name"], s["data_type"], s["dims"],
         [(i["data_type"], i["dims"], i["zero_data"]) for i in s["initial_state"]])
        for s in sequence["state"]] == [
        (i, o, "TYPE_FP32", [layers, 1, hidden], [("TYPE_FP32", [layers, 1, hidden], True)])
        for i, o, layers, hidden in shapes.states]
    assert {k: v["string_value"] for k, v in config["parameters"].items()
            if k in ("max_batch", "max_delay_ms")} == {
        "max_batch": str(MAX_BATCH), "max_delay_ms": str(MAX_DELAY_MS)}


def test_config_of_a_version_and_of_what_is_not_there(
        http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient) -> None:
    assert http.get_model_config("tiny-lstm", "1")["name"] == "tiny-lstm"
    assert grpc_config(grpc, "tiny-lstm", "1") == http.get_model_config("tiny-lstm", "1")
    for model, version in (("no-such-model", ""), ("tiny-lstm", "9"), ("broken", "")):
        with pytest.raises(InferenceServerException) as over_http:
            http.get_model_config(model, version)
        assert over_http.value.status() == "404"
        with pytest.raises(InferenceServerException) as over_grpc:
            grpc.get_model_config(model, version)
        assert over_grpc.value.status() == "StatusCode.NOT_FOUND"
        assert over_grpc.value.message() == over_http.value.message()


def test_a_predict_only_model_has_no_sequence_batching(
        http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient) -> None:
    shapes = shapes_of(http, "bi-gru")
    config = http.get_model_config("bi-gru")
    assert config == grpc_config(grpc, "bi-gru")
    assert "sequence_batching" not in config
    assert tensors_of(config, "input")[1:] == [
        (i, "TYPE_FP32", [layers, -1, hidden]) for i, _, layers, hidden in shapes.states]
    assert all(t.get("optional") for t in config["input"][1:])


# -- statistics -------------------------------------------------------------------------------


def stats_of(http: httpclient.InferenceServerClient, model: str = MODEL) -> dict[str, Any]:
    (entry,) = http.get_inference_statistics(model)["model_stats"]
    return dict(entry)


def counts(entry: dict[str, Any]) -> dict[str, int]:
    """The counters a client relies on (gRPC sends uint64 as JSON strings; 0s are left out)."""
    infer = entry.get("inference_stats", {})
    return {
        "success": int(infer.get("success", {}).get("count", 0)),
        "fail": int(infer.get("fail", {}).get("count", 0)),
        "inference_count": int(entry.get("inference_count", 0)),
        "execution_count": int(entry.get("execution_count", 0)),
        "rows_run": int(infer.get("compute_infer", {}).get("count", 0)),
    }


def runs_by_rows(entry: dict[str, Any]) -> dict[int, int]:
    return {int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in entry.get("batch_stats", [])}


def step_of(width: int, steps: int = 2) -> np.ndarray:
    return RNG.normal(size=(steps, width)).astype(np.float32)


def over_rest_predict(server: ServerProcess, shapes: Shapes, n: int) -> None:
    for _ in range(n):
        r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict",
                       json={"inputs": [step_of(shapes.width).tolist()]})
        assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict",
                   json={"inputs": [step_of(shapes.width + 1).tolist()]})
    assert r.status_code == 400


def over_rest_steps(server: ServerProcess, shapes: Shapes, n: int) -> None:
    sid = httpx.post(f"{server.url}/v1/models/{MODEL}/sessions").json()["session_id"]
    for _ in range(n):
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                       json={"inputs": step_of(shapes.width).tolist()})
        assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                   json={"inputs": step_of(shapes.width + 1).tolist()})
    assert r.status_code == 400
    assert httpx.delete(f"{server.url}/v1/sessions/{sid}").status_code == 204


def over_websocket(server: ServerProcess, shapes: Shapes, n: int) -> None:
    with ws_connect(f"ws://127.0.0.1:{server.port}/v1/models/{MODEL}/stream",
                    open_timeout=10) as ws:
        json.loads(ws.recv(timeout=10))  # the hello
        for _ in range(n):
            ws.send(json.dumps({"inputs": step_of(shapes.width).tolist()}))
            assert "outputs" in json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"inputs": step_of(shapes.width + 1).tolist()}))
        assert json.loads(ws.recv(timeout=10))["status"] == 400


def v2_input(module: Any, x: np.ndarray, name: str) -> Any:
    tensor = module.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def over_v2_http(server: ServerProcess, shapes: Shapes, n: int) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        for i in range(n):  # a stateless call, then a sequence's steps: each is a request
            x = step_of(shapes.width)[None]
            client.infer(MODEL, [v2_input(httpclient, x, shapes.input)],
                         sequence_id=7001 if i else 0, sequence_start=i == 1,
                         sequence_end=i == n - 1)
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [v2_input(httpclient, step_of(shapes.width + 1)[None],
                                          shapes.input)])
    finally:
        client.close()


def over_grpc_unary(server: ServerProcess, shapes: Shapes, n: int) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for _ in range(n):
            client.infer(MODEL, [v2_input(grpcclient, step_of(shapes.width)[None],
                                          shapes.input)])
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [v2_input(grpcclient, step_of(shapes.width + 1)[None],
                                          shapes.input)])
    finally:
        client.close()


def over_grpc_stream(server: ServerProcess, shapes: Shapes, n: int) -> None:
    """A sequence: its start the whole way, its later steps the stream's short way; the
    refused step (too wide) goes the whole way and is counted once."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    replies: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: replies.put((result, error)))
    try:
        for i in range(n):
            client.async_stream_infer(MODEL, [v2_input(grpcclient, step_of(shapes.width)[None],
                                                       shapes.input)],
                                      sequence_id=7002, sequence_start=i == 0)
            assert replies.get(timeout=10)[1] is None
        client.async_stream_infer(MODEL, [v2_input(grpcclient, step_of(shapes.width + 1)[None],
                                                   shapes.input)], sequence_id=7002)
        assert replies.get(timeout=10)[1] is not None
    finally:
        client.stop_stream()
        client.close()


TRANSPORTS: dict[str, Callable[[ServerProcess, Shapes, int], None]] = {
    "rest-predict": over_rest_predict, "rest-steps": over_rest_steps,
    "websocket": over_websocket, "v2-http": over_v2_http, "grpc-unary": over_grpc_unary,
    "grpc-stream": over_grpc_stream}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_each_request_counts_once_on_every_transport(
        server: ServerProcess, http: httpclient.InferenceServerClient,
        grpc: grpcclient.InferenceServerClient, transport: str) -> None:
    """n requests answered and one refused, one after another (so each answered request is
    one ONNX Runtime run of one row): success and inference_count rise by n, fail by 1,
    execution_count by n; gRPC reports the same numbers as HTTP."""
    shapes, n = shapes_of(http, MODEL), 5
    before = stats_of(http)
    started_ms = time.time_ns() // 1_000_000
    TRANSPORTS[transport](server, shapes, n)
    after = stats_of(http)
    rose = {k: v - counts(before)[k] for k, v in counts(after).items()}
    assert rose == {"success": n, "fail": 1, "inference_count": n, "execution_count": n,
                    "rows_run": n}
    assert runs_by_rows(after).get(1, 0) - runs_by_rows(before).get(1, 0) == n
    assert started_ms <= int(after["last_inference"]) <= time.time_ns() // 1_000_000
    (over_grpc,) = grpc.get_inference_statistics(MODEL, as_json=True)["model_stats"]
    assert counts(over_grpc) == counts(after)
    assert runs_by_rows(over_grpc) == runs_by_rows(after)


def test_batch_stats_are_keyed_by_rows_per_run(
        server: ServerProcess, http: httpclient.InferenceServerClient) -> None:
    """One gateway call stepping k sessions is one request and one run of k rows; one
    predict of k sequences of one length too. (Triton would count k inferences for a request
    of batch k; rnnserve counts requests, and rows in batch_stats, as
    docs/config_and_statistics.md says.)"""
    shapes, k = shapes_of(http, MODEL), 4
    sids = [httpx.post(f"{server.url}/v1/models/{MODEL}/sessions").json()["session_id"]
            for _ in range(k)]
    x = RNG.normal(size=(k, 3, shapes.width)).astype(np.float32)
    before = stats_of(http)
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/steps", json={"steps": [
        {"session_id": sid, "inputs": x[i].tolist()} for i, sid in enumerate(sids)]})
    assert r.status_code == 200 and all("outputs" in item for item in r.json()["results"])
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict", json={"inputs": x.tolist()})
    assert r.status_code == 200
    after = stats_of(http)
    rose = {key: v - counts(before)[key] for key, v in counts(after).items()}
    assert rose == {"success": 2, "fail": 0, "inference_count": 2, "execution_count": 2,
                    "rows_run": 2 * k}
    assert runs_by_rows(after).get(k, 0) - runs_by_rows(before).get(k, 0) == 2
    for sid in sids:
        httpx.delete(f"{server.url}/v1/sessions/{sid}")


def test_statistics_of_every_model_and_of_what_is_not_there(
        http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient) -> None:
    listed = {(s["name"], s["version"]) for s in
              http.get_inference_statistics()["model_stats"]}
    assert {("tiny-lstm", "1"), ("tiny-lstm", "2"), ("tiny-gru", "1")} <= listed
    assert not any(name == "broken" for name, _ in listed)
    over_grpc = grpc.get_inference_statistics(as_json=True)["model_stats"]
    assert {(s["name"], s["version"]) for s in over_grpc} == listed
    assert [s["version"] for s in http.get_inference_statistics("tiny-lstm")["model_stats"]
            ] == ["1", "2"]
    (one,) = http.get_inference_statistics("tiny-lstm", "2")["model_stats"]
    assert (one["name"], one["version"]) == ("tiny-lstm", "2")
    for model, version in (("no-such-model", ""), ("tiny-lstm", "9")):
        with pytest.raises(InferenceServerException):
            http.get_inference_statistics(model, version)
        with pytest.raises(InferenceServerException) as over_grpc_error:
            grpc.get_inference_statistics(model, version)
        assert over_grpc_error.value.status() == "StatusCode.NOT_FOUND"
