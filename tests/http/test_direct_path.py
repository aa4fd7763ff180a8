"""The hot routes' direct path (http/direct_path.py), on a real `rnnserve serve`: a request
whose head and body arrive in one read is answered from the HTTP protocol; the same request
with its body sent a moment after its head goes through the ASGI stack. Both must answer
alike, byte for byte but the date and the request id, for good requests and every kind of bad
one, and keep the layers' rules: API keys, rate limits, request ids, metrics, CORS, the body
limit, keep-alive and pipelining. The server's own counter of direct answers shows which path
each request took."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, serving
from tests.http.test_connection_limits import open_socket, read_response

MODEL = "tiny-lstm"
IGNORED = {"date", "x-request-id"}  # differ between any two answers


def request(path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {"Content-Type": "application/json"}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode(), body


def send(port: int, head: bytes, body: bytes, *, split: bool) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: in one write (direct), or the body 50 ms after the
    head (the ASGI path: the body is not in the read that completed the head)."""
    with open_socket(port) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if split:
            sock.sendall(head)
            time.sleep(0.05)
            sock.sendall(body)
        else:
            sock.sendall(head + body)
        return read_response(sock)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` responses with Content-Length bodies, however the reads split them (pipelined
    answers may arrive in one read, which `read_response` would take for one)."""
    data = b""
    answers = []
    while len(answers) < count:
        head, found, rest = data.partition(b"\r\n\r\n")
        if found:
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            length = int(headers.get("content-length", 0))
            if len(rest) >= length:
                answers.append((int(status_line.split()[1]), headers, rest[:length]))
                data = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed before {count} responses: {data!r}"
        data += chunk
    return answers


def direct_count(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(r"^rnnserve_http_direct_requests_total (\S+)$", text, re.M)
    assert found, "the direct path's counter is missing from /metrics"
    return float(found.group(1))


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--max-body-bytes", "20000"],
                 tmp_path_factory.mktemp("direct") / "server.log") as proc:
        yield proc


def twins(server: ServerProcess) -> tuple[str, str]:
    """Two sessions with the same state: stepped alike, they answer alike."""
    made = httpx.post(f"{server.url}/v1/models/{MODEL}/sessions").json()
    state = httpx.get(f"{server.url}/v1/sessions/{made['session_id']}/state").json()["state"]
    other = httpx.post(f"{server.url}/v1/models/{MODEL}/sessions", json={"state": state}).json()
    return made["session_id"], other["session_id"]


def cases(direct: str, asgi: str) -> list[tuple[str, str, bytes, dict[str, str] | None]]:
    """(what, path with {sid}, body, headers): good and bad requests to every hot route."""
    x = [[0.1, 0.2, 0.3]]
    v2 = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                      "data": [0.1, 0.2, 0.3]}]}
    v2_head = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 12}}],
                          "outputs": [{"name": "output",
                                       "parameters": {"binary_data": True}}]}).encode()
    binary = {"Content-Type": "application/octet-stream",
              "Inference-Header-Content-Length": str(len(v2_head))}
    # the same layout but for what its checks read: decoded anew, not as the kept layout
    float_shape = v2_head.replace(b"[1, 1, 3]", b"[1, 1, 3.0]")
    json_output = v2_head.replace(b'"binary_data": true', b'"binary_data": false')
    step = "/v1/sessions/{sid}/step"
    return [
        ("step", step, json.dumps({"inputs": x}).encode(), None),
        ("step gzip", step, gzip.compress(json.dumps({"inputs": x}).encode()),
         {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        ("step bad JSON", step, b'{"inputs": [[0.1, 0.2', None),
        ("step wrong width", step, b'{"inputs": [[0.1, 0.2]]}', None),
        ("step NaN", step, b'{"inputs": [[0.1, "NaN", 0.3]]}', None),
        ("step wrong type", step, b'{"inputs": [[0.1, 0.2, 0.3]]}', {"Content-Type": "text/csv"}),
        ("step unknown session", "/v1/sessions/nobody-here/step", b'{"inputs": [[1, 2, 3]]}',
         None),
        ("bulk", f"/v1/models/{MODEL}/steps",
         json.dumps({"steps": [{"session_id": "{sid}", "inputs": x}]}).encode(), None),
        ("v2 JSON", f"/v2/models/{MODEL}/infer", json.dumps(v2).encode(), None),
        ("v2 version", f"/v2/models/{MODEL}/versions/1/infer", json.dumps(v2).encode(), None),
        ("v2 binary", f"/v2/models/{MODEL}/infer", v2_head + b"\0" * 12, binary),
        ("v2 binary again", f"/v2/models/{MODEL}/infer", v2_head + b"\0" * 12, binary),
        ("v2 binary float shape", f"/v2/models/{MODEL}/infer", float_shape + b"\0" * 12,
         {**binary, "Inference-Header-Content-Length": str(len(float_shape))}),
        ("v2 binary output as JSON", f"/v2/models/{MODEL}/infer", json_output + b"\0" * 12,
         {**binary, "Inference-Header-Content-Length": str(len(json_output))}),
        ("v2 bad header length", f"/v2/models/{MODEL}/infer", v2_head + b"\0" * 12,
         {**binary, "Inference-Header-Content-Length": "9999"}),
        ("v2 unknown model", "/v2/models/nope/infer", json.dumps(v2).encode(), None),
        ("v2 empty", f"/v2/models/{MODEL}/infer", b"", None),
    ]


def test_direct_and_asgi_answers_are_the_same(server: ServerProcess) -> None:
    direct_sid, asgi_sid = twins(server)
    before = direct_count(server)
    listed = cases(direct_sid, asgi_sid)
    for what, path, body, headers in listed:
        answers = []
        for sid, split in ((direct_sid, False), (asgi_sid, True)):
            head, payload = request(path.replace("{sid}", sid),
                                    body.replace(b"{sid}", sid.encode()), headers)
            answers.append(send(server.port, head, payload, split=split))
        (status, got, raw), (status2, got2, raw2) = answers
        assert status == status2, (what, raw, raw2)
        assert raw.replace(direct_sid.encode(), b"S") == raw2.replace(asgi_sid.encode(), b"S"), \
            what
        assert {k: v for k, v in got.items() if k not in IGNORED} == \
            {k: v for k, v in got2.items() if k not in IGNORED}, what
        assert got["x-request-id"] and got["x-request-id"] != got2["x-request-id"], what
        assert status != 500, (what, raw)
        if what == "v2 binary float shape":
            assert status == 400 and b"non-negative integers" in raw, raw
        if what == "v2 binary output as JSON":
            assert status == 200 and json.loads(raw)["outputs"][0]["data"], raw
    # exactly the one-write requests were answered directly (and the split ones without a
    # body: their head's read completed them)
    assert direct_count(server) - before == len(listed) + sum(not c[2] for c in listed)
    # each twin took every step (the good ones) and they still agree
    states = [httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()
              for sid in (direct_sid, asgi_sid)]
    assert states[0]["steps"] == states[1]["steps"] == 3
    assert states[0]["state"] == states[1]["state"]


def test_request_id_metrics_and_keep_alive_with_pipelining(server: ServerProcess) -> None:
    sid, _ = twins(server)
    before = direct_count(server)
    metrics = httpx.get(server.url + "/metrics").text
    route = 'route="/v1/sessions/{session_id}/step"'

    def counted(text: str, status: str) -> float:
        labels = rf'method="POST",model="",{re.escape(route)},status="{status}"'
        pattern = rf"^rnnserve_http_requests_total\{{{labels}\}} (\S+)$"
        found = re.search(pattern, text, re.M)
        return float(found.group(1)) if found else 0.0

    one = request(f"/v1/sessions/{sid}/step", b'{"inputs": [[1, 2, 3]]}',
                  {"Content-Type": "application/json", "X-Request-Id": "mine-1"})
    two = request(f"/v1/sessions/{sid}/step", b'{"inputs": [[1, 2]]}',
                  {"Content-Type": "application/json", "X-Request-Id": "mine-2"})
    with open_socket(server.port) as sock:
        sock.sendall(b"".join((*one, *two)))  # two requests in one write: pipelined
        first, second = read_responses(sock, 2)  # (they may arrive in one read)
        sock.sendall(b"".join(one))  # the connection is kept: a third on it
        third = read_response(sock)
    assert (first[0], first[1]["x-request-id"]) == (200, "mine-1")
    assert json.loads(first[2])["steps"] == 1
    assert (second[0], second[1]["x-request-id"]) == (400, "mine-2")
    assert "feature" in json.loads(second[2])["error"]
    assert third[0] == 200 and json.loads(third[2])["steps"] == 2
    assert direct_count(server) - before == 3
    after = httpx.get(server.url + "/metrics").text
    assert counted(after, "200") - counted(metrics, "200") == 2
    assert counted(after, "400") - counted(metrics, "400") == 1


def test_connection_close_is_honoured(server: ServerProcess) -> None:
    sid, _ = twins(server)
    head, body = request(f"/v1/sessions/{sid}/step", b'{"inputs": [[1, 2, 3]]}',
                         {"Content-Type": "application/json", "Connection": "close"})
    with open_socket(server.port) as sock:
        sock.sendall(head + body)
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(10) == b""  # closed by the server


def test_an_oversized_body_still_gets_the_limit_layers_413(server: ServerProcess) -> None:
    sid, _ = twins(server)
    before = direct_count(server)
    head, body = request(f"/v1/sessions/{sid}/step", b'{"inputs": [' + b"[1, 2, 3]," * 3000
                         + b"[1, 2, 3]]}")
    status, _, raw = send(server.port, head, body, split=False)
    assert status == 413 and "--max-body-bytes" in json.loads(raw)["error"]
    assert direct_count(server) == before
    assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"] == 0


@pytest.fixture(scope="module")
def guarded(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--api-keys", "k-one", "--rate-limit-per-s",
                  "0.1", "--rate-burst", "3", "--cors-origins", "https://app.example"],
                 tmp_path_factory.mktemp("guarded") / "server.log") as proc:
        yield proc


def test_keys_rate_limit_and_cors_apply_on_the_direct_path(guarded: ServerProcess) -> None:
    key = {"Authorization": "Bearer k-one"}
    made = httpx.post(f"{guarded.url}/v1/models/{MODEL}/sessions", headers=key).json()  # 1
    path = f"/v1/sessions/{made['session_id']}/step"
    body = b'{"inputs": [[1, 2, 3]]}'
    json_type = {"Content-Type": "application/json"}

    def direct(headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        return send(guarded.port, *request(path, body, {**json_type, **headers}), split=False)

    status, headers, raw = direct({})  # no key: refused before the rate limit
    assert status == 401 and headers["www-authenticate"] == 'Bearer realm="rnnserve"'
    assert "API key" in json.loads(raw)["error"]
    status, headers, raw = direct({**key, "Origin": "https://app.example"})  # 2: ASGI (CORS)
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example"
    assert json.loads(raw)["steps"] == 1  # the 401 changed nothing
    status, _, raw = direct(key)  # 3: the burst is spent
    assert status == 200 and json.loads(raw)["steps"] == 2
    status, headers, raw = direct(key)
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert "rate limit" in json.loads(raw)["error"]
    text = httpx.get(guarded.url + "/metrics").text
    assert re.search(r"^rnnserve_http_direct_requests_total 3\.0$", text, re.M), \
        "401, 200 and 429 answered directly; the request with an Origin went through ASGI"

