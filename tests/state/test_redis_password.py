"""A password-protected Redis: rnnserve connects with the password from the store URL and never
shows it. A real redis-server with `--requirepass`, a real rnnserve server with the password in
--state-store (as compose and Kubernetes pass it): sessions work, and neither the log (debug
level, where most is written), nor an error body, nor /metrics holds the password. A wrong or
missing password stops the server at start with a message that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, weather_rows
from tests.state.conftest import NO_REDIS_PY
from tests.state.redis_server import REDIS_SERVER, RedisServer

PASSWORD = "Pw-4d1f9c-never-logged"


@pytest.fixture
def secured_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason=NO_REDIS_PY)
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    server.start()
    yield server
    server.stop()


def test_password_is_used_and_never_logged(
    secured_redis: RedisServer, start_server: Callable[..., ServerProcess],
) -> None:
    assert PASSWORD in secured_redis.url
    server = start_server("--state-store", secured_redis.url, "--log-level", "debug")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        sid = client.post("/v1/models/temperature-gru/sessions").json()["session_id"]
        step = client.post(f"/v1/sessions/{sid}/step",
                           json={"inputs": weather_rows(1, temperature_f=48.2)})
        assert step.status_code == 200, step.text
        assert client.get(f"/v1/sessions/{sid}").json()["steps"] == 1
        assert PASSWORD not in client.get("/metrics").text
        secured_redis.stop()  # an outage: its 503 names the store, not its password
        outage = client.post(f"/v1/sessions/{sid}/step",
                             json={"inputs": weather_rows(1, temperature_f=1.0)})
        assert outage.status_code == 503
        assert "127.0.0.1" in outage.text and PASSWORD not in outage.text
    server.stop()
    log = server.log()
    assert f"redis://127.0.0.1:{secured_redis.port}/0" in log  # the store is named, safely
    assert PASSWORD not in log


@pytest.mark.parametrize("url_auth", [":wrong-password@", ""], ids=["wrong", "missing"])
def test_wrong_or_missing_password_stops_the_server_clearly(
    secured_redis: RedisServer, tmp_path: Path, url_auth: str,
) -> None:
    url = f"redis://{url_auth}127.0.0.1:{secured_redis.port}/0"
    done = subprocess.run(
        [sys.executable, "-m", "rnnserve", "serve", "--host", "127.0.0.1", "--port", "0",
         "--grpc-port", "0", "--state-store", url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "cannot open the state store" in output
    assert "refused the connection's credentials" in output
    assert "redis://:PASSWORD@HOST:PORT/DB" in output  # how to fix it
    assert "wrong-password" not in output and PASSWORD not in output
