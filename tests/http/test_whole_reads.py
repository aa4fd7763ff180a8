"""Whole reads (http/whole_reads.py) and the lane's time limits (http/deadline_queue.py).

The reader must take only what uvicorn's parser would read the same way, and leave every other
read to it untouched; on a real `rnnserve serve`, a request read whole must hold its place in
the connection's order (a request after it waits for its answer) and its connection must keep
uvicorn's keep-alive rule (closed when idle for 5 s, kept while used). The deadline queue must
end each unanswered request at its limit, in order, and never an answered one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.engine import Engine
from rnnserve.http.deadline_queue import DeadlineQueue
from rnnserve.http.direct_path import NOT_WHOLE_MAX
from rnnserve.http.whole_reads import WholeReader
from rnnserve.settings import Settings

from bench.http_path import MODEL, MODELS, MemoryTransport, connector, rest_step
from tests.conftest import ServerProcess, serving
from tests.http.test_direct_path import read_responses
from tests.http.test_sequence_lane import FEATURES, Link, lane_count, step_body

PATH = b"/v2/models/m/infer"


class Connection:
    """What the reader reads of uvicorn's protocol."""

    root_path = ""
    asgi_version = "3.0"
    server = ("127.0.0.1", 8000)
    client = ("127.0.0.1", 40000)
    scheme = "http"
    app_state: dict[str, Any] = {}

    class server_state:  # noqa: N801 - uvicorn's attribute name
        default_headers = [(b"server", b"uvicorn")]


def post(path: bytes = PATH, body: bytes = b'{"x": 1}', version: bytes = b"1.1",
         extra: bytes = b"", method: bytes = b"POST") -> bytes:
    return (method + b" " + path + b" HTTP/" + version + b"\r\nHost: h\r\nX-Request-Id:  r1 \r\n"
            + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_a_plain_whole_post_is_read_as_uvicorn_would_scope_it() -> None:
    reader = WholeReader()
    answered: list[int] = []
    request = reader.read(post(), Connection(), lambda: answered.append(1))
    assert request is not None
    scope = request.scope
    assert (scope["type"], scope["method"], scope["http_version"]) == ("http", "POST", "1.1")
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (
        PATH.decode(), PATH, b"")
    # names lower-cased, values without the blanks around them, in order, as uvicorn has them
    assert scope["headers"] == [(b"host", b"h"), (b"x-request-id", b"r1"),
                                (b"content-length", b"8")]
    assert (scope["client"], scope["server"], scope["state"]) == (
        Connection.client, Connection.server, {})
    assert request.body == b'{"x": 1}' and request.keep_alive and not request.more_body
    assert request.default_headers is Connection.server_state.default_headers
    request.on_response()
    assert answered == [1]
    # and the next request on the connection too (the parser is at a message's start)
    again = reader.read(post(body=b"{}"), Connection(), lambda: None)
    assert again is not None and again.body == b"{}"


@pytest.mark.parametrize("data", [
    post(method=b"PUT"),
    post(version=b"1.0"),
    post(extra=b"Connection: close\r\n"),
    post(extra=b"Expect: 100-continue\r\n"),
    post(extra=b"Connection: upgrade\r\nUpgrade: websocket\r\n"),
    post(path=PATH + b"?x=1"),
    post(path=b"/v2/models/m%20n/infer"),
    post(path=b"http://h" + PATH),
    post() + post(),  # two requests in one read: pipelined, uvicorn's to queue
    post()[:-3],  # the body's end is in a later read
    post()[:20],  # so is the head's
    b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  # malformed
], ids=["put", "http1.0", "close", "expect", "upgrade", "query", "escape", "absolute",
        "pipelined", "partial body", "partial head", "malformed"])
def test_every_other_read_is_left_to_uvicorn_and_the_next_whole_one_is_read(
        data: bytes) -> None:
    reader = WholeReader()
    assert reader.read(data, Connection(), lambda: None) is None
    # whatever state the refused read left, the reader starts over for the next one
    request = reader.read(post(), Connection(), lambda: None)
    assert request is not None and request.body == b'{"x": 1}'


class Limited:
    def __init__(self, ended: list[tuple[str, float]], name: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.answered = False
        self.ended = ended
        self.name = name
        self.loop = loop
        self.added = loop.time()

    def at_limit(self) -> None:  # (an answered one ending would show in the names)
        self.ended.append((self.name, self.loop.time() - self.added))


def test_the_deadline_queue_ends_the_unanswered_in_order_and_no_answered_one() -> None:
    limit = 0.2

    async def scenario() -> tuple[list[tuple[str, float]], list[tuple[str, float]], int]:
        loop = asyncio.get_running_loop()
        ended: list[tuple[str, float]] = []
        queue = DeadlineQueue(loop, limit)
        a, b, c = (Limited(ended, n, loop) for n in "abc")
        for request in (a, b, c):
            queue.add(request)
        b.answered = True
        await asyncio.sleep(limit * 3)
        first = list(ended)
        # the oldest is answered before its limit: the timer armed for it waits again for e's
        ended.clear()
        d = Limited(ended, "d", loop)
        queue.add(d)
        await asyncio.sleep(limit / 2)
        e = Limited(ended, "e", loop)
        queue.add(e)
        d.answered = True
        await asyncio.sleep(limit * 3)
        return first, list(ended), len(queue)

    first, later, left = asyncio.run(scenario())
    assert [name for name, _ in first] == ["a", "c"]
    assert [name for name, _ in later] == ["e"] and left == 0
    # none ended before its own limit (event-loop timers keep whole milliseconds)
    assert all(waited >= limit - 0.002 for _, waited in first + later), first + later


def test_answered_requests_leave_the_queue_as_new_ones_come() -> None:
    async def scenario() -> int:
        queue = DeadlineQueue(asyncio.get_running_loop(), 30.0)
        ended: list[tuple[str, float]] = []
        for i in range(1000):
            request = Limited(ended, str(i), asyncio.get_running_loop())
            queue.add(request)
            request.answered = True
        return len(queue)

    assert asyncio.run(scenario()) == 1  # only the last, answered after it was added


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("whole") / "server.log") as proc:
        yield proc


def started(link: Link, sequence: int) -> None:
    body, headers = step_body(np.zeros((1, FEATURES), np.float32), sequence_id=sequence,
                              sequence_start=True)
    assert link.post(body, headers).status_code == 200


def test_a_request_after_one_read_whole_is_answered_after_it(server: ServerProcess) -> None:
    with Link(server) as link:
        started(link, 501)
        before = lane_count(server)
        body, headers = step_body(np.ones((1, FEATURES), np.float32), sequence_id=501)
        lines = [f"POST {link.path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        step = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        for _ in range(20):  # each time: the step is read whole, the GET comes while it runs
            link.sock.sendall(step)
            link.sock.sendall(ready)
            (step_status, step_headers, _), (ready_status, _, _) = read_responses(
                link.sock, 2)
            assert step_status == 200 and "inference-header-content-length" in step_headers
            assert ready_status == 200
        assert lane_count(server) - before == 20


def test_a_connection_used_stays_and_an_idle_one_closes_after_5_s(
        server: ServerProcess) -> None:
    with Link(server) as link:
        started(link, 502)
        body, headers = step_body(np.ones((1, FEATURES), np.float32), sequence_id=502)
        began = answered = time.monotonic()
        while answered - began < 7:  # past the keep-alive time, in use throughout
            time.sleep(0.5)
            assert link.post(body, headers).status_code == 200
            answered = time.monotonic()
        link.sock.settimeout(15)
        try:
            closed = link.sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        idle = time.monotonic() - answered
        assert closed and 4.5 < idle < 9, idle


def test_a_connection_that_splits_its_requests_stops_trying_whole_reads() -> None:
    """The protocol as `rnnserve serve` builds it, fed in memory: whole requests are read by
    its own reader; a client whose bodies come apart from their heads stops being tried after
    NOT_WHOLE_MAX requests, and every request is answered all the same."""

    async def scenario() -> list[object]:
        engine = Engine(Settings(models=MODELS, grpc_port=0, log_level="warning"))
        engine.start()
        await engine.open()
        try:
            connect = connector(engine)
            answers: list[int] = []
            arrived = asyncio.Event()

            def answered() -> None:
                answers.append(1)
                arrived.set()

            protocol = connect(MemoryTransport(0, answered))
            session = await engine.sessions.create(MODEL)
            request = rest_step(session.id)
            head, body = request.split(b"\r\n\r\n", 1)

            async def exchange(*reads: bytes) -> None:
                arrived.clear()
                for data in reads:
                    protocol.data_received(data)
                    await asyncio.sleep(0)
                await asyncio.wait_for(arrived.wait(), 30)

            seen: list[object] = []
            await exchange(request)
            seen.append(protocol._not_whole)
            for _ in range(NOT_WHOLE_MAX):
                await exchange(head + b"\r\n\r\n", body)
                seen.append(protocol._not_whole)
            await exchange(request)  # whole, but parsed by uvicorn now: answered alike
            seen.append(protocol._not_whole)
            seen.append(len(answers))
            seen.append((await engine.sessions.describe(session.id)).steps)
            protocol.connection_lost(None)
            return seen
        finally:
            await engine.aclose()
            engine.close()

    seen = asyncio.run(scenario())
    counts, answers, steps = seen[:-2], seen[-2], seen[-1]
    assert counts == [0, *range(1, NOT_WHOLE_MAX), None, None]
    assert answers == NOT_WHOLE_MAX + 2 and steps == NOT_WHOLE_MAX + 2
