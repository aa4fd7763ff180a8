"""Fixtures of the client tests: a real server on the tiny test models (input width 3, read
from the server all the same), and for the restart tests a real redis-server
(tests/state/conftest.py's) and servers that come back on the port they had."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, serving
from tests.state.conftest import redis, redis_server, redis_url  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the memory store for the module."""
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("client") / "server.log") as proc:
        yield proc


class ServerOnPort(ServerProcess):
    """A server started on a port chosen before (a restarted server comes back where its
    clients look for it)."""

    def __init__(self, args: list[str], log_path: Path, port: int) -> None:
        self._fixed_port = port
        super().__init__(args, log_path)

    def _pick_port(self) -> None:
        self.port = self._fixed_port
        self.url = f"http://127.0.0.1:{self.port}"
