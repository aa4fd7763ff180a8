"""Retirement across replicas sharing one real Redis (issue 19, item 2): a replica that does
not serve a session's newer version yet answers 503 with Retry-After (not 404), and a version
one replica retires is retired on the other too (recorded in Redis): no new sessions there,
its sessions still step within the grace."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import serving
from tests.lifecycle.test_retirement import index, input_width, put_version, wait_for
from tests.state.redis_server import RedisServer

POLL_S = 0.5


def test_replicas_answer_a_newer_version_503_and_follow_a_retirement(
        redis: RedisServer, tmp_path: Path) -> None:
    repo_a, repo_b = tmp_path / "a", tmp_path / "b"
    for repo, versions in ((repo_a, (1, 2)), (repo_b, (1,))):
        repo.mkdir()
        for version in versions:
            put_version(repo, "forecast", version, "temperature-gru")
    common = ["--state-store", redis.url, "--model-control", "poll", "--repository-poll-s",
              str(POLL_S), "--retire-grace-s", "600"]
    with serving(["--models", str(repo_a), *common], tmp_path / "a.log") as a, \
            serving(["--models", str(repo_b), *common], tmp_path / "b.log") as b:
        x = np.zeros((1, input_width(a, "forecast", "1")), np.float32).tolist()
        newer = httpx.post(f"{a.url}/v1/models/forecast/sessions", params={"version": "2"},
                           timeout=10).json()["session_id"]
        r = httpx.post(f"{b.url}/v1/sessions/{newer}/step", json={"inputs": x}, timeout=10)
        assert r.status_code == 503, r.text
        assert "not served by this replica yet" in r.json()["error"]
        assert float(r.headers["retry-after"]) > 0
        older = httpx.post(f"{a.url}/v1/models/forecast/sessions", params={"version": "1"},
                           timeout=10).json()["session_id"]
        shutil.rmtree(repo_a / "forecast" / "1")  # only replica a loses version 1
        for replica in (a, b):
            wait_for(lambda r=replica: index(r)[("forecast", "1")]["state"] == "UNLOADING",
                     30, "version 1 retiring on both replicas")
            refused = httpx.post(f"{replica.url}/v1/models/forecast/sessions",
                                 params={"version": "1"}, timeout=10)
            assert refused.status_code == 410, refused.text
            r = httpx.post(f"{replica.url}/v1/sessions/{older}/step", json={"inputs": x},
                           timeout=10)
            assert r.status_code == 200, r.text
