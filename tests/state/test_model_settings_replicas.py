"""Per-model `session_ttl_s` and `max_sessions` (model.json) honoured by two real server
processes sharing one real Redis (issue 19, item 1): every replica gives a model's sessions
its timeout and expires them by it, and a model version's cap is one count across replicas,
for single and bulk creates racing on both. The memory store's side is
tests/http/test_model_settings.py; the store-level part is test_version_settings.py."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerProcess, serving_replicas
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

WIDTH = 3  # the tiny models' input width
CAP = 6  # tiny-rnn's max_sessions
STEP = {"inputs": [[0.1] * WIDTH]}


@pytest.fixture
def replicas(redis: RedisServer, tiny_repo: Path, tmp_path: Path
             ) -> Iterator[list[ServerProcess]]:
    """Two replicas on one Redis; the flag's timeout 600 s; tiny-gru's own 1 s, tiny-rnn's
    own cap."""
    repo = tmp_path / "repo"
    for name in ("tiny-gru", "tiny-rnn", "tiny-lstm"):
        shutil.copytree(tiny_repo / name, repo / name)
    (repo / "tiny-gru" / "model.json").write_text(json.dumps({"session_ttl_s": 1.0}))
    (repo / "tiny-rnn" / "model.json").write_text(json.dumps({"max_sessions": CAP}))
    with serving_replicas(["--models", str(repo), "--state-store", redis.url,
                           "--session-ttl-s", "600", "--max-sessions-per-client", "0"],
                          tmp_path, 2) as procs:
        yield procs


def lifetime(session: dict[str, Any]) -> float:
    """A session's idle timeout as its description says it: expires_at - last_used."""
    def at(key: str) -> float:
        return datetime.fromisoformat(session[key]).timestamp()
    return round(at("expires_at") - at("last_used"), 3)


def test_every_replica_gives_a_models_sessions_its_own_timeout(
        replicas: list[ServerProcess]) -> None:
    a, b = (r.url for r in replicas)
    made = httpx.post(f"{a}/v1/models/tiny-gru/sessions", timeout=10)
    assert made.status_code == 201, made.text
    short = made.json()["session_id"]
    assert lifetime(made.json()) == 1.0
    seen = httpx.get(f"{b}/v1/sessions/{short}", timeout=10)
    assert seen.status_code == 200 and lifetime(seen.json()) == 1.0
    stepped = httpx.post(f"{b}/v1/sessions/{short}/step", json=STEP, timeout=10)
    assert stepped.status_code == 200, stepped.text
    long = httpx.post(f"{b}/v1/models/tiny-lstm/sessions", timeout=10).json()
    assert lifetime(long) == 600  # the flag
    time.sleep(1.6)  # past tiny-gru's 1 s since its step, far inside 600 s
    for url in (a, b):
        gone = httpx.post(f"{url}/v1/sessions/{short}/step", json=STEP, timeout=10)
        assert gone.status_code == 404, gone.text
        assert "expired after 1 s" in gone.text
    kept = httpx.post(f"{a}/v1/sessions/{long['session_id']}/step", json=STEP, timeout=10)
    assert kept.status_code == 200, kept.text


async def race(urls: list[str], singles: int) -> tuple[list[httpx.Response], httpx.Response]:
    """`singles` single creates of tiny-rnn alternating between the replicas, and one bulk
    create of 3 on the second, all at once."""
    async with httpx.AsyncClient(timeout=20) as http:
        calls = [http.post(f"{urls[i % 2]}/v1/models/tiny-rnn/sessions")
                 for i in range(singles)]
        calls.append(http.post(f"{urls[1]}/v1/models/tiny-rnn/sessions",
                               json={"sessions": [{}, {}, {}]}))
        *single, bulk = await asyncio.gather(*calls)
    return single, bulk


def test_a_models_cap_is_one_count_across_replicas(replicas: list[ServerProcess]) -> None:
    urls = [r.url for r in replicas]
    single, bulk = asyncio.run(race(urls, 8))
    assert bulk.status_code == 200, bulk.text
    items = bulk.json()["results"]
    made = ([r.json()["session_id"] for r in single if r.status_code == 201]
            + [x["session_id"] for x in items if "session_id" in x])
    refused = ([r.json()["error"] for r in single if r.status_code != 201]
               + [x["error"] for x in items if "session_id" not in x])
    assert len(made) == CAP and len(refused) == 8 + 3 - CAP
    assert {r.status_code for r in single} <= {201, 503}
    assert all("'tiny-rnn' version 1 holds its maximum of 6 live sessions (max_sessions in "
               "its model.json)" in error for error in refused), refused
    for url in urls:  # each replica sees the one count; the other models are not held
        listing = httpx.get(f"{url}/v1/models", timeout=10).json()
        assert listing["live_sessions"]["tiny-rnn"] == CAP
        assert listing["sessions_per_version"]["tiny-rnn"] == {"1": CAP}
        assert httpx.post(f"{url}/v1/models/tiny-gru/sessions", timeout=10).status_code == 201
    assert httpx.delete(f"{urls[0]}/v1/sessions/{made[0]}", timeout=10).status_code == 204
    again = httpx.post(f"{urls[1]}/v1/models/tiny-rnn/sessions",
                       json={"sessions": [{}, {}]}, timeout=10).json()["results"]
    assert ["session_id" in x for x in again] == [True, False]
