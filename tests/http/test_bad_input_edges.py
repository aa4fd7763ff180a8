"""Inputs a fuzzer found answered 500, or answered out of turn, get the clear 4xx of any bad
input and change no session: a header length written in other digits, a shape numpy refuses,
a null binary_data_size sent again (the header-layout cache), sequence ids false and 0.0,
repeated outputs, bytes after a gzip stream, a version written with a leading zero, a later
step naming an unknown model; and on a real server, a malformed request pipelined after a good
step is answered after that step's answer, not instead of it."""

from __future__ import annotations

import gzip
import re
import socket
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import ServerProcess
from tests.http.test_connection_limits import read_response

MODEL = "tiny-gru"
STEP = [[0.5, -0.25, 1.0]]


async def new_session(client: httpx.AsyncClient) -> str:
    r = await client.post(f"/v1/models/{MODEL}/sessions")
    assert r.status_code in (200, 201), r.text
    return str(r.json()["session_id"])


async def steps_of(client: httpx.AsyncClient, session_id: str) -> int:
    r = await client.get(f"/v1/sessions/{session_id}")
    assert r.status_code == 200, r.text
    return int(r.json()["steps"])


@pytest.mark.parametrize("digit", [b"\xb2", b"\xb9", b"9" * 40])
async def test_a_header_length_in_other_digits_is_400(client: httpx.AsyncClient,
                                                      digit: bytes) -> None:
    sid = await new_session(client)
    header = orjson.dumps({"session_ids": [sid], "shape": [1, 1, 3]})
    body = header + np.zeros((1, 1, 3), "<f4").tobytes()
    r = await client.post(f"/v1/models/{MODEL}/steps", content=body, headers={
        "content-type": "application/octet-stream", "inference-header-content-length": digit})
    assert r.status_code == 400, r.text
    assert "Inference-Header-Content-Length" in r.json()["error"]
    r = await client.post(f"/v2/models/{MODEL}/infer", content=b"{}",
                          headers={"inference-header-content-length": digit})
    assert r.status_code == 400, r.text
    assert await steps_of(client, sid) == 0


async def test_v2_binary_framing_errors_say_what_the_header_is(client: httpx.AsyncClient) -> None:
    r = await client.post(f"/v2/models/{MODEL}/infer", content=b'{"inputs": []}',
                          headers={"inference-header-content-length": "0"})
    assert r.status_code == 400 and "1 to the body's" in r.json()["error"], r.text
    r = await client.post(f"/v2/models/{MODEL}/infer", content=b"\x00\xff\xfe",
                          headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400, r.text
    assert "needs the Inference-Header-Content-Length header" in r.json()["error"]


async def test_a_null_binary_data_size_answers_alike_every_time(
        client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": STEP[0], "parameters": {"binary_data_size": None}}]}
    answers = [await client.post(f"/v2/models/{MODEL}/infer", json=body) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 200], answers[-1].text
    assert answers[0].json()["outputs"] == answers[2].json()["outputs"]


@pytest.mark.parametrize(("path", "body"), [
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "input", "shape": [2**40, 2**40, 0],
                                               "datatype": "FP32", "data": []}]}),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "input", "shape": [2**31 - 1] * 2 + [0],
                                               "datatype": "FP32", "data": []}]}),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "input", "shape": [2**31 - 1] * 2 + [0],
                                               "datatype": "FP32",
                                               "parameters": {"binary_data_size": 0}}]}),
    (f"/v1/models/{MODEL}/sessions", {"state": {"h0": {"shape": [2**32, 2**32, 1],
                                                       "data": []}}}),
    (f"/v1/models/{MODEL}/predict", {"inputs": [[STEP[0]]], "initial_states": [
        {"h0": {"shape": [2**32, 2**32, 1], "data": []}}]}),
])
async def test_a_shape_numpy_refuses_is_400(client: httpx.AsyncClient, path: str,
                                            body: dict[str, Any]) -> None:
    r = await client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert "shape" in r.json()["error"]


async def test_sequence_ids_false_and_zero_point_zero_are_refused(
        client: httpx.AsyncClient) -> None:
    for value in (False, 0.0):
        body = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                            "data": STEP[0]}], "parameters": {"sequence_id": value}}
        r = await client.post(f"/v2/models/{MODEL}/infer", json=body)
        assert r.status_code == 400, (value, r.text)
        assert "sequence_id must be an unsigned 64-bit integer or a string" in r.json()["error"]


async def test_repeated_outputs_are_refused(client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": STEP[0]}],
            "outputs": [{"name": "output"}, {"name": "output",
                                             "parameters": {"binary_data": True}}]}
    r = await client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert r.status_code == 400, r.text
    assert "requested more than once" in r.json()["error"]


async def test_bytes_after_a_gzip_stream_are_refused(client: httpx.AsyncClient) -> None:
    sid = await new_session(client)
    body = gzip.compress(orjson.dumps({"inputs": STEP})) + b"junk"
    r = await client.post(f"/v1/sessions/{sid}/step", content=body, headers={
        "content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400, r.text
    assert "4 bytes after the end of its gzip stream" in r.json()["error"]
    assert await steps_of(client, sid) == 0


async def test_a_later_step_with_a_padded_version_or_an_unknown_model(
        client: httpx.AsyncClient) -> None:
    def step(**parameters: Any) -> dict[str, Any]:
        return {"inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                            "data": STEP[0]}], "parameters": {"sequence_id": 91, **parameters}}

    r = await client.post(f"/v2/models/{MODEL}/versions/1/infer",
                          json=step(sequence_start=True))
    assert r.status_code == 200, r.text
    r = await client.post(f"/v2/models/{MODEL}/versions/01/infer", json=step())
    assert r.status_code == 200, r.text  # version 1, written with a zero
    r = await client.post(f"/v2/models/{MODEL}/versions/7/infer", json=step())
    assert r.status_code == 404, r.text
    r = await client.post("/v2/models/no-such-model/infer", json=step())
    assert r.status_code == 404, r.text
    assert await steps_of(client, f"v2.{MODEL}.n.91") == 2


# -- a real server: what the client reads on one connection ----------------------------------


def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send `data` in one write, read until the server closes (bounded by the timeout)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def step_request(session_id: str, chunked: bool = False) -> bytes:
    """A step's bytes: framed by Content-Length (the direct path) or chunked (the ASGI
    path)."""
    body = orjson.dumps({"inputs": STEP})
    head = (f"POST /v1/sessions/{session_id}/step HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/json\r\n")
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + (
            f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize(("bad", "fragment", "chunked"), [
    (b"POST /v1/sessions/x/step HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", b"malformed request body", False),
    (b"GARBAGE\r\n\r\n", b"malformed request head", False),
    (b"GARBAGE\r\n\r\n", b"malformed request head", True),
])
def test_a_malformed_request_after_a_pipelined_step_is_answered_after_it(
        start_server: Any, tiny_repo: Any, bad: bytes, fragment: bytes, chunked: bool) -> None:
    server = start_server("--models", str(tiny_repo))
    with httpx.Client(base_url=server.url, timeout=10) as http:
        sid = http.post(f"/v1/models/{MODEL}/sessions").json()["session_id"]
        out = exchange(server, step_request(sid, chunked) + step_request(sid) + bad)
        heads = re.findall(rb"HTTP/1\.1 \d{3} [A-Za-z ]+(?=\r\n)", out)
        assert heads == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK",
                         b"HTTP/1.1 400 Bad Request"], out[:600]
        assert fragment in out and b'"error"' in out
        assert http.get(f"/v1/sessions/{sid}").json()["steps"] == 2  # each step once
        lone = exchange(server, b"GARBAGE\r\n\r\n")
        assert lone.startswith(b"HTTP/1.1 400") and b'"error"' in lone
        assert b"malformed request head" in lone


@pytest.mark.parametrize("binary", [False, True])
async def test_gateway_items_all_of_a_wrong_width_fail_alone(client: httpx.AsyncClient,
                                                             binary: bool) -> None:
    """Every item with 2 features where the model takes 3: each item gets its own answer (an
    unknown session its 404, the others the width's 400), not one 400 for the request."""
    sids = [await new_session(client), "no-such-session", await new_session(client)]
    x = np.ones((3, 1, 2), np.float32)
    if binary:
        header = orjson.dumps({"session_ids": sids, "shape": [3, 1, 2]})
        r = await client.post(f"/v1/models/{MODEL}/steps", content=header + x.tobytes(),
                              headers={"content-type": "application/octet-stream",
                                       "inference-header-content-length": str(len(header))})
        assert r.status_code == 200, r.text
        split = int(r.headers["inference-header-content-length"])
        errors = orjson.loads(r.content[:split])["errors"]
        statuses = {e["index"]: e["status"] for e in errors}
    else:
        r = await client.post(f"/v1/models/{MODEL}/steps", json={"steps": [
            {"session_id": s, "inputs": x[i].tolist()} for i, s in enumerate(sids)]})
        assert r.status_code == 200, r.text
        statuses = dict(enumerate(res["status"] for res in r.json()["results"]))
    assert statuses == {0: 400, 1: 404, 2: 400}, r.text
    assert [await steps_of(client, s) for s in (sids[0], sids[2])] == [0, 0]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_that_never_arrives_whole_is_408_and_closes(
        start_server: Any, tiny_repo: Any, framing: str) -> None:
    """A Content-Length larger than the bytes sent (or a chunked body without its last chunk)
    waited for the request time limit and got the 504 of a request that took too long; the
    client's request is what was late: 408, and the connection closed (what follows it on
    that connection cannot be framed)."""
    server = start_server("--models", str(tiny_repo), "--request-timeout-s", "1")
    with httpx.Client(base_url=server.url, timeout=10) as http:
        sid = http.post(f"/v1/models/{MODEL}/sessions").json()["session_id"]
        body = orjson.dumps({"inputs": STEP})
        head = f"POST /v1/sessions/{sid}/step HTTP/1.1\r\nHost: t\r\n"
        if framing == "chunked":
            data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + (
                f"{len(body):x}\r\n".encode() + body + b"\r\n")  # no 0-size chunk
        else:
            data = (head + f"Content-Length: {len(body) + 10}\r\n\r\n").encode() + body
        out = exchange(server, data)  # read until the server closes
        assert out.startswith(b"HTTP/1.1 408 "), out[:300]
        assert b"connection: close" in out.lower() and b"did not arrive whole" in out
        assert http.get(f"/v1/sessions/{sid}").json()["steps"] == 0


def test_a_whole_body_the_server_was_slow_to_read_is_504_and_keeps_the_connection(
        start_server: Any, tiny_repo: Any) -> None:
    """The 408 is for a client that did not send its body: a large body sent whole, which the
    server had not finished reading (or handling) when its time limit ran out, gets the 504 of
    a slow answer, and the connection stays usable for the next request."""
    server = start_server("--models", str(tiny_repo), "--request-timeout-s", "0.02")
    body = orjson.dumps({"inputs": np.full((200, 1000, 3), 0.123456, np.float32).tolist()})
    head = (f"POST /v1/models/{MODEL}/predict HTTP/1.1\r\nHost: t\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + chunked)
        status, headers, body = read_response(sock)
        assert status == 504, body[:300]
        assert headers.get("connection", "").lower() != "close"
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock)[0] == 200
