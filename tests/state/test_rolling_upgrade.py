"""A rolling upgrade on one Redis: replicas of the previous release and of this code serve the
same sessions at once, as they do while a Deployment rolls, and then the switch of
--redis-record-format from 1 to 2 rolls out over replicas that all run this code.

The previous releases are taken from the git history: LANDED, the release this code
replaces, and BEFORE_WRITE_IDS, the last one before the Redis store gained write ids,
delete receipts and WAIT (each writes fields the other does not know about). This code,
writing record format 1 as it does by default, must still read, step, replay and delete what
either wrote, and they what it wrote.

Sessions are created on both, stepped alternately on each (every step with a step_id), some
steps sent again on the other release (the replay must return the recorded outputs and not
apply the step again), and deleted from the release that did not create them. Afterwards
every session's step count is its number of distinct steps, and its joined outputs equal a
stateless predict of its whole input."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ROOT, ServerProcess
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

LANDED = "1bad0fd"
"""The release before versioned records: it reads and writes record format 1 only."""
BEFORE_WRITE_IDS = "1363c96"
"""The last commit before issue 16 changed what the Redis store writes."""
SESSIONS, STEPS = 6, 10
MODELS = ("tiny-lstm", "tiny-gru")
RNG = np.random.default_rng(16)

Sessions = list[tuple[str, str, int]]
"""Each session's id, model, and which of the two servers created it (0 or 1)."""


class ReleaseServer(ServerProcess):
    """`python -m rnnserve serve` from another release's source tree (its service/ first on
    PYTHONPATH, ahead of this checkout's installed package)."""

    def __init__(self, service: Path, args: list[str], log_path: Path) -> None:
        self.service = service
        super().__init__(args, log_path)

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(self.service)}
        return subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                env=env)


def release_source(commit: str, out: Path) -> Path:
    """service/ of `commit`, unpacked under `out` (git archive of this repository)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit,
                              "service"], capture_output=True, timeout=60, check=False)
    assert archive.returncode == 0, (
        f"git archive {commit} failed (this test needs the repository's history): "
        f"{archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True, timeout=60)
    return out / "service"


@pytest.fixture(scope="module", params=[LANDED, BEFORE_WRITE_IDS])
def previous_service(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    return release_source(request.param, tmp_path_factory.mktemp("previous-release"))


@pytest.fixture
def releases(redis: RedisServer, tiny_repo: Path, tmp_path: Path,
             previous_service: Path) -> Iterator[dict[str, ServerProcess]]:
    args = ["--models", str(tiny_repo), "--state-store", redis.url]
    servers = {"previous": ReleaseServer(previous_service, args, tmp_path / "previous.log"),
               "current": ServerProcess(args, tmp_path / "current.log")}
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def create_sessions(servers: tuple[str, str]) -> Sessions:
    sessions = []
    for i in range(SESSIONS):
        created = httpx.post(f"{servers[i % 2]}/v1/models/{MODELS[i % 2]}/sessions",
                             timeout=10)
        assert created.status_code in (200, 201), created.text
        sessions.append((created.json()["session_id"], MODELS[i % 2], i % 2))
    return sessions


def step_alternately(servers: tuple[str, str], sessions: Sessions, inputs: np.ndarray,
                     outputs: list[list[list[float]]], steps: range) -> None:
    """Steps `steps` of every session, each on the server the other one took last; every
    third step's reply is "lost" and the same step sent to the other server, which must
    replay it (same outputs, same count), not apply it again."""
    for t in steps:
        for s, (sid, _, first) in enumerate(sessions):
            server, other = servers if (t + first) % 2 == 0 else servers[::-1]
            body = {"inputs": [inputs[s, t].tolist()], "step_id": f"{sid}-{t}"}
            answer = httpx.post(f"{server}/v1/sessions/{sid}/step", json=body, timeout=10)
            assert answer.status_code == 200, (server, answer.text)
            assert answer.json()["steps"] == t + 1
            outputs[s].append(answer.json()["outputs"][0])
            if t % 3 == 1:
                again = httpx.post(f"{other}/v1/sessions/{sid}/step", json=body, timeout=10)
                assert again.status_code == 200, (other, again.text)
                assert again.json()["steps"] == t + 1
                assert again.json()["outputs"] == answer.json()["outputs"]


def check_and_delete(servers: tuple[str, str], sessions: Sessions, inputs: np.ndarray,
                     outputs: list[list[list[float]]]) -> None:
    """Both servers see every session at STEPS steps with the same state; its outputs are a
    stateless predict's; the server that did not create it deletes it, for both."""
    for s, (sid, model, first) in enumerate(sessions):
        for server in servers:
            record = httpx.get(f"{server}/v1/sessions/{sid}", timeout=10)
            assert record.status_code == 200 and record.json()["steps"] == STEPS, record.text
        states = [httpx.get(f"{server}/v1/sessions/{sid}/state", timeout=10).json()
                  for server in servers]
        assert states[0] == states[1]
        whole = httpx.post(f"{servers[1]}/v1/models/{model}/predict",
                           json={"inputs": [inputs[s].tolist()]}, timeout=10)
        np.testing.assert_allclose(np.asarray(outputs[s], np.float32),
                                   np.asarray(whole.json()["outputs"][0], np.float32),
                                   atol=1e-5)
        deleter = servers[1 - first]
        assert httpx.delete(f"{deleter}/v1/sessions/{sid}", timeout=10).status_code in (200, 204)
        for server in servers:
            assert httpx.get(f"{server}/v1/sessions/{sid}", timeout=10).status_code == 404


def record_formats(redis: RedisServer, sessions: Sessions) -> set[bytes | None]:
    """The `fmt` field of each session's hash (None: format 1, as older releases write)."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    try:
        return {client.hget("rnnserve:s:" + sid, "fmt") for sid, _, _ in sessions}
    finally:
        client.close()


def test_both_releases_step_replay_and_delete_the_same_sessions(
    releases: dict[str, ServerProcess], redis: RedisServer,
) -> None:
    servers = (releases["previous"].url, releases["current"].url)
    # the two really are different releases: only the current one names its record formats
    for server, current in zip(servers, (False, True), strict=True):
        store = httpx.get(f"{server}/v1/models", timeout=10).json().get("state_store", {})
        assert ("record_format" in store) is current

    sessions = create_sessions(servers)
    inputs = RNG.standard_normal((SESSIONS, STEPS, 3)).astype(np.float32).round(4)
    outputs: list[list[list[float]]] = [[] for _ in range(SESSIONS)]
    step_alternately(servers, sessions, inputs, outputs, range(STEPS))
    assert record_formats(redis, sessions) == {None}  # all of it readable by the previous
    check_and_delete(servers, sessions, inputs, outputs)


def test_switching_the_record_format_loses_no_session(
    redis: RedisServer, tiny_repo: Path, tmp_path: Path,
) -> None:
    """The whole upgrade: the landed release and this code (format 1) serve together; then
    every replica runs this code, and --redis-record-format 2 rolls out over them (format 1
    and 2 replicas serve together); the same sessions step on throughout."""
    args = ["--models", str(tiny_repo), "--state-store", redis.url]
    landed = ReleaseServer(release_source(LANDED, tmp_path), args, tmp_path / "landed.log")
    current = ServerProcess(args, tmp_path / "current.log")
    switched = ServerProcess([*args, "--redis-record-format", "2"], tmp_path / "switched.log")
    try:
        landed.wait_ready()
        current.wait_ready()
        sessions = create_sessions((landed.url, current.url))
        inputs = RNG.standard_normal((SESSIONS, STEPS, 3)).astype(np.float32).round(4)
        outputs: list[list[list[float]]] = [[] for _ in range(SESSIONS)]
        step_alternately((landed.url, current.url), sessions, inputs, outputs, range(4))
        assert record_formats(redis, sessions) == {None}

        landed.stop()  # every replica runs this code now; the setting rolls out
        switched.wait_ready()
        described = httpx.get(f"{switched.url}/v1/models", timeout=10).json()["state_store"]
        assert described["record_format"] == {"writes": 2, "reads": [1, 2]}
        step_alternately((current.url, switched.url), sessions, inputs, outputs, range(4, 7))
        assert record_formats(redis, sessions) == {None, b"2"}  # the last writer's format

        current.stop()  # the rollout is done: only format 2 writers are left
        step_alternately((switched.url, switched.url), sessions, inputs, outputs,
                         range(7, STEPS))
        assert record_formats(redis, sessions) == {b"2"}
        newer_format_refused(redis, switched.url, sessions[0][0])
        check_and_delete((switched.url, switched.url), sessions, inputs, outputs)
    finally:
        for server in (landed, current, switched):
            server.stop()


def newer_format_refused(redis: RedisServer, server: str, session_id: str) -> None:
    """A record of a format this code does not read (as a newer release would write it): a
    step is answered 503 with Retry-After and says why, and the record is left as it was;
    once it is back in a known format (here: put back by hand) the session goes on."""
    import redis as redis_py

    client = redis_py.Redis.from_url(redis.url)
    key = "rnnserve:s:" + session_id
    try:
        client.hset(key, "fmt", "3")
        before = client.hgetall(key)
        body = {"inputs": [[0.0, 0.0, 0.0]], "step_id": "newer"}
        answer = httpx.post(f"{server}/v1/sessions/{session_id}/step", json=body, timeout=10)
        assert answer.status_code == 503, answer.text
        assert "record format 3" in answer.text and answer.headers.get("retry-after")
        state = httpx.get(f"{server}/v1/sessions/{session_id}/state", timeout=10)
        assert state.status_code == 503 and "record format 3" in state.text
        assert client.hgetall(key) == before
        client.hset(key, "fmt", "2")
    finally:
        client.close()
