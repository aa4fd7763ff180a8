"""A session write is answered soon after the request's time limit when Redis stops answering
with its sockets open, not when the store's own time-outs run out. A real server with
`--request-timeout-s 1` on a real redis-server that the test stops (SIGSTOP) and resumes:

- a REST create, a bulk create and a KServe v2 sequence start, each sent while Redis is
  stopped, are answered 503 (Retry-After: 1) "may have been applied" between the limit plus its
  grace (2 s) and a little later. Before, the store's 5 s command time-out held them (and its
  retry on a fresh connection another 5 s: 503 after 20 s under a 10 s limit);
- the answer is true: resumed, Redis runs the write it had received on the open connection
  (the first write's; the others wait on new connections whose handshake Redis never
  answered), so the v2 sequence that was being started exists and its next step is applied;
- the server serves as before once Redis is back."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")
pytest.importorskip("redis", reason="needs redis-py (pip install .[redis])")

LIMIT_S = 1.0
"""--request-timeout-s here; a session write is awaited that long again (the lesser of 1 s and
the limit) before the call is cut."""


@pytest.fixture
def server(redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url,
                          "--request-timeout-s", str(LIMIT_S)], tmp_path / "server.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@contextmanager
def stalled(redis: RedisServer) -> Iterator[None]:
    """Redis stopped: its sockets stay open, nothing is answered."""
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis.process.send_signal(signal.SIGCONT)


def v2_step(sequence_id: int, start: bool) -> dict[str, Any]:
    return {"parameters": {"sequence_id": sequence_id, "sequence_start": start},
            "inputs": [{"name": "input", "shape": [1, 1, 3], "datatype": "FP32",
                        "data": [0.1, 0.2, 0.3]}]}


def test_session_writes_are_answered_soon_after_the_limit_when_redis_stalls(
        redis: RedisServer, server: ServerProcess) -> None:
    http = httpx.Client(base_url=server.url, timeout=30)
    # the store's scripts are loaded and a pooled connection is open, as on a live server
    assert http.post("/v1/models/tiny-gru/sessions").status_code == 201
    assert http.post("/v2/models/tiny-gru/infer", json=v2_step(1, True)).status_code == 200
    writes: dict[str, Callable[[], httpx.Response]] = {  # the first on that connection
        "v2 sequence start": lambda: http.post("/v2/models/tiny-gru/infer",
                                               json=v2_step(7, True)),
        "create": lambda: http.post("/v1/models/tiny-gru/sessions"),
        "bulk create": lambda: http.post("/v1/models/tiny-gru/sessions",
                                         json={"sessions": [{}, {}, {}]}),
    }
    answers: dict[str, tuple[httpx.Response, float]] = {}
    with stalled(redis):
        for name, write in writes.items():
            started = time.monotonic()
            answers[name] = write(), time.monotonic() - started
    for name, (answer, took) in answers.items():
        assert answer.status_code == 503, (name, answer.text)
        assert answer.headers["Retry-After"] == "1", name
        error = answer.json()["error"]
        assert "state store had not finished" in error and "may have been applied" in error, \
            (name, error)
        assert "time limit of 1 s" in error, (name, error)
        if name != "bulk create":  # the session it was making, so that it can be looked up
            assert re.search(r"the creation of session '[^']+' ", error), error
        if name.startswith("v2"):  # a step: the answer says whether IT was applied, too
            assert error.endswith("; the step was not applied, so retrying it is safe"), error
        assert 2 * LIMIT_S - 0.05 <= took < 2 * LIMIT_S + 1.5, (name, took)

    # resumed, Redis ran the start it had received: "may have been applied" was the truth
    for _ in range(100):
        step = http.post("/v2/models/tiny-gru/infer", json=v2_step(7, False))
        if step.status_code != 503:
            break
        time.sleep(0.1)
    assert step.status_code == 200, step.text
    # and the server serves as before
    assert http.post("/v1/models/tiny-gru/sessions").status_code == 201
    assert http.post("/v2/models/tiny-gru/infer", json=v2_step(1, False)).status_code == 200
    assert http.get("/v2/health/ready").status_code == 200
    http.close()
