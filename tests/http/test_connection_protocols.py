"""The guarded HTTP protocols on their own, both of them: httptools (what `rnnserve serve` uses)
and h11 (its fallback where httptools is missing), each in a real uvicorn on a loopback port
with a small ASGI app: the head time limit, the per-client cap, and the JSON 400 for a body
whose chunked framing breaks (the app sees a disconnect on a request marked as malformed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from rnnserve.http.connections import ConnectionGuard
from rnnserve.http.errors import MALFORMED_BODY
from rnnserve.http.http_protocols import server_protocols
from rnnserve.http.request_context import RequestContext
from rnnserve.metrics import Metrics
from rnnserve.proxies import TrustedProxies
from rnnserve.tracing import Tracing

from tests.conftest import free_port
from tests.http.test_connection_limits import (
    eventually_served,
    open_socket,
    read_response,
    read_until_closed,
)

CAP = 3


@dataclass
class Server:
    port: int
    disconnects: list[dict[str, Any]] = field(default_factory=list)  # scopes that saw one


def body_length_app(server: Server) -> Any:
    """An ASGI app that reads the whole body and answers its length, and notes the scope of
    a request that saw a disconnect instead."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                server.disconnects.append(scope)
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = json.dumps({"bytes": size}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(params=["httptools", "h11"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    metrics = Metrics()
    guard = ConnectionGuard(0.5, CAP, TrustedProxies(""), metrics.connections_refused)
    http, ws = server_protocols(guard, h11=request.param == "h11")
    state = Server(free_port())
    # the request time limit's layer around it, as `rnnserve serve` has (3 s: longer than
    # the slow-body test's pace, shorter than a body that never comes)
    app = RequestContext(body_length_app(state), 3.0, metrics, Tracing("", "test"),
                         lambda model: model)
    config = uvicorn.Config(app, host="127.0.0.1", port=state.port,
                            http=http, ws=ws, lifespan="off", log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield state
    finally:
        uv.should_exit = True
        thread.join(15)


def post(body: bytes) -> bytes:
    return (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\n\r\n" + body)


def test_an_unfinished_head_gets_408_and_silence_is_closed(server: Server) -> None:
    with open_socket(server.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert "--header-timeout-s" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    with open_socket(server.port) as sock:
        assert read_until_closed(sock) == b""


def test_a_body_that_never_comes_whole_gets_408_and_the_connection_closes(
        server: Server) -> None:
    """The request time limit's 408 reads uvicorn's request cycle (http/late_body.py): both
    protocols must show it, or a late client would get a 504 on a connection whose next bytes
    would be read as the rest of its body."""
    with open_socket(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert "did not arrive whole" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]


def test_keep_alive_requests_and_a_slow_body_are_served(server: Server) -> None:
    with open_socket(server.port) as sock:
        for _ in range(3):
            sock.sendall(post(b"abc"))
            assert read_response(sock)[0] == 200
            time.sleep(0.3)  # shorter than the head limit
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        for byte in b"abcd":
            time.sleep(0.3)  # the body's pace is not the head limit's business
            sock.sendall(bytes([byte]))
        status, _, body = read_response(sock)
        assert status == 200 and json.loads(body) == {"bytes": 4}


def test_the_per_client_cap_refuses_and_recovers(server: Server) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(open_socket(server.port)) for _ in range(CAP)]
        for sock in held:
            sock.sendall(post(b""))
            assert read_response(sock)[0] == 200
        with open_socket(server.port) as refused:
            answer = read_until_closed(refused)
        assert answer.startswith(b"HTTP/1.1 429") and b"retry-after: 1" in answer.lower()
        held[0].close()
        assert eventually_served(server.port)


def test_a_broken_chunked_body_gets_a_json_400(server: Server) -> None:
    with open_socket(server.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n")
        time.sleep(0.2)  # the app is reading the body when the framing breaks
        sock.sendall(b"ZZ\r\nnot a chunk\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert "chunked" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    deadline = time.monotonic() + 5
    while not server.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [scope.get(MALFORMED_BODY) for scope in server.disconnects] == [True]
