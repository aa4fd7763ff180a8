"""The Redis state store against a real redis-server, and the behaviour it shares with the
memory store (the same tests run on both): exact float32 round trips, batched gather/scatter,
expired vs unknown, the session cap, events; then what only Redis has: one round trip per
batch, optimistic-concurrency conflicts, two replicas on one Redis, Redis going away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import InvalidInput, SessionNotFound, Unavailable
from rnnserve.state.base import SessionRecord, StateLayout, StateStore
from rnnserve.state.memory import MemoryStateStore

from tests.service.redis_server import REDIS_SERVER, RedisServer

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install .[redis])")

from rnnserve.state.redis import RedisStateStore  # noqa: E402

LSTM = StateLayout("lstm", 1, (("h0", 2, 16), ("c0", 2, 16)))
LSTM2 = StateLayout("lstm", 2, (("h0", 2, 16), ("c0", 2, 16)))
GRU = StateLayout("gru", 1, (("h0", 3, 8),))

Events = list[tuple[str, str, int]]
MakeStore = Callable[..., Awaitable[StateStore]]


# -- fixtures ------------------------------------------------------------------------------


def no_ids(steps: list[int]) -> tuple[list[int], np.ndarray, list[str | None]]:
    """scatter's per-row steps, outputs and step ids for rows without a step id."""
    return steps, np.zeros((len(steps), 1, 1), np.float32), [None] * len(steps)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the module; without the binary only the Redis tests skip."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server): the Redis "
                    "state store tests need a real one")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def open_stores() -> AsyncIterator[list[StateStore]]:
    stores: list[StateStore] = []
    yield stores
    for store in stores:
        try:
            await store.close()
        except Exception:  # a test may have stopped its Redis
            pass


@pytest.fixture
def make_redis(redis_url: str, open_stores: list[StateStore]) -> MakeStore:
    async def make(ttl_s: float = 60, max_sessions: int = 1000,
                   events: Events | None = None, url: str | None = None) -> StateStore:
        store = RedisStateStore(url or redis_url, ttl_s=ttl_s, max_sessions=max_sessions,
                                on_event=_recorder(events))
        await store.start()
        open_stores.append(store)
        return store
    return make


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest, open_stores: list[StateStore]) -> MakeStore:
    """A store factory for each backend: the shared semantics must hold on both."""
    if request.param == "redis":
        return request.getfixturevalue("make_redis")  # type: ignore[no-any-return]

    async def make(ttl_s: float = 60, max_sessions: int = 1000,
                   events: Events | None = None) -> StateStore:
        store = MemoryStateStore(ttl_s=ttl_s, max_sessions=max_sessions,
                                 on_event=_recorder(events))
        await store.start()
        open_stores.append(store)
        return store
    return make


def _recorder(events: Events | None) -> Callable[[str, str, int], None]:
    def record(event: str, model: str, steps: int) -> None:
        if events is not None:
            events.append((event, model, steps))
    return record


# -- helpers -------------------------------------------------------------------------------


def rec(session_id: str, layout: StateLayout = LSTM, owner: str = "alice") -> SessionRecord:
    now = time.time()
    return SessionRecord(id=session_id, model=layout.model, version=layout.version,
                         created=now, last_used=now, ttl_s=0, owner=owner)


def random_state(layout: StateLayout, seed: int, batch: int = 1) -> dict[str, np.ndarray]:
    """Values whose float32 bytes must survive exactly: subnormals, -0.0, huge, tiny."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, layers, hidden in layout.tensors:
        arr = rng.standard_normal((layers, batch, hidden)).astype(np.float32)
        arr.flat[0], arr.flat[1], arr.flat[2] = -0.0, np.float32(1e-45), np.float32(3.4e38)
        out[name] = arr
    return out


def assert_bytes_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert a[name].dtype == np.float32
        assert a[name].tobytes() == b[name].astype(np.float32).tobytes(), name


async def step(store: StateStore, layout: StateLayout, ids: list[str],
               new: dict[str, np.ndarray], n: int = 1) -> Any:
    gathered = await store.gather(layout, ids, [None] * len(ids))
    return await store.scatter(gathered, new, *no_ids([n] * len(ids)))


# -- shared semantics (memory and redis) ---------------------------------------------------


async def test_create_get_read_exact_bytes(make_store: MakeStore) -> None:
    store = await make_store()
    state = random_state(LSTM, 1)
    made = await store.create(LSTM, rec("s1"), state)
    assert (made.id, made.model, made.version, made.steps, made.owner) == (
        "s1", "lstm", 1, 0, "alice")
    got = await store.get("s1")
    assert (got.model, got.version, got.steps, got.owner) == ("lstm", 1, 0, "alice")
    assert got.ttl_s == 60
    record, read = await store.read("s1")
    assert record.id == "s1"
    assert_bytes_equal(read, state)
    assert read["h0"].shape == (2, 1, 16)


async def test_create_without_state_is_zeros(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create(GRU, rec("g", GRU), None)
    _, read = await store.read("g")
    assert_bytes_equal(read, GRU.zeros(1))


async def test_taken_id_and_replace(make_store: MakeStore) -> None:
    events: Events = []
    store = await make_store(events=events)
    await store.create(LSTM, rec("s"), random_state(LSTM, 1))
    await step(store, LSTM, ["s"], random_state(LSTM, 2), n=5)
    with pytest.raises(Unavailable, match="taken"):
        await store.create(LSTM, rec("s"), None)
    new = random_state(LSTM, 3)
    made = await store.create(LSTM, rec("s"), new, replace=True)
    assert made.steps == 0
    record, read = await store.read("s")
    assert record.steps == 0
    assert_bytes_equal(read, new)
    assert events == [("created", "lstm", 0), ("deleted", "lstm", 5), ("created", "lstm", 0)]


async def test_reset(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create(LSTM, rec("s"), random_state(LSTM, 1))
    await step(store, LSTM, ["s"], random_state(LSTM, 2), n=3)
    assert (await store.get("s")).steps == 3
    again = random_state(LSTM, 4)
    record = await store.reset("s", again)
    assert record.steps == 0
    got, read = await store.read("s")
    assert got.steps == 0
    assert_bytes_equal(read, again)
    await store.reset("s", None)
    assert_bytes_equal((await store.read("s"))[1], LSTM.zeros(1))
    with pytest.raises(SessionNotFound, match="unknown session 'nope'"):
        await store.reset("nope", None)


async def test_delete(make_store: MakeStore) -> None:
    events: Events = []
    store = await make_store(events=events)
    await store.create(LSTM, rec("s"), None)
    await step(store, LSTM, ["s"], random_state(LSTM, 1), n=7)
    await store.delete("s")
    assert events[-1] == ("deleted", "lstm", 7)
    for call in (store.get("s"), store.read("s"), store.delete("s")):
        with pytest.raises(SessionNotFound, match="unknown session 's'"):
            await call
    gathered = await store.gather(LSTM, ["s"], [None])
    assert isinstance(gathered.errors[0], SessionNotFound)


async def test_gather_scatter_many(make_store: MakeStore) -> None:
    store = await make_store()
    ids = [f"s{i}" for i in range(40)]
    initial = random_state(LSTM, 1, batch=len(ids))
    for i, sid in enumerate(ids):
        await store.create(LSTM, rec(sid), {n: a[:, i:i + 1] for n, a in initial.items()})
    gathered = await store.gather(LSTM, ids, [None] * len(ids))
    assert gathered.errors == [None] * len(ids)
    assert_bytes_equal(gathered.states, initial)
    assert gathered.states["h0"].shape == (2, 40, 16)

    new = random_state(LSTM, 2, batch=len(ids))
    steps = list(range(1, len(ids) + 1))
    written = await store.scatter(gathered, new, *no_ids(steps))
    assert not any(written.conflict) and written.errors == [None] * len(ids)
    assert written.steps == steps
    for i, sid in enumerate(ids):
        record, read = await store.read(sid)
        assert record.steps == steps[i]
        assert_bytes_equal(read, {n: a[:, i:i + 1] for n, a in new.items()})

    again = await store.gather(LSTM, ids, [None] * len(ids))
    assert_bytes_equal(again.states, new)
    written = await store.scatter(again, random_state(LSTM, 3, batch=len(ids)),
                                  *no_ids([2] * len(ids)))
    assert written.steps == [s + 2 for s in steps]


async def test_gather_rows_with_errors(make_store: MakeStore) -> None:
    store = await make_store()
    good = random_state(LSTM, 1)
    await store.create(LSTM, rec("good"), good)
    await store.create(LSTM2, rec("other-version", LSTM2), None)
    await store.create(GRU, rec("other-model", GRU), None)
    ids = ["good", "unknown", "other-version", "other-model"]
    gathered = await store.gather(LSTM, ids, [None] * len(ids))
    assert gathered.errors[0] is None
    assert "unknown session 'unknown'" in str(gathered.errors[1])
    assert "another model or version" in str(gathered.errors[2])
    assert "another model or version" in str(gathered.errors[3])
    assert_bytes_equal({n: a[:, :1] for n, a in gathered.states.items()}, good)
    if store.name == "redis":  # base.Gathered says error rows are zeros; memory fills slot 0
        for name in gathered.states:
            assert not gathered.states[name][:, 1:].any()

    new = random_state(LSTM, 2, batch=4)
    written = await store.scatter(gathered, new, *no_ids([1] * 4))
    assert written.steps[0] == 1 and written.errors[0] is None
    assert all(e is not None for e in written.errors[1:])
    assert all(isinstance(e, SessionNotFound) for e in written.errors[1:])
    assert (await store.get("other-version")).steps == 0
    assert_bytes_equal((await store.read("other-version"))[1], LSTM2.zeros(1))


async def test_expired_vs_unknown(make_store: MakeStore) -> None:
    store = await make_store(ttl_s=0.3)
    await store.create(LSTM, rec("old"), None)
    await asyncio.sleep(0.5)
    with pytest.raises(SessionNotFound, match=r"session 'old' expired after 0.3 s idle; "
                                              "create a new one"):
        await store.get("old")
    with pytest.raises(SessionNotFound, match=r"unknown session 'never': create one with "
                                              r"POST /v1/models/\{model\}/sessions"):
        await store.get("never")
    gathered = await store.gather(LSTM, ["old"], [None])
    assert "expired after 0.3 s idle" in str(gathered.errors[0])
    await store.create(LSTM, rec("old"), None)  # the id can be taken again
    assert (await store.get("old")).steps == 0


async def test_steps_refresh_the_idle_timeout(make_store: MakeStore) -> None:
    store = await make_store(ttl_s=0.6)
    await store.create(LSTM, rec("s"), None)
    for _ in range(4):  # 1.2 s in all, never 0.6 s idle
        await asyncio.sleep(0.3)
        written = await step(store, LSTM, ["s"], random_state(LSTM, 1))
        assert written.errors == [None]
    record = await store.get("s")
    assert record.steps == 4
    assert record.expires_at == pytest.approx(record.last_used + 0.6)
    await asyncio.sleep(0.9)
    with pytest.raises(SessionNotFound, match="expired"):
        await store.get("s")


async def test_step_on_session_deleted_meanwhile(make_store: MakeStore) -> None:
    store = await make_store()
    await store.create(LSTM, rec("s"), None)
    gathered = await store.gather(LSTM, ["s"], [None])
    await store.delete("s")
    written = await store.scatter(gathered, random_state(LSTM, 1), *no_ids([1]))
    assert written.errors[0] is not None
    assert isinstance(written.errors[0], SessionNotFound)
    assert written.conflict == [False]
    with pytest.raises(SessionNotFound, match="unknown"):
        await store.get("s")


async def test_max_sessions(make_store: MakeStore) -> None:
    store = await make_store(ttl_s=0.3, max_sessions=3)
    for i in range(3):
        await store.create(LSTM, rec(f"s{i}"), None)
    with pytest.raises(Unavailable, match="maximum of 3 live sessions") as info:
        await store.create(GRU, rec("more", GRU), None)
    assert info.value.retry_after_s == 5
    await store.delete("s0")
    await store.create(GRU, rec("more", GRU), None)
    await asyncio.sleep(0.5)  # all expire: room again
    for i in range(3):
        await store.create(LSTM, rec(f"t{i}"), None)


async def test_live_sessions_and_events(make_store: MakeStore) -> None:
    events: Events = []
    store = await make_store(ttl_s=0.3, events=events)
    await store.create(LSTM, rec("a"), None)
    await store.create(LSTM, rec("b"), None)
    await store.create(GRU, rec("c", GRU), None)
    assert await store.live_sessions() == {"lstm": 2, "gru": 1}
    await step(store, LSTM, ["a"], random_state(LSTM, 1), n=4)
    await store.delete("b")
    assert await store.live_sessions() == {"lstm": 1, "gru": 1}
    await asyncio.sleep(0.6)  # a and c expire; the store notices within its sweep interval
    counts = await store.live_sessions()
    assert sum(counts.values()) == 0
    assert sorted(events) == sorted([
        ("created", "lstm", 0), ("created", "lstm", 0), ("created", "gru", 0),
        ("deleted", "lstm", 0), ("expired", "lstm", 4), ("expired", "gru", 0)])


async def test_owned_sessions(make_store: MakeStore) -> None:
    store = await make_store(ttl_s=0.4)
    await store.create(LSTM, rec("a1", owner="alice"), None)
    await store.create(GRU, rec("a2", GRU, owner="alice"), None)
    await store.create(LSTM, rec("b1", owner="bob"), None)
    assert [await store.owned_sessions(o) for o in ("alice", "bob", "carol")] == [2, 1, 0]
    await store.delete("a1")
    await store.create(LSTM, rec("b1", owner="alice"), None, replace=True)  # now alice's
    await step(store, LSTM, ["b1"], random_state(LSTM, 1))
    await store.reset("a2", None)
    assert [await store.owned_sessions(o) for o in ("alice", "bob")] == [2, 0]
    await asyncio.sleep(0.6)
    assert await store.owned_sessions("alice") == 0


async def test_bad_state_shape(make_store: MakeStore) -> None:
    store = await make_store()
    with pytest.raises((InvalidInput, ValueError)):
        await store.create(LSTM, rec("s"), {"h0": np.zeros((2, 1, 15), np.float32)})


# -- Redis only ----------------------------------------------------------------------------


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
