"""Retirement (issue 19, item 2), against real servers over a model repository of real files:
a version removed from the repository (poll) while sessions live on it takes no new sessions,
its REST session, WebSocket stream and gRPC sequence step on with its own weights until the
grace (--retire-grace-s) ends, and then every transport answers the retired error (REST and
v2 HTTP 410, gRPC FAILED_PRECONDITION, WebSocket close 4410); a version whose sessions all end
is let go before its grace; the listing counts the sessions of each version."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from rnnserve.grpc.generated import inference_pb2_grpc
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import ServerProcess, serving
from tests.http.test_model_control import (
    index,
    input_width,
    predict,
    put_version,
    sequence_step,
    wait_for,
)

RNG = np.random.default_rng(19)
POLL_S = 0.5
GRACE_S = 6.0
LOAD_ALLOWANCE_S = 20.0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    put_version(root, "forecast", 1, "temperature-gru")
    put_version(root, "forecast", 2, "temperature-rnn")
    return root


def poll_server(repo: Path, tmp_path: Path, grace_s: float, *, with_grpc: bool = False
                ) -> Any:
    return serving(["--models", str(repo), "--model-control", "poll", "--repository-poll-s",
                    str(POLL_S), "--retire-grace-s", str(grace_s)], tmp_path / "server.log",
                   grpc=with_grpc)


def rest_step(server: ServerProcess, session: str, x: np.ndarray) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/sessions/{session}/step",
                      json={"inputs": x.tolist()}, timeout=30)


def v2_step(server: ServerProcess, x: np.ndarray, sequence_id: int, start: bool
            ) -> httpx.Response:
    params: dict[str, Any] = {"sequence_id": sequence_id}
    if start:
        params["sequence_start"] = True
    body = {"parameters": params, "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [1, *x.shape],
         "data": x.ravel().tolist()}]}
    return httpx.post(f"{server.url}/v2/models/forecast/versions/1/infer", json=body,
                      timeout=30)


def state_of(server: ServerProcess, version: str) -> str:
    return str(index(server).get(("forecast", version), {}).get("state"))


@pytest.mark.parametrize("with_grpc", [False, True], ids=["http", "http+grpc"])
def test_a_removed_version_steps_on_within_its_grace_then_every_transport_says_retired(
        repo: Path, tmp_path: Path, with_grpc: bool) -> None:
    with poll_server(repo, tmp_path, GRACE_S, with_grpc=with_grpc) as server, \
            ExitStack() as stack:
        width = input_width(server, "forecast", "1")
        seq = RNG.normal(size=(12, width)).astype(np.float32)
        expected = predict(server, "forecast", seq, "1")  # version 1's weights
        r = httpx.post(f"{server.url}/v1/models/forecast/sessions", params={"version": "1"},
                       timeout=10)
        assert r.status_code == 201, r.text
        session = r.json()["session_id"]
        ws = stack.enter_context(connect(
            f"ws://127.0.0.1:{server.port}/v1/models/forecast/stream?version=1"))
        assert json.loads(ws.recv(timeout=10))["version"] == 1
        stub = None
        if with_grpc:
            channel = stack.enter_context(grpc.insecure_channel(server.grpc_url))
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(channel)
        got: dict[str, list[Any]] = {"rest": [], "ws": [], "v2": []}

        def step_all(t: int) -> None:
            x = seq[t:t + 1]
            r = rest_step(server, session, x)
            assert r.status_code == 200, r.text
            got["rest"].extend(r.json()["outputs"])
            ws.send(json.dumps({"inputs": x.tolist()}))
            reply = json.loads(ws.recv(timeout=30))
            assert "error" not in reply, reply
            got["ws"].extend(reply["outputs"])
            answer = v2_step(server, x, 7, t == 0)
            assert answer.status_code == 200, answer.text
            got["v2"].append(answer.json()["outputs"][0]["data"])
            if stub is not None:
                stub.ModelInfer(sequence_step(x, "forecast", "1", 8, t == 0), timeout=30)

        for t in range(3):
            step_all(t)
        shutil.rmtree(repo / "forecast" / "1")
        wait_for(lambda: state_of(server, "1") == "UNLOADING", 2 * POLL_S + LOAD_ALLOWANCE_S,
                 "version 1 retiring")
        retired_at = time.monotonic()
        listing = httpx.get(f"{server.url}/v1/models", timeout=10).json()
        live = 4 if with_grpc else 3
        assert listing["sessions_per_version"]["forecast"] == {"1": live}, listing
        assert [(r["name"], r["version"]) for r in listing["retiring"]] == [("forecast", 1)]
        # no new sessions on it (410), while the default version serves new ones
        refused = httpx.post(f"{server.url}/v1/models/forecast/sessions",
                             params={"version": "1"}, timeout=10)
        assert refused.status_code == 410, refused.text
        assert "retired" in refused.json()["error"]
        fresh = httpx.post(f"{server.url}/v1/models/forecast/sessions", timeout=10)
        assert fresh.status_code == 201 and fresh.json()["version"] == 2, fresh.text
        for t in range(3, 8):  # within the grace: every transport steps on, on version 1
            step_all(t)
        assert time.monotonic() - retired_at < GRACE_S, "the machine was too slow to test"
        for outputs in got.values():
            np.testing.assert_allclose(np.asarray(outputs, np.float32).reshape(8, -1),
                                       expected[:8], atol=1e-5)
        wait_for(lambda: state_of(server, "1") == "UNAVAILABLE", GRACE_S + 5,
                 "version 1 let go once its grace ended")
        x = seq[8:9]
        r = rest_step(server, session, x)
        assert r.status_code == 410, r.text
        assert "retired" in r.json()["error"] and "POST /v1/models/" in r.json()["error"]
        r = v2_step(server, x, 7, False)
        assert r.status_code == 410, r.text
        if stub is not None:
            with pytest.raises(grpc.RpcError) as failed:
                stub.ModelInfer(sequence_step(x, "forecast", "1", 8, False), timeout=30)
            assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION, failed.value
        ws.send(json.dumps({"inputs": x.tolist()}))
        reply = json.loads(ws.recv(timeout=30))
        assert reply["status"] == 410 and "retired" in reply["error"], reply
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4410
        assert closed.value.rcvd.reason == "retired"


def test_a_version_whose_sessions_end_is_let_go_before_its_grace(
        repo: Path, tmp_path: Path) -> None:
    with poll_server(repo, tmp_path, 600) as server:
        r = httpx.post(f"{server.url}/v1/models/forecast/sessions", params={"version": "1"},
                       timeout=10)
        assert r.status_code == 201, r.text
        session = r.json()["session_id"]
        shutil.rmtree(repo / "forecast" / "1")
        wait_for(lambda: state_of(server, "1") == "UNLOADING", 2 * POLL_S + LOAD_ALLOWANCE_S,
                 "version 1 retiring")
        width = input_width(server, "forecast", "2")
        r = rest_step(server, session, np.zeros((1, width), np.float32))
        assert r.status_code == 200, r.text
        assert httpx.delete(f"{server.url}/v1/sessions/{session}", timeout=10).status_code == 204
        wait_for(lambda: state_of(server, "1") == "UNAVAILABLE", 10,
                 "version 1 let go once its last session ended")


def test_a_new_default_version_alone_retires_nothing(repo: Path, tmp_path: Path) -> None:
    with poll_server(repo, tmp_path, 0) as server:
        r = httpx.post(f"{server.url}/v1/models/forecast/sessions", params={"version": "2"},
                       timeout=10)
        session = r.json()["session_id"]
        put_version(repo, "forecast", 3, "temperature-gru")
        wait_for(lambda: state_of(server, "3") == "READY", 2 * POLL_S + LOAD_ALLOWANCE_S,
                 "version 3 loaded")
        time.sleep(2 * POLL_S)
        assert state_of(server, "2") == "READY"
        width = input_width(server, "forecast", "2")
        r = rest_step(server, session, np.zeros((1, width), np.float32))
        assert r.status_code == 200, r.text
