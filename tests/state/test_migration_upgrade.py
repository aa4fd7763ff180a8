"""Kept inputs during a rolling upgrade: a replica of the release before migration (which
knows nothing of kept inputs) and one of this code share one Redis and step the same sessions
of a version with `rewarm_steps`. The previous release must still step what this code wrote
(its states and step counts agree on both); a session that only this code stepped migrates
exactly, and one the previous release stepped too is refused (409) instead of being re-warmed
from inputs that miss its steps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.http.test_migration import WINDOW, build_repository
from tests.state.redis_server import REDIS_SERVER, RedisServer
from tests.state.test_rolling_upgrade import ReleaseServer, release_source

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

BEFORE_MIGRATION = "c4cef35"
"""The last commit before kept inputs (main when issue 19's migration began)."""


@pytest.fixture
def releases(redis: RedisServer, tiny_repo: Path, tmp_path: Path
             ) -> Iterator[tuple[str, str]]:
    pytest.importorskip("redis", reason="redis-py is not installed (pip install .[redis])")
    models = build_repository(tiny_repo, tmp_path / "models")
    (tmp_path / "previous").mkdir()
    args = ["--models", str(models), "--state-store", redis.url]
    previous = ReleaseServer(release_source(BEFORE_MIGRATION, tmp_path / "previous"), args,
                             tmp_path / "previous.log")
    current = ServerProcess(args, tmp_path / "current.log")
    try:
        previous.wait_ready()
        current.wait_ready()
        yield previous.url, current.url
    finally:
        previous.stop()
        current.stop()


def post(url: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=10)


def test_an_older_replica_steps_on_and_its_unkept_steps_block_migration(
        releases: tuple[str, str]) -> None:
    previous, current = releases
    inputs = np.random.default_rng(19).standard_normal((2, 4, 3)).round(4).tolist()
    mixed = post(f"{current}/v1/models/moving/sessions", {"version": 1}).json()["session_id"]
    ours = post(f"{current}/v1/models/moving/sessions", {"version": 1}).json()["session_id"]
    reference = post(f"{current}/v1/models/moving/sessions", {"version": 2}
                     ).json()["session_id"]
    for t in range(4):  # `mixed` alternates between the releases; `ours` stays on this code
        server = current if t % 2 == 0 else previous
        assert post(f"{server}/v1/sessions/{mixed}/step",
                    {"inputs": [inputs[0][t]]}).status_code == 200
        assert post(f"{current}/v1/sessions/{ours}/step", {"inputs": [inputs[1][t]]}
                    ).status_code == 200
        assert post(f"{current}/v1/sessions/{reference}/step", {"inputs": [inputs[1][t]]}
                    ).status_code == 200
    for sid in (mixed, ours):  # both releases read the same record
        described = [httpx.get(f"{s}/v1/sessions/{sid}/state", timeout=10).json()
                     for s in (previous, current)]
        assert described[0] == described[1] and described[0]["steps"] == 4

    refused = post(f"{current}/v1/sessions/{mixed}/migrate", {"version": 2})
    moved = post(f"{current}/v1/sessions/{ours}/migrate", {"version": 2})

    assert refused.status_code == 409, refused.text
    assert "without keeping its inputs" in refused.json()["error"]
    assert moved.status_code == 200, moved.text
    after = [[0.1, -0.2, 0.3]]
    np.testing.assert_allclose(
        post(f"{current}/v1/sessions/{ours}/step", {"inputs": after}).json()["outputs"],
        post(f"{current}/v1/sessions/{reference}/step", {"inputs": after}).json()["outputs"],
        atol=1e-4)

    # an unkept step inside a full window: the steps after it restart the window, so the
    # session is refused until it holds W inputs again, then re-warmed from exactly those
    rng = np.random.default_rng(20)
    full, gap, later = (rng.standard_normal((n, 3)).round(4).tolist() for n in (WINDOW, 1,
                                                                                 WINDOW))
    for server, part in ((current, full), (previous, gap), (current, later[:2])):
        assert post(f"{server}/v1/sessions/{mixed}/step", {"inputs": part}).status_code == 200
    still = post(f"{current}/v1/sessions/{mixed}/migrate", {"version": 2})
    assert still.status_code == 409, still.text
    assert post(f"{current}/v1/sessions/{mixed}/step", {"inputs": later[2:]}
                ).status_code == 200
    fresh = post(f"{current}/v1/models/moving/sessions", {"version": 2}).json()["session_id"]
    assert post(f"{current}/v1/sessions/{fresh}/step", {"inputs": later}).status_code == 200
    again = post(f"{current}/v1/sessions/{mixed}/migrate", {"version": 2})
    assert again.status_code == 200, again.text
    assert again.json()["replayed_steps"] == WINDOW
    np.testing.assert_allclose(
        post(f"{current}/v1/sessions/{mixed}/step", {"inputs": after}).json()["outputs"],
        post(f"{current}/v1/sessions/{fresh}/step", {"inputs": after}).json()["outputs"],
        atol=1e-4)
