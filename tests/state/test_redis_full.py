"""A full Redis fails writes loudly and keeps every session: a real redis-server with a small
`maxmemory` and `maxmemory-policy noeviction` (what docker-compose.yml and deploy/k8s run) and
a real rnnserve server on it. Sessions are created until Redis refuses one; the refusal is a
503 that says Redis is full and what to do, never a 500; no session is evicted or changed; a
step refused while full was not applied (its session's step count says so); and deleting
sessions frees room, so steps and creates work again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, weather_rows
from tests.state.conftest import NO_REDIS_PY
from tests.state.redis_server import REDIS_SERVER, RedisServer

MODEL = "temperature-lstm"
MAX_CREATES = 5000  # 3 MB hold well under 1,000 sessions: a bound, not an expectation
READING = weather_rows(1, model=MODEL, temperature_f=48.2)  # one hour of the model's features


@pytest.fixture
def full_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    pytest.importorskip("redis", reason=NO_REDIS_PY)
    server = RedisServer(tmp_path / "redis", password="full-test-pw",
                         extra_args=("--maxmemory", "3mb", "--maxmemory-policy", "noeviction"))
    server.start()
    yield server
    server.stop()


def assert_full_503(response: httpx.Response) -> None:
    """What a client and an operator read when Redis is full."""
    assert response.status_code == 503, response.text
    message = response.json()["error"]
    assert "is full" in message and "maxmemory" in message and "noeviction" in message
    assert "delete sessions" in message  # what to do about it
    assert "full-test-pw" not in message
    assert int(response.headers["retry-after"]) >= 1


def test_full_redis_refuses_writes_with_503_and_loses_no_session(
    full_redis: RedisServer, start_server: Callable[..., ServerProcess],
) -> None:
    import redis

    server = start_server("--state-store", full_redis.url, "--max-sessions-per-client", "0")
    created: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        refused = None
        for _ in range(MAX_CREATES):
            response = client.post(f"/v1/models/{MODEL}/sessions")
            if response.status_code != 201:
                refused = response
                break
            created.append(response.json()["session_id"])
        assert refused is not None, f"Redis took {MAX_CREATES} sessions in 3 MB"
        assert_full_503(refused)
        assert len(created) > 100

        # an operator sees it too: the store's own refusals are counted by kind
        metrics = client.get("/metrics").text
        assert 'rnnserve_state_store_errors_total{kind="full",store="redis"}' in metrics
        assert 'kind="unreachable"' not in metrics  # it answered: full is not unreachable

        # full: still ready (reads work), every session still there and unstepped
        assert client.get("/v2/health/ready").status_code == 200
        stepped = {}
        for session_id in created[:50]:  # a step needs memory too: 200, or 503 not applied
            response = client.post(f"/v1/sessions/{session_id}/step",
                                   json={"inputs": READING})
            if response.status_code == 503:
                assert_full_503(response)
                assert "not applied" in response.json()["error"]
            else:
                assert response.status_code == 200, response.text
            stepped[session_id] = 1 if response.status_code == 200 else 0
        for session_id in created:
            response = client.get(f"/v1/sessions/{session_id}")
            assert response.status_code == 200, response.text
            assert response.json()["steps"] == stepped.get(session_id, 0)
        admin = redis.Redis.from_url(full_redis.url)
        try:
            assert admin.info("stats")["evicted_keys"] == 0
            assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            admin.close()

        # deleting sessions is what frees room: it works while full, then writes work again
        for session_id in created[-200:]:
            assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
        kept = created[:-200]
        for session_id in kept[:20]:
            response = client.post(f"/v1/sessions/{session_id}/step",
                                   json={"inputs": READING})
            assert response.status_code == 200, response.text
            assert response.json()["steps"] == stepped.get(session_id, 0) + 1
        assert client.post(f"/v1/models/{MODEL}/sessions").status_code == 201
    assert "unexpected error" not in server.log()  # no 500 anywhere
