"""A request whose body does not all arrive within the server's time limit gets a 408 (nothing
applied, the connection closed), and the client sends it again: a step is applied once, a
create makes one session. A relay between them holds back the last byte of the first
connection's request, so the real server times out on a real partial body."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from rnnserve.client import Client

from tests.conftest import ServerProcess

MODEL = "tiny-gru"


class StarvingRelay:
    """A TCP relay to `port` that, from the first POST on, forwards on that connection all but
    the last byte the client sent so far (so that request's body never arrives whole); the
    other connections pass everything. It counts connections and keeps what the server
    answered on each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self.starving = False  # a connection holds back bytes (only one ever does)
        self.answers: list[bytearray] = []  # what the server sent back, per connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.port))
            answer = bytearray()
            self.answers.append(answer)
            threading.Thread(target=self._pipe, args=(downstream, upstream, True, None),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, downstream, False, answer),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, may_starve: bool,
              kept: bytearray | None) -> None:
        held, starve = b"", False
        try:
            while data := src.recv(65536):
                if may_starve and not self.starving and data.startswith(b"POST "):
                    self.starving = starve = True
                data = held + data
                if starve:  # the last byte waits for more, which never comes
                    data, held = data[:-1], data[-1:]
                if kept is not None:
                    kept += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def slow_limit(start_server: Callable[..., ServerProcess], tiny_repo: Path
               ) -> Iterator[ServerProcess]:
    yield start_server("--models", str(tiny_repo), "--request-timeout-s", "1")


def test_a_step_whose_body_came_late_is_sent_again_and_applied_once(
        slow_limit: ServerProcess) -> None:
    created = httpx.post(f"{slow_limit.url}/v1/models/{MODEL}/sessions")
    sid = created.json()["session_id"]
    x = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    relay = StarvingRelay(slow_limit.port)
    try:
        with Client(relay.url) as client:
            out = client.session(sid).step(x, step_id="late-1")
    finally:
        relay.close()
    assert relay.connections == 2  # the 408 closed the first
    assert b"HTTP/1.1 408 " in relay.answers[0]
    whole = httpx.post(f"{slow_limit.url}/v1/models/{MODEL}/predict",
                       json={"inputs": [x.tolist()]}).json()["outputs"][0]
    np.testing.assert_allclose(out, np.asarray(whole, np.float32), rtol=1e-6)
    assert httpx.get(f"{slow_limit.url}/v1/sessions/{sid}").json()["steps"] == 4


def test_a_create_whose_body_came_late_is_sent_again_and_makes_one_session(
        slow_limit: ServerProcess) -> None:
    relay = StarvingRelay(slow_limit.port)
    try:
        with Client(relay.url) as client:
            session = client.create_session(MODEL)
    finally:
        relay.close()
    assert relay.connections == 2 and relay.answers[0].startswith(b"HTTP/1.1 408 ")
    live = httpx.get(f"{slow_limit.url}/v1/models").json()["live_sessions"]
    assert live.get(MODEL) == 1  # the first try made none
    assert httpx.get(f"{slow_limit.url}/v1/sessions/{session.session_id}").status_code == 200
