"""Exactly once across failures, for real: a stream of 2,000 readings into a server on Redis
that is killed (SIGKILL: steps in flight, replies lost) and started again mid-stream delivers
every output once, in order, equal to a stateless prediction of the whole sequence; a session
that expired while the server was down raises SessionGone."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.client import Client, RetryPolicy, SessionGone

from tests.client.conftest import ServerOnPort
from tests.conftest import free_port
from tests.state.redis_server import RedisServer

READINGS = 2_000
RETRY = RetryPolicy(initial_s=0.05, max_s=0.5, give_up_after_s=60)


def serve_on(redis: RedisServer, tiny_repo: Path, log: Path, port: int,
             *extra: str) -> ServerOnPort:
    server = ServerOnPort(["--models", str(tiny_repo), "--state-store", redis.url, *extra],
                          log, port)
    server.wait_ready()
    return server


class Feeder(threading.Thread):
    """Streams the readings through the client in a thread of its own and keeps each output
    as it comes, so the test can kill the server while steps are in flight."""

    def __init__(self, url: str, model: str, readings: np.ndarray,
                 session_id: str | None = None) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, retry=RETRY, window=16)
        self.model, self.readings, self.session_id = model, readings, session_id
        self.outputs: list[np.ndarray] = []
        self.error: BaseException | None = None
        self.reconnects = 0
        self.window = 0
        self.started_stream = threading.Event()
        self.stream: Any = None

    def run(self) -> None:
        try:
            with self.client.stream(self.model, self.session_id) as stream:
                self.stream = stream
                self.session_id = stream.session_id
                self.started_stream.set()
                for y in stream.feed(self.readings):
                    self.outputs.append(y)
                self.reconnects = stream.reconnects
                self.window = stream.aio._limit()
        except BaseException as exc:  # the test reads it
            self.error = exc
        finally:
            self.started_stream.set()
            self.client.close()

    def wait_for(self, count: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.outputs) < count and self.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.outputs) >= count, (len(self.outputs), self.error)


def test_a_stream_survives_a_killed_and_restarted_server(
        redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    server = serve_on(redis, tiny_repo, tmp_path / "first.log", port)
    try:
        with Client(server.url) as client:
            info = client.model("tiny-lstm")
            readings = np.random.default_rng(7).normal(
                size=(READINGS, info.input_size)).astype(np.float32)
            expected = client.predict("tiny-lstm", readings)
        feeder = Feeder(server.url, "tiny-lstm", readings)
        feeder.start()
        feeder.wait_for(600)
        server.stop(signal.SIGKILL)  # mid-stream: steps in flight, their replies lost
        time.sleep(0.5)
        server = serve_on(redis, tiny_repo, tmp_path / "second.log", port)
        feeder.join(timeout=120)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        assert feeder.reconnects >= 1 and feeder.window == 16  # 16 steps in flight
        assert len(feeder.outputs) == READINGS  # each reading's output exactly once
        got = np.concatenate(feeder.outputs)
        np.testing.assert_allclose(got, expected, atol=1e-4)  # in order, none applied twice
        with Client(server.url) as client:
            assert client.session(str(feeder.session_id)).steps == READINGS
    finally:
        server.stop()


def test_a_dropped_connection_resends_the_window_and_nothing_applies_twice(
        redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> None:
    """The connection breaks (no close handshake) while 16 steps are in flight: the server
    applies them, their replies go nowhere, and the client re-sends them with their ids after
    it reconnects: each is replayed, none applied twice."""
    server = serve_on(redis, tiny_repo, tmp_path / "server.log", free_port())
    try:
        with Client(server.url) as client:
            width = client.model("tiny-gru").input_size
            readings = np.random.default_rng(8).normal(size=(READINGS, width)).astype(np.float32)
            expected = client.predict("tiny-gru", readings)
        feeder = Feeder(server.url, "tiny-gru", readings)
        feeder.start()
        for at in (300, 900, 1500):
            feeder.wait_for(at)
            feeder.stream.drop_connection()
        feeder.join(timeout=120)
        assert not feeder.is_alive() and feeder.error is None, feeder.error
        assert feeder.reconnects >= 3 and len(feeder.outputs) == READINGS
        np.testing.assert_allclose(np.concatenate(feeder.outputs), expected, atol=1e-4)
        with Client(server.url) as client:
            assert client.session(str(feeder.session_id)).steps == READINGS
    finally:
        server.stop()


def test_a_session_that_expired_during_an_outage_raises_session_gone(
        redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> None:
    port = free_port()
    server = serve_on(redis, tiny_repo, tmp_path / "first.log", port, "--session-ttl-s", "1")
    try:
        with Client(server.url) as client:
            width = client.model("tiny-gru").input_size
        readings = np.zeros((100_000, width), np.float32)  # more than it will get to send
        feeder = Feeder(server.url, "tiny-gru", readings)
        feeder.start()
        feeder.wait_for(50)
        server.stop(signal.SIGKILL)
        time.sleep(2.5)  # past the session's idle timeout: Redis ends it meanwhile
        server = serve_on(redis, tiny_repo, tmp_path / "second.log", port,
                          "--session-ttl-s", "1")
        feeder.join(timeout=60)
        assert not feeder.is_alive()
        assert isinstance(feeder.error, SessionGone), feeder.error
        assert "expired" in str(feeder.error)
        with Client(server.url) as client, pytest.raises(SessionGone):
            client.session(str(feeder.session_id))
    finally:
        server.stop()
