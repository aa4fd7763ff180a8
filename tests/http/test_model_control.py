"""Model control (--model-control poll|explicit|none) and the KServe v2 repository extension,
against a real server over a model repository of real files (copied from models/) that the
tests change while it serves: a new version is picked up while a WebSocket and a gRPC stream
keep stepping on the old one, changed files load as a new instance that only new sessions
use, removed models unload, a broken file leaves the previous version serving and the index
says why; in explicit mode only --load-model models load, then tritonclient loads and unloads
them; load and unload outside explicit mode answer Triton's error."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from rnnserve.grpc.generated import inference_pb2 as pb
from rnnserve.grpc.generated import inference_pb2_grpc
from tritonclient.utils import InferenceServerException
from websockets.sync.client import connect

from tests.conftest import COMMITTED_MODELS, ServerProcess, serving
from tests.grpc.test_grpc_stream_steps import Stream, outputs_of

RNG = np.random.default_rng(18)
POLL_S = 1.0
LOAD_ALLOWANCE_S = 20.0
"""Time a loaded machine may take to read and load one small model, beyond the poll interval."""
NOT_ALLOWED = "explicit model load / unload is not allowed"


def put_version(repo: Path, name: str, version: int, committed: str) -> None:
    """models/<committed>'s files as repo/<name>/<version>/, moved into place at once (a
    rename), so a poll never sees half a version."""
    staging = repo / f".staging-{name}-{version}"
    staging.mkdir(parents=True)
    shutil.copy(COMMITTED_MODELS / committed / "model.onnx", staging / "model.onnx")
    shutil.copy(COMMITTED_MODELS / committed / "model.json", staging / "model.json")
    (repo / name).mkdir(exist_ok=True)
    target = repo / name / str(version)
    if target.exists():  # the same version with other files: swap them in by renames
        for file in ("model.json", "model.onnx"):
            (staging / file).replace(target / file)
        staging.rmdir()
        return
    staging.replace(target)


def index(server: ServerProcess, **body: Any) -> dict[tuple[str, str], dict[str, Any]]:
    r = httpx.post(f"{server.url}/v2/repository/index", json=body or None, timeout=10)
    assert r.status_code == 200, r.text
    return {(row["name"], row.get("version", "")): row for row in r.json()}


def wait_for(check: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not within {within_s:g} s: {what}"
        time.sleep(0.1)


def input_width(server: ServerProcess, model: str, version: str = "") -> int:
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
    meta = httpx.get(server.url + path, timeout=10).json()
    return int(meta["inputs"][0]["shape"][-1])


def predict(server: ServerProcess, model: str, seq: np.ndarray, version: str = ""
            ) -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/{model}/predict",
                   params={"version": version} if version else None,
                   json={"inputs": [seq.tolist()]}, timeout=30)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0], np.float32)


def sequence_step(x: np.ndarray, model: str, version: str, sequence_id: int,
                  start: bool) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=model, model_version=version)
    message.parameters["sequence_id"].int64_param = sequence_id
    if start:
        message.parameters["sequence_start"].bool_param = True
    message.inputs.add(name="input", datatype="FP32", shape=[1, *x.shape])
    message.raw_input_contents.append(x.astype("<f4").tobytes())
    return message


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    put_version(root, "forecast", 1, "temperature-gru")
    return root


def test_poll_serves_a_new_version_while_streams_step_on_the_old(
        repo: Path, tmp_path: Path) -> None:
    with serving(["--models", str(repo), "--model-control", "poll",
                  "--repository-poll-s", str(POLL_S)], tmp_path / "server.log",
                 grpc=True) as server:
        width = input_width(server, "forecast")
        seq = RNG.normal(size=(30, width)).astype(np.float32)
        expected = predict(server, "forecast", seq, "1")
        with ExitStack() as stack:
            channel = stack.enter_context(grpc.insecure_channel(server.grpc_url))
            stream = Stream(inference_pb2_grpc.GRPCInferenceServiceStub(channel))
            stack.callback(stream.close)
            ws = stack.enter_context(
                connect(f"ws://127.0.0.1:{server.port}/v1/models/forecast/stream"))
            assert json.loads(ws.recv(timeout=10))["version"] == 1
            ws_got: list[list[float]] = []
            grpc_got: list[np.ndarray] = []

            def step(t: int) -> None:
                ws.send(json.dumps({"inputs": seq[t:t + 1].tolist()}))
                reply = json.loads(ws.recv(timeout=30))
                assert "error" not in reply, reply
                ws_got.extend(reply["outputs"])
                answer = stream.step(sequence_step(seq[t:t + 1], "forecast", "1", 7, t == 0))
                assert not answer.error_message, answer.error_message
                assert answer.infer_response.model_version == "1"
                grpc_got.append(outputs_of(answer.infer_response)["output"][0])

            for t in range(5):
                step(t)
            put_version(repo, "forecast", 2, "temperature-rnn")
            added = time.monotonic()
            t = 5
            while index(server).get(("forecast", "2"), {}).get("state") != "READY":
                assert time.monotonic() - added < 2 * POLL_S + LOAD_ALLOWANCE_S, index(server)
                if t < len(seq):  # the streams step on while the new version loads
                    step(t)
                    t += 1
            for rest in range(t, len(seq)):
                step(rest)
        np.testing.assert_allclose(np.asarray(ws_got), expected, atol=1e-4)
        np.testing.assert_allclose(np.concatenate(grpc_got), expected, atol=1e-4)
        meta = httpx.get(f"{server.url}/v2/models/forecast").json()
        assert meta["versions"] == ["1", "2"]
        with connect(f"ws://127.0.0.1:{server.port}/v1/models/forecast/stream") as new:
            assert json.loads(new.recv(timeout=10))["version"] == 2  # new sessions: the newest
        refused = httpx.post(f"{server.url}/v2/repository/models/forecast/unload")
        assert refused.status_code == 409 and NOT_ALLOWED in refused.json()["error"]


def test_poll_changed_files_serve_new_sessions_while_old_ones_keep_their_weights(
        repo: Path, tmp_path: Path) -> None:
    put_version(repo, "other", 1, "temperature-lstm")
    with serving(["--models", str(repo), "--model-control", "poll",
                  "--repository-poll-s", str(POLL_S)], tmp_path / "server.log",
                 grpc=True) as server, grpc.insecure_channel(server.grpc_url) as channel:
        width = input_width(server, "forecast")
        seq = RNG.normal(size=(12, width)).astype(np.float32)
        old_weights = predict(server, "forecast", seq)
        created = httpx.post(f"{server.url}/v1/models/forecast/sessions", json={}).json()
        sid = created["session_id"]
        first = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                           json={"inputs": seq[:6].tolist()}).json()["outputs"]
        stream = Stream(inference_pb2_grpc.GRPCInferenceServiceStub(channel))
        streamed = [outputs_of(stream.step(sequence_step(
            seq[t:t + 1], "forecast", "", 9, t == 0)).infer_response)["output"][0]
            for t in range(6)]

        put_version(repo, "forecast", 1, "temperature-rnn")  # version 1, other weights
        wait_for(lambda: not np.allclose(predict(server, "forecast", seq), old_weights,
                                         atol=1e-4),
                 2 * POLL_S + LOAD_ALLOWANCE_S, "the changed files serve predictions")
        new_weights = predict(server, "forecast", seq)
        second = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                            json={"inputs": seq[6:].tolist()})
        assert second.status_code == 200, second.text
        np.testing.assert_allclose(np.asarray(first + second.json()["outputs"]), old_weights,
                                   atol=1e-4)  # the live session finished on its weights
        for t in range(6, len(seq)):  # and so does the gRPC stream's sequence
            answer = stream.step(sequence_step(seq[t:t + 1], "forecast", "", 9, False))
            assert not answer.error_message, answer.error_message
            streamed.append(outputs_of(answer.infer_response)["output"][0])
        stream.close()
        np.testing.assert_allclose(np.concatenate(streamed), old_weights, atol=1e-4)
        fresh = httpx.post(f"{server.url}/v1/models/forecast/sessions", json={}).json()
        steps = httpx.post(f"{server.url}/v1/sessions/{fresh['session_id']}/step",
                           json={"inputs": seq.tolist()}).json()["outputs"]
        np.testing.assert_allclose(np.asarray(steps), new_weights, atol=1e-4)

        shutil.rmtree(repo / "other")  # a removed model is unloaded
        wait_for(lambda: index(server)[("other", "1")]["state"] == "UNAVAILABLE",
                 2 * POLL_S + LOAD_ALLOWANCE_S, "the removed model unloaded")
        assert "removed" in index(server)[("other", "1")]["reason"]
        gone = httpx.post(f"{server.url}/v1/models/other/predict",
                          json={"inputs": [seq.tolist()]})
        assert gone.status_code == 404, gone.text
        assert ("other", "1") not in index(server, ready=True)


def test_poll_a_broken_new_version_leaves_the_old_one_serving(
        repo: Path, tmp_path: Path) -> None:
    with serving(["--models", str(repo), "--model-control", "poll",
                  "--repository-poll-s", str(POLL_S)], tmp_path / "server.log") as server:
        width = input_width(server, "forecast")
        seq = RNG.normal(size=(4, width)).astype(np.float32)
        before = predict(server, "forecast", seq)
        broken = repo / ".staging-broken"
        broken.mkdir()
        (broken / "model.onnx").write_bytes(b"not an onnx file")
        broken.replace(repo / "forecast" / "2")
        wait_for(lambda: ("forecast", "2") in index(server), 2 * POLL_S + LOAD_ALLOWANCE_S,
                 "the broken version in the index")
        row = index(server)[("forecast", "2")]
        assert row["state"] == "UNAVAILABLE" and "protobuf" in row["reason"].lower(), row
        assert index(server)[("forecast", "1")]["state"] == "READY"
        np.testing.assert_allclose(predict(server, "forecast", seq), before, atol=1e-6)
        meta = httpx.get(f"{server.url}/v2/models/forecast").json()
        assert meta["versions"] == ["1"]  # the default version is still the one that loads


@pytest.fixture
def explicit(repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    put_version(repo, "other", 1, "temperature-lstm")
    with serving(["--models", str(repo), "--model-control", "explicit",
                  "--load-model", "forecast"], tmp_path / "server.log", grpc=True) as server:
        yield server


def test_explicit_loads_only_the_named_models_then_what_tritonclient_asks(
        explicit: ServerProcess, repo: Path) -> None:
    triton = httpclient.InferenceServerClient(explicit.url.removeprefix("http://"))
    rows = {(r["name"], r.get("version", "")): r for r in triton.get_model_repository_index()}
    assert rows[("forecast", "1")]["state"] == "READY"
    assert rows[("other", "")]["state"] == "UNAVAILABLE"
    assert "not loaded" in rows[("other", "")]["reason"]
    assert not triton.is_model_ready("other")

    triton.load_model("other")
    assert triton.is_model_ready("other")
    width = input_width(explicit, "other")
    seq = RNG.normal(size=(3, width)).astype(np.float32)
    predict(explicit, "other", seq)
    triton.unload_model("forecast")
    assert not triton.is_model_ready("forecast")
    r = httpx.post(f"{explicit.url}/v1/models/forecast/predict", json={"inputs": [seq.tolist()]})
    assert r.status_code == 404, r.text
    assert index(explicit)[("forecast", "1")]["state"] == "UNAVAILABLE"
    assert index(explicit, ready=True).keys() == {("other", "1")}
    triton.load_model("forecast")
    assert triton.is_model_ready("forecast")


def test_explicit_refuses_config_and_file_parameters_and_unknown_models(
        explicit: ServerProcess) -> None:
    url = f"{explicit.url}/v2/repository/models/forecast/load"
    r = httpx.post(url, json={"parameters": {"config": "{}", "file:1/model.onnx": "AAAA"}})
    assert r.status_code == 400
    assert "'config'" in r.json()["error"] and "'file:1/model.onnx'" in r.json()["error"]
    r = httpx.post(f"{explicit.url}/v2/repository/models/nope/load")
    assert r.status_code == 400 and "nope" in r.json()["error"], r.text
    r = httpx.post(f"{explicit.url}/v2/repository/models/nope/unload")
    assert r.status_code == 404, r.text
    r = httpx.post(f"{explicit.url}/v2/repository/index", json={"ready": "yes"})
    assert r.status_code == 400, r.text


def test_explicit_a_broken_file_on_load_leaves_the_previous_one_serving(
        explicit: ServerProcess, repo: Path) -> None:
    width = input_width(explicit, "forecast")
    seq = RNG.normal(size=(4, width)).astype(np.float32)
    before = predict(explicit, "forecast", seq)
    staging = repo / "broken.onnx"
    staging.write_bytes(b"not an onnx file")
    staging.replace(repo / "forecast" / "1" / "model.onnx")
    triton = httpclient.InferenceServerClient(explicit.url.removeprefix("http://"))
    for _ in range(2):  # asked again with the same broken file, it fails again
        with pytest.raises(InferenceServerException) as failed:
            triton.load_model("forecast")
        assert "version 1" in str(failed.value) and "serving on" in str(failed.value)
    row = index(explicit)[("forecast", "1")]
    assert row["state"] == "READY" and "failed to load" in row["reason"], row
    np.testing.assert_allclose(predict(explicit, "forecast", seq), before, atol=1e-6)
    put_version(repo, "forecast", 1, "temperature-rnn")  # good files again: they load
    triton.load_model("forecast")
    assert index(explicit)[("forecast", "1")] == {
        "name": "forecast", "version": "1", "state": "READY", "reason": ""}
    assert not np.allclose(predict(explicit, "forecast", seq), before, atol=1e-4)


def test_none_mode_answers_tritons_error_to_load_and_unload(
        repo: Path, tmp_path: Path) -> None:
    with serving(["--models", str(repo)], tmp_path / "server.log") as server:
        triton = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        for call in (triton.load_model, triton.unload_model):
            with pytest.raises(InferenceServerException, match=NOT_ALLOWED):
                call("forecast")
        assert triton.is_model_ready("forecast")
        rows = triton.get_model_repository_index()
        assert rows == [{"name": "forecast", "version": "1", "state": "READY", "reason": ""}]


def test_explicit_repository_over_grpc_with_tritonclient(explicit: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    triton = grpcclient.InferenceServerClient(explicit.grpc_url)
    index_rows = triton.get_model_repository_index(as_json=True)["models"]
    rows = {(r["name"], r.get("version", "")): r for r in index_rows}
    assert rows[("forecast", "1")]["state"] == "READY"
    assert rows[("other", "")]["state"] == "UNAVAILABLE"
    triton.load_model("other")
    assert triton.is_model_ready("other")
    triton.unload_model("other")
    assert not triton.is_model_ready("other")
    assert index(explicit)[("other", "1")]["state"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException, match="'config'"):
        triton.load_model("other", config="{}")
    with pytest.raises(InferenceServerException, match="nope"):
        triton.load_model("nope")


def test_poll_mode_answers_tritons_error_over_grpc(repo: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    with serving(["--models", str(repo), "--model-control", "poll"],
                 tmp_path / "server.log", grpc=True) as server:
        triton = grpcclient.InferenceServerClient(server.grpc_url)
        for call in (triton.load_model, triton.unload_model):
            with pytest.raises(InferenceServerException, match=NOT_ALLOWED) as refused:
                call("forecast")
            assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert triton.is_model_ready("forecast")
