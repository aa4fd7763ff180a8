"""Every Redis write script carries a write id of its own, stored with what it wrote, so a
script resent after a lost reply whose first run landed answers as that run did: a step counts
as written once (never a conflict that would run it again), a create is not "taken", a delete
is not "unknown", an attach is not a second takeover. That makes the store's one retry on a
fresh connection safe: after a Redis restart the first request on each pooled connection
succeeds instead of failing with "connection closed by server"."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rnnserve.state.base import StateStore

from tests.conftest import ServerProcess
from tests.state.conftest import LSTM, MakeStore, no_ids, random_state, rec
from tests.state.redis_server import REDIS_SERVER, RedisServer

pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (apt-get)")

WRITE_ID = "0123456789abcdef0123456789abcdef"


def fixed_write_id(monkeypatch: pytest.MonkeyPatch, write_id: str = WRITE_ID) -> None:
    """Every script call of the store gets this write id: a second call is then exactly what
    a resend of the first after a lost reply looks like to Redis."""
    for module in ("redis", "redis_create", "redis_scatter", "redis_attach"):
        monkeypatch.setattr(f"rnnserve.state.{module}.write_id", lambda: write_id)


async def test_a_resent_scatter_lands_once(make_redis: MakeStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = await make_redis()
    await store.create(LSTM, rec("s1"), None)
    gathered = await store.gather(LSTM, ["s1"], [None])
    new = random_state(LSTM, 1)
    fixed_write_id(monkeypatch)
    statuses: list[str] = []
    writer: Any = store._writer  # type: ignore[attr-defined]
    run = writer.run

    async def recording_run(keys: list[str], args: list[Any]) -> Any:
        out, acked = await run(keys, args)
        statuses.append(out[1].decode())
        return out, acked

    monkeypatch.setattr(writer, "run", recording_run)
    first = await store.scatter(gathered, new, *no_ids([3]))
    again = await store.scatter(gathered, new, *no_ids([3]))  # the reply of `first` was lost
    assert statuses == ["ok", "landed"]
    assert (first.steps, first.conflict, first.errors) == ([3], [False], [None])
    assert (again.steps, again.conflict, again.errors) == ([3], [False], [None])
    record, _ = await store.read("s1")
    assert record.steps == 3  # applied once

    monkeypatch.setattr("rnnserve.state.redis_scatter.write_id", lambda: "another call")
    other = await store.scatter(gathered, new, *no_ids([3]))
    assert other.conflict == [True]  # a different call with a stale gen still conflicts


async def test_resent_session_writes_answer_as_their_first_run(
    make_redis: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: Any = await make_redis()
    fixed_write_id(monkeypatch, "create")
    made = await store.create(LSTM, rec("s1"), None)
    assert (await store.create(LSTM, rec("s1"), None)).id == made.id  # not "taken"
    fixed_write_id(monkeypatch, "attach")
    attached = await store.attach("s1", "alice")
    assert (await store.attach("s1", "alice")).holder == attached.holder == 1
    fixed_write_id(monkeypatch, "reset")
    await store.reset("s1", random_state(LSTM, 2))
    assert (await store.reset("s1", random_state(LSTM, 2))).steps == 0
    fixed_write_id(monkeypatch, "delete")
    await store.delete("s1")
    await store.delete("s1")  # answered from the delete's receipt, not "unknown"
    assert (await store.live_sessions()).get("lstm", 0) == 0


async def test_a_delete_without_its_receipt_is_still_unknown(make_redis: MakeStore) -> None:
    from rnnserve.errors import UnknownSession

    store: StateStore = await make_redis()
    await store.create(LSTM, rec("s1"), None)
    await store.delete("s1")
    with pytest.raises(UnknownSession):
        await store.delete("s1")  # another call: its write id has no receipt


def test_the_first_steps_after_a_redis_restart_succeed(
    redis: RedisServer, tiny_repo: Path, tmp_path: Path
) -> None:
    """Every pooled connection is closed by the restart; each step that meets one is sent
    again on a fresh connection, inside the store, and applied once."""
    server = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url],
                           tmp_path / "server.log")
    try:
        server.wait_ready()
        sids = [httpx.post(f"{server.url}/v1/models/tiny-gru/sessions").json()["session_id"]
                for _ in range(8)]

        async def step_all(t: int) -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=10) as http:
                return await asyncio.gather(*(
                    http.post(f"{server.url}/v1/sessions/{sid}/step",
                              json={"inputs": [[0.1 * t, 0.2, -0.3]], "step_id": f"{sid}:{t}"})
                    for sid in sids))

        for t in range(3):  # concurrent steps: the pool holds several connections
            assert all(r.status_code == 200 for r in asyncio.run(step_all(t)))
        redis.stop()
        redis.start()
        replies = asyncio.run(step_all(3))
        assert [r.status_code for r in replies] == [200] * len(sids), [r.text for r in replies]
        assert {r.json()["steps"] for r in replies} == {4}
    finally:
        server.stop()


def test_whole_outputs_match_predict_after_the_restart(
    redis: RedisServer, tiny_repo: Path, tmp_path: Path
) -> None:
    """The retried steps are the real ones: joined outputs equal a stateless predict."""
    server = ServerProcess(["--models", str(tiny_repo), "--state-store", redis.url],
                           tmp_path / "server.log")
    seq = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    try:
        server.wait_ready()
        sid = httpx.post(f"{server.url}/v1/models/tiny-lstm/sessions").json()["session_id"]
        outputs: list[list[float]] = []
        for t in range(4):
            if t == 2:
                redis.stop()
                redis.start()
            r = httpx.post(f"{server.url}/v1/sessions/{sid}/step",
                           json={"inputs": seq[t:t + 1].tolist(), "step_id": str(t)})
            assert r.status_code == 200, r.text
            outputs.extend(r.json()["outputs"])
        want = httpx.post(f"{server.url}/v1/models/tiny-lstm/predict",
                          json={"inputs": [seq.tolist()]}).json()["outputs"][0]
        np.testing.assert_allclose(outputs, want, atol=1e-5)
    finally:
        server.stop()
