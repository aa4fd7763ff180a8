"""The benchmarks' server starts (bench/procs.py) when a port they picked was taken before the
server bound it: the server exits with "address already in use", and the benchmark (or the
bench test that runs it) starts it again on new ports instead of failing. The ports are held
here for real, by a listening socket, as another process would hold them."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import bench.procs
from bench.procs import (
    PortTaken,
    ServerProcess,
    base_url,
    start_echo,
    start_rnnserve,
    with_fresh_ports,
)
from tests.conftest import COMMITTED_MODELS


@contextmanager
def first_pick_taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[int]]]:
    """A port held by a listener, handed out as bench.procs.free_port's first pick; yields it
    and the list of every port picked."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        real = bench.procs.free_port
        picked: list[int] = []

        def pick(host: str = "127.0.0.1") -> int:
            port = real(host) if picked else held
            picked.append(port)
            return port

        monkeypatch.setattr(bench.procs, "free_port", pick)
        yield held, picked


def test_an_echo_server_whose_port_was_taken_starts_on_a_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with first_pick_taken(monkeypatch) as (held, picked):
        with start_echo(tmp_path) as echo:
            assert len(picked) == 2 and picked[1] != held  # one retry, on a new port
            assert base_url(echo).endswith(f":{picked[1]}")
            assert httpx.get(echo.ready_url, timeout=5).status_code == 200


def test_rnnserve_whose_grpc_port_was_taken_starts_on_new_ports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with first_pick_taken(monkeypatch) as (held, picked):  # gRPC's port is picked first
        with start_rnnserve(COMMITTED_MODELS, tmp_path, grpc=True) as server:
            assert len(picked) == 4, picked  # gRPC and HTTP, twice
            assert server.grpc_target == f"127.0.0.1:{picked[2]}" and picked[2] != held
            with socket.create_connection(("127.0.0.1", picked[2]), timeout=5):
                pass  # gRPC listens where the benchmark will connect
            assert httpx.get(server.ready_url, timeout=5).status_code == 200


def failing(error: Exception, calls: list[int]) -> Callable[[], ServerProcess]:
    def start() -> ServerProcess:
        calls.append(1)
        raise error
    return start


def test_a_port_taken_again_and_again_fails_after_three_starts() -> None:
    calls: list[int] = []
    with pytest.raises(PortTaken):
        with_fresh_ports(failing(PortTaken("address already in use"), calls))
    assert len(calls) == 3


def test_a_server_that_fails_otherwise_is_not_started_again() -> None:
    calls: list[int] = []
    with pytest.raises(RuntimeError, match="bad flag"):
        with_fresh_ports(failing(RuntimeError("bad flag"), calls))
    assert len(calls) == 1
