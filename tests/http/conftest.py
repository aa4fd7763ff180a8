"""Fixtures shared by the HTTP tests that talk to a real server process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from tests.conftest import ServerProcess, serving


@pytest.fixture(scope="module")
def server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`rnnserve serve` on the tiny models for one test module (HTTP only)."""
    with serving(["--models", str(tiny_repo)],
                 tmp_path_factory.mktemp("server") / "server.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def triton(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    """The real tritonclient.http, pointed at `server`."""
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    yield client
    client.close()
