"""Fixtures of the gRPC tests: each module starts its own `server` (with gRPC on); this is
the real tritonclient.grpc pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import tritonclient.grpc as grpcclient

from tests.conftest import ServerProcess


@pytest.fixture(scope="module")
def triton(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    """tritonclient.grpc against the module's `server`."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()
