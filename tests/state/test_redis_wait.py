"""--redis-wait-replicas: a step is acknowledged only once a Redis replica has it (WAIT after
the batch's write script, on the same connection). A real master and one real replica: with
the replica up a step is 200; with it stopped the step is applied on the master but answered
503 "applied, not yet replicated"; the retry with the same step_id, once the replica is back,
returns the same outputs and the session has advanced once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rnnserve.errors import StepNotReplicated

from tests.conftest import ServerProcess
from tests.state.conftest import LSTM, MakeStore, no_ids, random_state, rec, step
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")


def replication(server: RedisServer) -> dict[str, object]:
    import redis as redis_py

    client = redis_py.Redis.from_url(server.url)
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def wait_synced(master: RedisServer, replica: RedisServer, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (replication(replica).get("master_link_status") == "up"
                and int(str(replication(master).get("connected_slaves", 0))) >= 1):
            return
        time.sleep(0.05)
    raise TimeoutError("the replica did not sync with its master")


@pytest.fixture
def replica(redis: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "replica")
    server.persistence += ["--replicaof", "127.0.0.1", str(redis.port)]
    server.start()
    wait_synced(redis, server)
    yield server
    server.stop()


def test_a_step_waits_for_a_replica(redis: RedisServer, replica: RedisServer,
                                    tiny_repo: Path, tmp_path: Path) -> None:
    server = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url,
                            "--redis-wait-replicas", "1", "--redis-wait-timeout-s", "0.3"],
                           tmp_path / "server.log")
    seq = np.random.default_rng(3).normal(size=(3, 3)).astype(np.float32)
    try:
        server.wait_ready()
        sid = httpx.post(f"{server.url}/v1/models/tiny-lstm/sessions").json()["session_id"]

        def step(t: int) -> httpx.Response:
            return httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                              json={"inputs": seq[t:t + 1].tolist(), "step_id": f"s{t}"},
                              timeout=10)

        first = step(0)
        assert first.status_code == 200, first.text
        replica.stop()
        refused = step(1)
        assert refused.status_code == 503, refused.text
        assert refused.headers.get("retry-after")
        message = refused.json()["error"]
        assert "applied, not yet replicated" in message
        assert "retry with the same step_id" in message
        replica.start()
        wait_synced(redis, replica)
        retried = step(1)
        assert retried.status_code == 200, retried.text
        assert retried.json()["steps"] == 2  # applied once, by the refused call
        assert step(2).json()["steps"] == 3
        outputs = [*first.json()["outputs"], *retried.json()["outputs"]]
        want = httpx.post(f"{server.url}/v1/models/tiny-lstm/predict",
                          json={"inputs": [seq[:2].tolist()]}).json()["outputs"][0]
        np.testing.assert_allclose(outputs, want, atol=1e-5)
        assert httpx.get(f"{server.url}/v1/sessions/{sid}").json()["steps"] == 3
    finally:
        server.stop()


def test_no_wait_without_the_setting(redis: RedisServer, replica: RedisServer,
                                     tiny_repo: Path, tmp_path: Path) -> None:
    """Off by default: a step with no replica left is acknowledged as before."""
    server = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url],
                           tmp_path / "server.log")
    try:
        server.wait_ready()
        replica.stop()
        sid = httpx.post(f"{server.url}/v1/models/tiny-gru/sessions").json()["session_id"]
        r = httpx.post(f"{server.url}/v1/sessions/{sid}/step", json={"inputs": [[0.1] * 3]})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


async def test_rows_not_replicated_in_time_say_so(make_redis: MakeStore) -> None:
    """No replica at all: every row the script applied is StepNotReplicated; a row that
    conflicted was not applied and stays a conflict. Redis had forgotten the script (SCRIPT
    FLUSH, as after a restart): the pipeline loads it and runs it again."""
    store: Any = await make_redis(wait_replicas=1, wait_timeout_s=0.05)
    await store.create(LSTM, rec("a"), None)
    await store.create(LSTM, rec("b"), None)
    gathered = await store.gather(LSTM, ["a", "b"], [None, None])
    await step(store, LSTM, ["b"], random_state(LSTM, 1))  # b changes under the batch
    await store._client.script_flush()
    written = await store.scatter(gathered, random_state(LSTM, 2, batch=2), *no_ids([1, 1]))
    assert isinstance(written.errors[0], StepNotReplicated)
    assert "applied, not yet replicated" in written.errors[0].message
    assert written.conflict == [False, True] and written.errors[1] is None
    assert (await store.get("a")).steps == 1  # applied on the master all the same
