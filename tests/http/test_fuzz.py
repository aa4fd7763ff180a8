"""Property-based fuzzing of every documented endpoint (schemathesis, generating requests from
the server's own /openapi.json) against a real server process: whatever a client sends, the
server never answers 5xx, and every error is the contract's {"error": ...} body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import COMMITTED_MODELS, ServerProcess, serving


@pytest.fixture(scope="module")
def fuzzed_server(tiny_repo: Path, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ServerProcess]:
    with serving(["--models", str(tiny_repo), "--max-timesteps", "64",
                  "--max-total-timesteps", "512"],
                 tmp_path_factory.mktemp("fuzz") / "server.log") as server:
        yield server


def _openapi() -> dict[str, object]:
    """The server's OpenAPI document, from the app object: no process at collection time
    (the server the cases are sent to belongs to the fixture, which always stops it)."""
    from rnnserve.engine import Engine
    from rnnserve.http.app import create_app
    from rnnserve.settings import Settings

    app = create_app(Engine(Settings(models=COMMITTED_MODELS, grpc_port=0)))
    return app.openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, fuzzed_server: ServerProcess) -> None:
    params = case.path_parameters or {}
    if "model" in params and len(str(case.body)) % 2 == 0:
        params["model"] = "tiny-gru"  # half the time aim at a real model: reach the engine
    response = case.call(base_url=fuzzed_server.url, timeout=30)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert "error" in response.json()  # the contract's error body, every time
