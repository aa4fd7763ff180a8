"""What only the Redis state store has, against a real redis-server: its key layout, one
round trip per batch, optimistic-concurrency conflicts, two replicas on one Redis (sharing
sessions, counting an expiry once, two engines stepping the same sessions), Redis going away.
The behaviour it shares with the memory store is in test_store_contract.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import SessionNotFound, Unavailable

from tests.state.conftest import (
    GRU,
    LSTM,
    NO_REDIS_PY,
    Events,
    MakeStore,
    assert_bytes_equal,
    no_ids,
    random_state,
    rec,
    step,
)
from tests.state.redis_server import RedisServer

redis = pytest.importorskip("redis", reason=NO_REDIS_PY)

from rnnserve.state.redis import RedisStateStore  # noqa: E402


async def test_key_layout(make_redis: MakeStore, redis_url: str) -> None:
    await make_redis(ttl_s=30)
    store = await make_redis(ttl_s=30)
    state = random_state(GRU, 1)
    await store.create(GRU, rec("k", GRU), state)
    client = redis.Redis.from_url(redis_url)
    try:
        fields = client.hgetall("rnnserve:s:k")
        assert fields[b"t:h0"] == state["h0"][:, 0, :].astype("<f4").tobytes()
        assert fields[b"model"] == b"gru" and fields[b"version"] == b"1"
        assert fields[b"steps"] == b"0" and fields[b"owner"] == b"alice"
        assert fields[b"layout"] == b'[["h0",3,8]]'
        assert 29_000 < client.pttl("rnnserve:s:k") <= 30_000
        assert client.pttl("rnnserve:k:k") > 86_400_000
        assert client.zscore("rnnserve:live:gru", "k") is not None
        assert client.zscore("rnnserve:owner:alice", "k") is not None
    finally:
        client.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts packets sent to Redis: one per command, or one per pipeline."""
    from redis.asyncio.connection import AbstractConnection

    sent = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


async def test_one_round_trip_per_batch(make_redis: MakeStore, round_trips: list[int]) -> None:
    store = await make_redis()
    ids = [f"s{i}" for i in range(64)]
    for sid in ids:
        await store.create(LSTM, rec(sid), None)
    await step(store, LSTM, ids[:1], random_state(LSTM, 0))  # scripts loaded by now

    round_trips[0] = 0
    gathered = await store.gather(LSTM, ids, [None] * len(ids))
    assert round_trips[0] == 1
    written = await store.scatter(gathered, random_state(LSTM, 1, batch=64), *no_ids([3] * 64))
    assert round_trips[0] == 2
    assert written.steps == [4] + [3] * 63
    assert (await store.get("s0")).steps == 4 and (await store.get("s63")).steps == 3


async def test_conflict_with_another_replica(make_redis: MakeStore) -> None:
    a, b = await make_redis(), await make_redis()
    await a.create(LSTM, rec("s"), None)
    await a.create(LSTM, rec("t"), None)
    gathered_a = await a.gather(LSTM, ["s", "t"], [None, None])
    theirs = random_state(LSTM, 7)
    written_b = await step(b, LSTM, ["s"], theirs, n=2)  # b steps s first
    assert written_b.steps[0] == 2

    mine = random_state(LSTM, 8, batch=2)
    written_a = await a.scatter(gathered_a, mine, *no_ids([1, 1]))
    assert written_a.conflict == [True, False]
    assert written_a.errors == [None, None] and written_a.steps[1] == 1
    record, state = await a.read("s")
    assert record.steps == 2
    assert_bytes_equal(state, theirs)  # not overwritten by the stale step

    # a reset by the other replica also wins over a step gathered before it
    gathered_a = await a.gather(LSTM, ["s"], [None])
    await b.reset("s", None)
    written_a = await a.scatter(gathered_a, random_state(LSTM, 9), *no_ids([1]))
    assert written_a.conflict == [True]
    record, state = await a.read("s")
    assert record.steps == 0
    assert_bytes_equal(state, LSTM.zeros(1))

    # run again with fresh state: goes through
    written_a = await step(a, LSTM, ["s"], random_state(LSTM, 10))
    assert written_a.conflict == [False] and written_a.steps[0] == 1


async def test_no_aba_after_delete_and_create(make_redis: MakeStore) -> None:
    store = await make_redis()
    await store.create(LSTM, rec("s"), None)
    gathered = await store.gather(LSTM, ["s"], [None])
    await store.delete("s")
    fresh = random_state(LSTM, 5)
    await store.create(LSTM, rec("s"), fresh)
    written = await store.scatter(gathered, random_state(LSTM, 6), *no_ids([1]))
    assert written.conflict == [True]
    assert_bytes_equal((await store.read("s"))[1], fresh)


async def test_two_replicas_share_sessions(make_redis: MakeStore) -> None:
    a_events: Events = []
    b_events: Events = []
    a = await make_redis(events=a_events)
    b = await make_redis(events=b_events)
    state = random_state(GRU, 1)
    await a.create(GRU, rec("shared", GRU), state)
    _, read = await b.read("shared")
    assert_bytes_equal(read, state)
    new = random_state(GRU, 2)
    await step(b, GRU, ["shared"], new, n=5)
    record, read = await a.read("shared")
    assert record.steps == 5
    assert_bytes_equal(read, new)
    assert await a.live_sessions() == await b.live_sessions() == {"gru": 1}
    assert await a.owned_sessions("alice") == await b.owned_sessions("alice") == 1
    with pytest.raises(Unavailable, match="taken"):
        await b.create(GRU, rec("shared", GRU), None)
    await b.delete("shared")
    with pytest.raises(SessionNotFound, match="unknown"):
        await a.get("shared")
    assert a_events == [("created", "gru", 0)] and b_events == [("deleted", "gru", 5)]


async def test_expiry_counted_once_across_replicas(make_redis: MakeStore) -> None:
    a_events: Events = []
    b_events: Events = []
    a = await make_redis(ttl_s=0.2, events=a_events)
    b = await make_redis(ttl_s=0.2, events=b_events)
    for i in range(5):
        await a.create(LSTM, rec(f"s{i}"), None)
    await asyncio.sleep(0.6)
    await a.live_sessions()
    await b.live_sessions()
    expired = [e for e in a_events + b_events if e[0] == "expired"]
    assert len(expired) == 5


async def test_client_sets_layout_and_sweep(make_redis: MakeStore, redis_url: str) -> None:
    """A counted session's address is in its hash and its client set; the sets of clients
    that never come back are dropped by the sweep (not kept forever, one per address); the
    count is shared by replicas, and concurrent creates cannot overshoot the cap."""
    from rnnserve.errors import SessionQuotaExceeded

    a = await make_redis(ttl_s=0.3, max_sessions_per_client=2, sweep_interval_s=0.05)
    b = await make_redis(ttl_s=0.3, max_sessions_per_client=2, sweep_interval_s=0.05)
    client = redis.Redis.from_url(redis_url)
    try:
        for i in range(5):
            record = rec(f"s{i}", owner="")
            record.client = f"10.0.0.{i}"
            await a.create(LSTM, record, None)
        assert client.hget("rnnserve:s:s1", "client") == b"10.0.0.1"
        assert client.zscore("rnnserve:client:10.0.0.1", "s1") is not None
        assert client.zcard("rnnserve:clients") == 5
        again = rec("t", owner="")
        again.client = "10.0.0.1"
        await b.create(LSTM, again, None)  # the other replica counts the same set
        again.id = "u"
        with pytest.raises(SessionQuotaExceeded):
            await a.create(LSTM, again, None)
        await asyncio.sleep(0.8)  # all expire; the sweeps look at every set that is due
        assert client.keys("rnnserve:client:*") == []
        assert client.zcard("rnnserve:clients") == 0

        async def one(i: int) -> bool:  # many creates at once, on both replicas
            record = rec(f"r{i}", owner="")
            record.client = "10.0.0.9"
            try:
                await (a, b)[i % 2].create(LSTM, record, None)
            except SessionQuotaExceeded:
                return False
            return True

        assert sum(await asyncio.gather(*(one(i) for i in range(20)))) == 2
        await asyncio.sleep(0.8)
        assert client.keys("rnnserve:client:*") == []
        assert client.zcard("rnnserve:clients") == 0
    finally:
        client.close()


async def test_redis_down_is_unavailable(make_redis: MakeStore, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "own")
    server.start()
    try:
        store = await make_redis(url=server.url)
        await store.create(LSTM, rec("s"), None)
        gathered = await store.gather(LSTM, ["s"], [None])
        server.stop()
        calls: list[Awaitable[Any]] = [
            store.get("s"), store.read("s"), store.reset("s", None), store.delete("s"),
            store.create(LSTM, rec("t"), None), store.gather(LSTM, ["s"], [None]),
            store.scatter(gathered, random_state(LSTM, 1), *no_ids([1])), store.live_sessions(),
            store.owned_sessions("alice")]
        for call in calls:
            with pytest.raises(Unavailable, match=r"Redis at redis://127\.0\.0\.1:\d+/0\) "
                                                  "is unreachable") as info:
                await call
            assert info.value.retry_after_s == 1
        fresh = RedisStateStore(server.url, ttl_s=60, max_sessions=10)
        with pytest.raises(Unavailable, match="cannot start the Redis state store"):
            await fresh.start()
        await fresh.close()

        server.start()  # back: the same store recovers without a restart
        await store.create(LSTM, rec("u"), None)
        assert (await store.get("u")).steps == 0
    finally:
        server.stop()


async def test_password_is_not_in_messages(redis_server: RedisServer) -> None:
    store = RedisStateStore("redis://user:s3cret@127.0.0.1:1/0", ttl_s=60, max_sessions=10)
    with pytest.raises(Unavailable) as info:
        await store.start()
    assert "s3cret" not in info.value.message
    await store.close()


async def test_two_engines_stepping_the_same_sessions_apply_every_step_once(
    redis_url: str, make_settings: Callable[..., Any],
) -> None:
    """Two replicas on one Redis step the same 24 sessions at once, five rounds each, through
    their StepCollectors (24-row jobs): rows that lose a race to the other replica are run
    again on its state, never lost, never applied twice."""
    from rnnserve.engine import Engine

    engines = []
    for _ in range(2):
        engine = Engine(make_settings(state_store=redis_url))
        engine.start()
        await engine.open()
        engines.append(engine)
    try:
        a, b = engines
        ids = [(await a.sessions.create("tiny-gru")).id for _ in range(24)]
        x = np.full((1, 3), 0.5, np.float32)

        async def rounds(engine: Engine) -> None:
            for _ in range(5):
                await asyncio.gather(*(engine.sessions.step(sid, x) for sid in ids))

        await asyncio.gather(rounds(a), rounds(b))
        whole, _ = await a.run_stateless(a.runner("tiny-gru"),
                                         np.full((1, 11, 3), 0.5, np.float32), None)
        for sid in ids:
            assert (await b.sessions.describe(sid)).steps == 10
            final = await a.sessions.step(sid, x)  # the 11th step continues from step 10
            np.testing.assert_allclose(final.outputs, whole[0, -1:], atol=1e-5)
    finally:
        for engine in engines:
            await engine.aclose()
            engine.close()


async def test_an_attach_reaches_other_replicas_and_fences_a_step_in_flight(
    make_redis: MakeStore,
) -> None:
    """Replica B's attach is heard by replica A over the channel, and A's step gathered before
    it conflicts at its scatter (so it is gathered again, under the new holder, and refused)."""
    a, b = await make_redis(ttl_s=30), await make_redis(ttl_s=30)
    heard: list[tuple[str, int]] = []
    a.watch_attachments(lambda sid, holder: heard.append((sid, holder)))
    await a.create(LSTM, rec("s"), None)
    in_flight = await a.gather(LSTM, ["s"], ["alice"], [0])
    assert (await b.attach("s", "alice")).holder == 1
    written = await a.scatter(in_flight, random_state(LSTM, 4), *no_ids([1]))
    assert written.conflict == [True] and (await a.get("s")).steps == 0
    again = await a.gather(LSTM, ["s"], ["alice"], [0])
    assert type(again.errors[0]).__name__ == "StreamReplaced"
    async with asyncio.timeout(2):
        while ("s", 1) not in heard:
            await asyncio.sleep(0.01)
