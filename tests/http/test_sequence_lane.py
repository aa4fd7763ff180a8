"""The v2 sequence lane (http/sequence_lane.py), on a real `rnnserve serve`: the later steps of
a KServe v2 sequence on a keep-alive connection that already stepped it are answered from their
batch. What a client relies on: the answers are the whole way's (outputs equal one prediction
of the whole sequence; refusals, a sequence ended elsewhere, bad inputs answered alike and
changing nothing), request ids and metrics as on every request, and the time limit's rule:
a step answered 504 was not applied, a step answered 200 was. The server's counter of lane
steps shows which requests took the lane."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import ServerProcess, serving
from tests.http.test_connection_limits import open_socket, read_response

MODEL = "tiny-lstm"
FEATURES = 3


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return orjson.loads(self.content)


class Link:
    """One keep-alive connection whose every request goes in one write, head and body (as
    tritonclient and bench.peers' client send them): the direct path's requests."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = open_socket(int(server.url.rsplit(":", 1)[1]))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.path = f"/v2/models/{MODEL}/infer"

    def post(self, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        lines = [f"POST {self.path} HTTP/1.1", "Host: 127.0.0.1",
                 f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return Reply(*read_response(self.sock))

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def lane_count(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.search(r"^rnnserve_http_v2_sequence_lane_steps_total (\S+)$", text, re.M)
    assert found, "the lane's counter is missing from /metrics"
    return float(found.group(1))


def step_body(x: np.ndarray, **parameters: object) -> tuple[bytes, dict[str, str]]:
    """A binary v2 request of timesteps x [time, FEATURES] asking for the sequence output."""
    data = np.ascontiguousarray(x, "<f4").tobytes()
    head = orjson.dumps({
        "parameters": parameters,
        "inputs": [{"name": "input", "shape": [1, len(x), FEATURES], "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": "output", "parameters": {"binary_data": True}}]})
    return head + data, {"Inference-Header-Content-Length": str(len(head)),
                         "Content-Type": "application/octet-stream"}


def output_of(response: Reply | httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    header = orjson.loads(response.content[:split])
    (tensor,) = header["outputs"]
    return np.frombuffer(response.content[split:], "<f4").reshape(tensor["shape"])


def whole(server: ServerProcess, seq: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{server.url}/v1/models/{MODEL}/predict", json={"inputs": [seq.tolist()]},
                   timeout=30)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"][0], np.float32)


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("lane") / "server.log") as proc:
        yield proc


def test_later_steps_take_the_lane_and_answer_as_the_whole_way(server: ServerProcess) -> None:
    seq = np.random.default_rng(3).standard_normal((9, FEATURES)).astype(np.float32)
    before = lane_count(server)
    got = []
    with Link(server) as client:  # one keep-alive connection
        body, headers = step_body(seq[:2], sequence_id=4242, sequence_start=True)
        got.append(output_of(client.post(body, headers)))
        for t in range(2, 8):  # each a step of its own, one with a client's request id
            body, headers = step_body(seq[t:t + 1], sequence_id=4242, step_id=f"s{t}")
            if t == 5:
                headers["X-Request-Id"] = "lane-5"
            answer = client.post(body, headers)
            assert answer.headers["x-request-id"] == ("lane-5" if t == 5 else
                                                      answer.headers["x-request-id"])
            assert answer.headers["x-request-id"]
            got.append(output_of(answer))
        assert lane_count(server) - before == 6  # the start went the whole way
        # a step id sent again is replayed, not applied twice
        body, headers = step_body(seq[7:8], sequence_id=4242, step_id="s7")
        np.testing.assert_array_equal(output_of(client.post(body, headers)), got[-1])
        body, headers = step_body(seq[8:9], sequence_id=4242, sequence_end=True)
        got.append(output_of(client.post(body, headers)))
    assert lane_count(server) - before == 7  # the replay too; not the end
    np.testing.assert_allclose(np.concatenate([g[0] for g in got]), whole(server, seq),
                               atol=1e-5)
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    assert re.search(r'^rnnserve_http_requests_total\{method="POST",model="tiny-lstm",'
                     r'route="/v2/models/\{model\}/infer",status="200"\} ([0-9.]+)$',
                     metrics, re.M)


def test_refusals_end_and_a_second_connection_answer_as_the_whole_way(
        server: ServerProcess) -> None:
    seq = np.random.default_rng(4).standard_normal((4, FEATURES)).astype(np.float32)
    url = f"{server.url}/v2/models/{MODEL}/infer"
    bad = {
        "unknown output": orjson.dumps({
            "parameters": {"sequence_id": 515},
            "inputs": [{"name": "input", "shape": [1, 1, FEATURES], "datatype": "FP32",
                        "data": [0.0] * FEATURES}],
            "outputs": [{"name": "nope"}]}),
        "a state input": orjson.dumps({
            "parameters": {"sequence_id": 515},
            "inputs": [{"name": "input", "shape": [1, 1, FEATURES], "datatype": "FP32",
                        "data": [0.0] * FEATURES},
                       {"name": "h0", "shape": [2, 1, 8], "datatype": "FP32",
                        "data": [0.0] * 16}]}),
        "two features": orjson.dumps({
            "parameters": {"sequence_id": 515},
            "inputs": [{"name": "input", "shape": [1, 1, 2], "datatype": "FP32",
                        "data": [0.0, 1.0]}]}),
        "a bad step id": orjson.dumps({
            "parameters": {"sequence_id": 515, "step_id": ""},
            "inputs": [{"name": "input", "shape": [1, 1, FEATURES], "datatype": "FP32",
                        "data": [0.0] * FEATURES}]}),
    }
    nan_body, nan_headers = step_body(np.full((1, FEATURES), np.nan, np.float32),
                                      sequence_id=515)
    with Link(server) as lane, Link(server) as other:
        body, headers = step_body(seq[:1], sequence_id=515, sequence_start=True)
        got = [output_of(lane.post(body, headers))]
        before = lane_count(server)
        for what, body in bad.items():  # each answered by the whole way, on both connections
            mine, theirs = (c.post(body) for c in (lane, other))
            assert mine.status_code == theirs.status_code and 400 <= mine.status_code < 500, what
            assert mine.json() == theirs.json(), what
        mine = lane.post(nan_body, nan_headers)
        assert mine.status_code == 400 and "finite" in mine.text, mine.text
        assert lane_count(server) == before  # none of them took the lane
        # the sequence stepped on, refused requests changed nothing; a second connection's
        # first step of it goes the whole way, its next one the lane
        for t, client in ((1, lane), (2, other), (3, other)):
            body, headers = step_body(seq[t:t + 1], sequence_id=515)
            got.append(output_of(client.post(body, headers)))
        assert lane_count(server) - before == 2  # `lane`'s step and `other`'s second
        np.testing.assert_allclose(np.concatenate([g[0] for g in got]), whole(server, seq),
                                   atol=1e-5)
        # ended on `other`: the lane's connection is answered as any would be
        body, headers = step_body(seq[:1], sequence_id=515, sequence_end=True)
        assert other.post(body, headers).status_code == 200
        body, headers = step_body(seq[:1], sequence_id=515)
        counted = lane_count(server)
        mine = lane.post(body, headers)  # tried on the lane, failed unwritten: the whole way
        fresh = httpx.post(url, content=body, headers=headers, timeout=30)
        assert mine.status_code == fresh.status_code == 400
        assert mine.json() == fresh.json() and "not active" in mine.text
        assert lane_count(server) == counted  # answered by the whole way, counted there


@pytest.fixture(scope="module")
def hurried(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ServerProcess]:
    """One ONNX Runtime run at a time and a 0.1 s time limit: a step queued behind long
    predictions meets the limit before its batch can write it."""
    with serving(["--models", str(tiny_repo), "--request-timeout-s", "0.1",
                  "--inference-workers", "1"],
                 tmp_path_factory.mktemp("lane-hurried") / "server.log") as proc:
        yield proc


def test_a_step_answered_504_was_not_applied(hurried: ServerProcess) -> None:
    x = np.ones((1, FEATURES), np.float32)
    # stateless v2 calls of 16 x 10,000 timesteps in binary: decoded at once (a JSON body
    # this long can take longer than the limit to parse on a loaded machine, and never run)
    data = np.zeros((16, 10_000, FEATURES), "<f4").tobytes()
    head = orjson.dumps({"inputs": [{"name": "input", "shape": [16, 10_000, FEATURES],
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(data)}}],
                         "outputs": [{"name": "output"}]})
    stop = threading.Event()

    def predicting() -> None:  # keeps the one run slot busy (each answered 504 or 200)
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                client.post(f"{hurried.url}/v2/models/{MODEL}/infer", content=head + data,
                            headers={"Inference-Header-Content-Length": str(len(head))})

    before = lane_count(hurried)
    answered = {200: 0, 504: 0}
    with Link(hurried) as client:
        for _ in range(20):  # (a start that met the limit was not applied: start again)
            body, headers = step_body(x, sequence_id=616, sequence_start=True)
            if client.post(body, headers).status_code == 200:
                break
        else:
            pytest.fail("no sequence start within the 0.1 s limit in 20 tries")
        for _ in range(5):  # remembered, then steps on the lane while nothing else runs
            body, headers = step_body(x, sequence_id=616)
            r = client.post(body, headers)
            answered[r.status_code] = answered.get(r.status_code, 0) + 1
        assert lane_count(hurried) - before == 5
        threads = [threading.Thread(target=predicting) for _ in range(2)]
        for thread in threads:
            thread.start()
        sent = 0
        try:  # until some steps met the limit (8-10 of 60 on an idle machine), 400 at most
            while sent < 400 and (sent < 60 or answered[504] == 0):
                body, headers = step_body(x, sequence_id=616)
                r = client.post(body, headers)
                sent += 1
                assert r.status_code in answered, r.text
                if r.status_code == 504:
                    assert "no step was applied" in r.text, r.text
                answered[r.status_code] += 1
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert lane_count(hurried) - before == 5 + sent  # every step took the lane
    steps = httpx.get(f"{hurried.url}/v1/sessions/v2.{MODEL}.n.616", timeout=10)
    assert steps.status_code == 200, steps.text
    # the start's timestep, then every step answered 200 and no other
    assert steps.json()["steps"] == 1 + answered[200], answered
    print("lane steps under load, by status:", answered)
    assert answered[504] > 0, answered  # the limit was met on the lane
