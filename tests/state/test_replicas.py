"""Replicas sharing sessions through a real Redis: three server processes, 100 streaming
sessions driven round-robin across them, one replica SIGKILLed mid-stream, then Redis itself
SIGKILLed and restarted from its append-only file. Every session's outputs must equal the
stateless prediction of its whole sequence: no acknowledged step lost or applied twice.

A client that loses a reply cannot know whether its step was applied, so it retries on another
replica with the same step_id; the server replays the recorded outputs instead of applying the
step again. And the per-client-address session cap is one count across replicas."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, serving_replicas
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

SESSIONS, STEPS, KILL_AT = 100, 12, 5
RNG = np.random.default_rng(29)


@pytest.fixture
def replicas(redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    with serving_replicas(["--models", str(tiny_repo), "--state-store", redis.url],
                          tmp_path, 3) as procs:
        yield procs


class Client:
    """One streaming device: its own sequence, one step per request, rotating replicas, and a
    retry with the same step_id on the next replica when a request fails in transit."""

    def __init__(self, index: int, sid: str, seq: np.ndarray, urls: list[str]) -> None:
        self.index, self.sid, self.seq, self.urls = index, sid, seq, urls
        self.outputs: list[list[float]] = []
        self.retries = 0

    async def step(self, http: httpx.AsyncClient, t: int, dead: set[str]) -> None:
        body = {"inputs": self.seq[t:t + 1].tolist(), "step_id": f"{self.sid}:{t}"}
        for attempt in range(12):
            url = self.urls[(self.index + t + attempt) % len(self.urls)]
            if url in dead:
                continue
            try:
                r = await http.post(f"{url}/v1/sessions/{self.sid}/step", json=body)
            except httpx.TransportError:
                self.retries += 1
                continue
            if r.status_code == 503:  # e.g. Redis restarting: retry, same step_id
                self.retries += 1
                await asyncio.sleep(0.2)
                continue
            assert r.status_code == 200, r.text
            assert r.json()["steps"] == t + 1  # applied exactly once, in order
            self.outputs.extend(r.json()["outputs"])
            return
        raise AssertionError(f"step {t} of {self.sid} never succeeded")


async def stream(clients: list[Client], steps: range, dead: set[str],
                 on_step: dict[int, object] | None = None) -> None:
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=60)) as http:
        for t in steps:
            if on_step and t in on_step:
                on_step[t]()  # type: ignore[operator]
            await asyncio.gather(*(c.step(http, t, dead) for c in clients))


def whole_prediction(url: str, seqs: np.ndarray) -> np.ndarray:
    r = httpx.post(f"{url}/v1/models/tiny-lstm/predict", json={"inputs": seqs.tolist()},
                   timeout=30)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["outputs"])


def test_sessions_survive_a_killed_replica_and_a_restarted_redis(
    redis: RedisServer, replicas: list[ServerProcess]
) -> None:
    urls = [p.url for p in replicas]
    seqs = RNG.normal(size=(SESSIONS, STEPS + 3, 3)).astype(np.float32)
    sids = [httpx.post(f"{urls[i % 3]}/v1/models/tiny-lstm/sessions").json()["session_id"]
            for i in range(SESSIONS)]
    clients = [Client(i, sid, seqs[i], urls) for i, sid in enumerate(sids)]
    dead: set[str] = set()

    def kill_replica() -> None:
        """SIGKILL while the step's requests are about to fly: in-flight ones die with it."""
        async def later() -> None:
            await asyncio.sleep(0.01)
            replicas[0].proc.send_signal(signal.SIGKILL)
        asyncio.get_running_loop().create_task(later())

    asyncio.run(stream(clients, range(STEPS), dead, {KILL_AT: kill_replica}))
    assert replicas[0].proc.wait(timeout=10) == -signal.SIGKILL
    assert sum(c.retries for c in clients) > 0  # requests to the dead replica were retried
    want = whole_prediction(urls[1], seqs[:, :STEPS])
    got = np.asarray([c.outputs for c in clients])
    np.testing.assert_allclose(got, want, atol=1e-5)
    for sid in sids[:10]:
        assert httpx.get(f"{urls[2]}/v1/sessions/{sid}").json()["steps"] == STEPS

    # Redis crashes (SIGKILL, no shutdown) and comes back from its append-only file
    redis.kill()
    r = httpx.post(f"{urls[1]}/v1/sessions/{sids[0]}/step", json={"inputs": [[0.0] * 3]})
    assert r.status_code == 503 and "unreachable" in r.json()["error"]  # clear, not a 500
    redis.start()
    dead.add(urls[0])
    asyncio.run(stream(clients, range(STEPS, STEPS + 3), dead))
    want = whole_prediction(urls[1], seqs)
    np.testing.assert_allclose(np.asarray([c.outputs for c in clients]), want, atol=1e-5)


def test_a_retried_step_is_replayed_not_applied_twice(
    redis: RedisServer, replicas: list[ServerProcess]
) -> None:
    a, b = replicas[0].url, replicas[1].url
    sid = httpx.post(f"{a}/v1/models/tiny-gru/sessions").json()["session_id"]
    x = {"inputs": [[0.5, -0.5, 0.25]], "step_id": "reading-1"}
    first = httpx.post(f"{a}/v1/sessions/{sid}/step", json=x).json()
    again = httpx.post(f"{b}/v1/sessions/{sid}/step", json=x).json()  # another replica
    assert again == first and first["steps"] == 1
    nxt = httpx.post(f"{b}/v1/sessions/{sid}/step",
                     json={"inputs": [[0.5, -0.5, 0.25]], "step_id": "reading-2"}).json()
    assert nxt["steps"] == 2 and nxt["outputs"] != first["outputs"]


def test_the_per_address_cap_is_one_count_across_replicas(
        redis: RedisServer, tiny_repo: Path, tmp_path: Path) -> None:
    """Keys off, --max-sessions-per-client 3, two replicas on one Redis: of 12 creates sent
    at once from one address, split across the replicas, exactly 3 succeed; a session deleted
    on one replica makes room on the other."""
    procs = [ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url,
                            "--max-sessions-per-client", "3"], tmp_path / f"capped-{i}.log")
             for i in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()

        async def creates() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as http:
                return list(await asyncio.gather(*(
                    http.post(f"{procs[i % 2].url}/v1/models/tiny-gru/sessions")
                    for i in range(12))))

        answers = asyncio.run(creates())
        made = [r.json()["session_id"] for r in answers if r.status_code == 201]
        assert len(made) == 3
        assert sorted({r.status_code for r in answers}) == [201, 429]
        deleted = httpx.delete(f"{procs[0].url}/v1/sessions/{made[0]}")
        assert deleted.status_code == 204
        assert httpx.post(f"{procs[1].url}/v1/models/tiny-gru/sessions").status_code == 201
        assert httpx.post(f"{procs[0].url}/v1/models/tiny-gru/sessions").status_code == 429
    finally:
        for proc in procs:
            proc.stop()
