"""A rolling upgrade on one Redis: replicas of the previous release and of this code serve the
same sessions at once, as they do while a Deployment rolls. The previous release is the code
that landed before the Redis store gained write ids, delete receipts and WAIT (commit
PREVIOUS, taken from the git history); this code writes fields it does not know about, and it
must still read, step, replay and delete what either wrote.

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

PREVIOUS = "1363c96"
"""The last commit before issue 16 changed what the Redis store writes."""
SESSIONS, STEPS = 6, 10
RNG = np.random.default_rng(16)


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


@pytest.fixture(scope="module")
def previous_service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS,
                              "service"], capture_output=True, timeout=60, check=False)
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS} failed (this test needs the repository's history): "
        f"{archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True, timeout=60)
    return out / "service"


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


def test_both_releases_step_replay_and_delete_the_same_sessions(
    releases: dict[str, ServerProcess],
) -> None:
    old, new = releases["previous"].url, releases["current"].url
    # the two really are different releases: only the current one reports its store's health
    assert "state_store" not in httpx.get(f"{old}/v1/models", timeout=10).json()
    assert "state_store" in httpx.get(f"{new}/v1/models", timeout=10).json()

    models = ["tiny-lstm", "tiny-gru"]
    sessions = []
    for i in range(SESSIONS):
        creator = (old, new)[i % 2]
        model = models[i % 2]
        created = httpx.post(f"{creator}/v1/models/{model}/sessions", timeout=10)
        assert created.status_code in (200, 201), created.text
        sessions.append((created.json()["session_id"], model, i % 2))
    inputs = RNG.standard_normal((SESSIONS, STEPS, 3)).astype(np.float32).round(4)
    outputs: list[list[list[float]]] = [[] for _ in range(SESSIONS)]
    for t in range(STEPS):
        for s, (sid, _, first) in enumerate(sessions):
            server, other = ((old, new) if (t + first) % 2 == 0 else (new, old))
            body = {"inputs": [inputs[s, t].tolist()], "step_id": f"{sid}-{t}"}
            answer = httpx.post(f"{server}/v1/sessions/{sid}/step", json=body, timeout=10)
            assert answer.status_code == 200, (server, answer.text)
            assert answer.json()["steps"] == t + 1
            outputs[s].append(answer.json()["outputs"][0])
            if t % 3 == 1:  # the reply "lost": the same step sent to the other release
                again = httpx.post(f"{other}/v1/sessions/{sid}/step", json=body, timeout=10)
                assert again.status_code == 200, (other, again.text)
                assert again.json()["steps"] == t + 1
                assert again.json()["outputs"] == answer.json()["outputs"]

    for s, (sid, model, first) in enumerate(sessions):
        for server in (old, new):
            record = httpx.get(f"{server}/v1/sessions/{sid}", timeout=10)
            assert record.status_code == 200 and record.json()["steps"] == STEPS, record.text
        states = [httpx.get(f"{server}/v1/sessions/{sid}/state", timeout=10).json()
                  for server in (old, new)]
        assert states[0] == states[1]
        whole = httpx.post(f"{new}/v1/models/{model}/predict",
                           json={"inputs": [inputs[s].tolist()]}, timeout=10)
        np.testing.assert_allclose(np.asarray(outputs[s], np.float32),
                                   np.asarray(whole.json()["outputs"][0], np.float32),
                                   atol=1e-5)
        deleter = (new, old)[first]  # the release that did not create it
        assert httpx.delete(f"{deleter}/v1/sessions/{sid}", timeout=10).status_code in (200, 204)
        for server in (old, new):
            assert httpx.get(f"{server}/v1/sessions/{sid}", timeout=10).status_code == 404
