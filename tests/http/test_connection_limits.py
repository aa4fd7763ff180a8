"""Connection limits of a real server, over raw sockets from 127.0.0.1: a request head must be
complete within --header-timeout-s (a trickling or silent client is closed, a normal keep-alive
client is not), and one client address holds at most --max-connections-per-client open
connections (HTTP and WebSocket alike; trusted proxies exempt)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.conftest import ServerProcess

Start = Callable[..., ServerProcess]
HOST = "127.0.0.1"
GIVE_UP_S = 10.0  # no check waits longer than this for the server to act


def open_socket(port: int, source: str | None = None) -> socket.socket:
    """A connection to the server on 127.0.0.1, from `source` (another loopback address)."""
    return socket.create_connection((HOST, port), timeout=GIVE_UP_S,
                                    source_address=(source, 0) if source else None)


def read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body; the connection stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def assert_no_error_logged(server: ServerProcess) -> None:
    """Nothing at ERROR and no traceback after the start (the test repository's broken model
    is logged at ERROR while the server starts)."""
    log = server.log()
    after_start = log[log.index("Uvicorn running"):]
    assert "ERROR" not in after_start and "Traceback" not in after_start, after_start[-3000:]


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def served(sock: socket.socket) -> bool:
    """A request on `sock` is answered 200 (the connection was admitted and kept)."""
    sock.sendall(get("/v2/health/live"))
    return read_response(sock)[0] == 200


@pytest.fixture(scope="module")
def quick(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a half-second head limit."""
    from tests.conftest import serving

    with serving(["--models", str(tiny_repo), "--header-timeout-s", "0.5"],
                 tmp_path_factory.mktemp("quick") / "server.log") as server:
        yield server


def test_a_trickled_head_is_closed(quick: ServerProcess) -> None:
    with open_socket(quick.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.1)
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < GIVE_UP_S:
            try:
                sock.sendall(b"X-Trickle: 1\r\n")  # a header line every 0.1 s, never the end
                closed = sock.recv(65536).startswith(b"HTTP/1.1 408")
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed while the client was still sending
                closed = True
        assert closed, "the trickling connection was still open"
    assert_no_error_logged(quick)


def test_a_head_left_unfinished_gets_a_408_that_says_why(quick: ServerProcess) -> None:
    with open_socket(quick.port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # no blank line
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert "--header-timeout-s" in json.loads(body)["error"]


def test_a_silent_connection_is_closed_without_an_answer(quick: ServerProcess) -> None:
    with open_socket(quick.port) as sock:
        assert read_until_closed(sock) == b""  # EOF, well before GIVE_UP_S


def test_keep_alive_clients_and_slow_bodies_are_not_cut(quick: ServerProcess) -> None:
    with open_socket(quick.port) as sock:
        for _ in range(4):  # pauses shorter than the head limit between requests
            assert served(sock)
            time.sleep(0.2)
        # The limit is on the head only: a body sent over a second is still read and answered.
        body = json.dumps({"inputs": [[[0.1, 0.2, 0.3]] * 4]}).encode()
        sock.sendall(f"POST /v1/models/tiny-gru/predict HTTP/1.1\r\nHost: {HOST}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                     .encode())
        for i in range(0, len(body), len(body) // 4 + 1):
            time.sleep(0.3)
            sock.sendall(body[i:i + len(body) // 4 + 1])
        status, _, answer = read_response(sock)
        assert status == 200, answer
        assert len(json.loads(answer)["outputs"]) == 1
        # Idle past the limit after a response: closed, silently.
        assert read_until_closed(sock) == b""
    metrics = httpx.get(quick.url + "/metrics", timeout=5).text
    assert 'rnnserve_http_connections_refused_total{reason="header_timeout"}' in metrics
    assert_no_error_logged(quick)


def test_a_websocket_outlives_the_head_limit(quick: ServerProcess) -> None:
    with ws_connect(f"ws://{HOST}:{quick.port}/v1/models/tiny-gru/stream") as ws:
        assert json.loads(ws.recv(timeout=GIVE_UP_S))["steps"] == 0
        for step in range(1, 4):
            time.sleep(0.4)  # 1.2 s in all, past the half-second head limit
            ws.send(json.dumps({"inputs": [[0.1, 0.2, 0.3]]}))
            assert json.loads(ws.recv(timeout=GIVE_UP_S))["steps"] == step


def test_the_connection_cap_per_client(start_server: Start, tiny_repo: Path) -> None:
    server = start_server("--models", str(tiny_repo), "--max-connections-per-client", "5")
    with ExitStack() as stack:
        held = [stack.enter_context(open_socket(server.port)) for _ in range(4)]
        assert all(served(sock) for sock in held)
        ws = stack.enter_context(ws_connect(f"ws://{HOST}:{server.port}/v1/models/tiny-gru/stream"))
        assert "session_id" in json.loads(ws.recv(timeout=GIVE_UP_S))  # the fifth connection
        for _ in range(3):  # refused, each time, with the reason; logged once
            with open_socket(server.port) as sixth:
                answer = read_until_closed(sixth)
            assert answer.startswith(b"HTTP/1.1 429"), answer
            head, _, body = answer.partition(b"\r\n\r\n")
            assert b"retry-after: 1" in head.lower()
            assert "--max-connections-per-client" in json.loads(body)["error"]
        # A closed WebSocket gives its slot back (its HTTP protocol never saw it end).
        ws.close()
        assert eventually_served(server.port)
    # All closed: the counts are back to zero, five at once work again.
    with ExitStack() as stack:
        again = [stack.enter_context(open_socket(server.port)) for _ in range(5)]
        assert all(served(sock) for sock in again)
    log = server.log()
    assert log.count("refusing connections from 127.0.0.1") == 1, log[-2000:]
    assert_no_error_logged(server)
    metrics = httpx.get(server.url + "/metrics", timeout=5).text
    assert 'rnnserve_http_connections_refused_total{reason="client_cap"} 3.0' in metrics


def eventually_served(port: int) -> bool:
    """A new connection is admitted and answered, once the server has seen one close."""
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        with open_socket(port) as sock:
            try:
                if served(sock):
                    return True
            except (AssertionError, OSError):
                pass  # refused: the close is not processed yet
        time.sleep(0.05)
    return False


def test_the_cap_counts_each_address_and_exempts_trusted_proxies(start_server: Start,
                                                                 tiny_repo: Path) -> None:
    """127.0.0.2 (a second loopback address: Linux routes all of 127/8 to lo) plays a trusted
    proxy; 127.0.0.1 is a plain client with its own count."""
    proxy = "127.0.0.2"
    server = start_server("--models", str(tiny_repo), "--max-connections-per-client", "2",
                          "--forwarded-allow-ips", proxy)
    with ExitStack() as stack:
        try:
            through_proxy = [stack.enter_context(open_socket(server.port, source=proxy))
                             for _ in range(6)]
        except OSError as exc:
            pytest.skip(f"no second loopback address here: {exc}")
        assert all(served(sock) for sock in through_proxy)
        direct = [stack.enter_context(open_socket(server.port)) for _ in range(2)]
        assert all(served(sock) for sock in direct)
        with open_socket(server.port) as third:
            assert read_until_closed(third).startswith(b"HTTP/1.1 429")
    assert_no_error_logged(server)
