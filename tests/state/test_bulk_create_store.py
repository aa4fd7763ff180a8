"""The stores' bulk create (`create_many`), against the memory store and a real redis-server
in both record formats: every session is created with its exact state (zeros where none is
given) and its `created` event; an id already taken, the per-address cap and the store's cap
refuse only the items past them, leaving the rest (and the session already there) as they
were; a Redis call resent after a lost reply (the same write id) creates nothing twice; and
more sessions than one script call takes go through in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from rnnserve.errors import SessionQuotaExceeded, Unavailable
from rnnserve.state.base import SessionRecord, StateStore
from rnnserve.state.memory import MemoryStateStore

from tests.state.conftest import (
    LSTM,
    NO_REDIS_PY,
    Events,
    assert_bytes_equal,
    random_state,
    rec,
    recorder,
)


@pytest.fixture
def events() -> Events:
    return []


@pytest.fixture(params=["memory", "redis", "redis-format2"])
async def store(request: pytest.FixtureRequest, events: Events) -> AsyncIterator[StateStore]:
    """As test_store_contract's `store`: max_sessions 8, 3 sessions per client address."""
    options: dict[str, Any] = {"ttl_s": 60, "max_sessions": 8, "max_sessions_per_client": 3}
    made: StateStore
    if request.param.startswith("redis"):
        pytest.importorskip("redis", reason=NO_REDIS_PY)
        from rnnserve.state.redis import RedisStateStore

        made = RedisStateStore(request.getfixturevalue("redis_url"), **options,
                               on_event=recorder(events),
                               record_format=2 if request.param == "redis-format2" else 1)
    else:
        made = MemoryStateStore(**options, on_event=recorder(events))
    await made.start()
    yield made
    await made.close()


def recs(*ids: str, client: str = "") -> list[SessionRecord]:
    made = [rec(i) for i in ids]
    for r in made:
        r.client = client
    return made


async def test_each_session_is_created_with_its_state(store: StateStore,
                                                      events: Events) -> None:
    given = random_state(LSTM, 7)
    out = await store.create_many(LSTM, recs("a", "b", "c"), [None, given, None])
    assert [getattr(o, "id", None) for o in out] == ["a", "b", "c"]
    _, read_b = await store.read("b")
    assert_bytes_equal(read_b, given)
    for sid in ("a", "c"):
        record, read = await store.read(sid)
        assert (record.model, record.version, record.steps, record.owner) == (
            "lstm", 1, 0, "alice")
        assert_bytes_equal(read, LSTM.zeros(1))
    assert events == [("created", "lstm", 0)] * 3
    assert await store.live_sessions() == {"lstm": 3}
    assert await store.owned_sessions("alice") == 3


async def test_a_taken_id_fails_alone_and_keeps_its_session(store: StateStore) -> None:
    first = random_state(LSTM, 1)
    await store.create(LSTM, rec("x"), first)
    out = await store.create_many(LSTM, recs("y", "x", "z"), [None, None, None])
    assert isinstance(out[1], Unavailable) and "taken" in out[1].message
    assert [o.id for o in (out[0], out[2]) if isinstance(o, SessionRecord)] == ["y", "z"]
    _, read = await store.read("x")
    assert_bytes_equal(read, first)


async def test_the_caps_refuse_only_the_items_past_them(store: StateStore) -> None:
    out = await store.create_many(LSTM, recs("c1", "c2", "c3", "c4", client="10.0.0.1"),
                                  [None] * 4)
    assert [isinstance(o, SessionRecord) for o in out] == [True, True, True, False]
    assert isinstance(out[3], SessionQuotaExceeded) and "10.0.0.1" in out[3].message
    assert await store.client_sessions("10.0.0.1") == 3
    out = await store.create_many(LSTM, recs(*(f"s{i}" for i in range(7))), [None] * 7)
    assert [isinstance(o, SessionRecord) for o in out] == [True] * 5 + [False] * 2
    assert isinstance(out[6], Unavailable) and "maximum of 8" in out[6].message
    assert await store.live_sessions() == {"lstm": 8}


async def test_more_than_one_chunk(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rnnserve.state.redis_bulk.CHUNK", 3, raising=False)
    states = [random_state(LSTM, i) if i % 2 else None for i in range(8)]
    out = await store.create_many(LSTM, recs(*(f"k{i}" for i in range(8))), states)
    assert all(isinstance(o, SessionRecord) for o in out)
    for i, state in enumerate(states):
        _, read = await store.read(f"k{i}")
        assert_bytes_equal(read, LSTM.zeros(1) if state is None else state)


async def test_a_resent_redis_call_creates_nothing_twice(
        store: StateStore, events: Events, monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(store, MemoryStateStore):
        pytest.skip("the memory store has no round trip to lose")
    monkeypatch.setattr("rnnserve.state.redis_bulk.write_id", lambda: "the same call")
    records = recs("r1", "r2", client="10.0.0.2")
    first = await store.create_many(LSTM, records, [None, None])
    again = await store.create_many(LSTM, records, [None, None])  # first's reply was lost
    assert all(isinstance(o, SessionRecord) for o in first + again)
    assert await store.live_sessions() == {"lstm": 2}
    assert await store.owned_sessions("alice") == 2
    assert await store.client_sessions("10.0.0.2") == 2
    monkeypatch.setattr("rnnserve.state.redis_bulk.write_id", lambda: "another call")
    taken = await store.create_many(LSTM, records[:1], [None])
    assert isinstance(taken[0], Unavailable) and "taken" in taken[0].message


async def test_a_redis_failure_after_a_chunk_landed_is_answered_per_item(
        store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis gone between two chunks (a fault caused by a stand-in: the second script call
    fails): the first chunk's sessions exist and are answered as made, the rest as failed,
    rather than the whole call failing with sessions left behind unanswered."""
    if isinstance(store, MemoryStateStore):
        pytest.skip("the memory store has no chunks")
    monkeypatch.setattr("rnnserve.state.redis_bulk.CHUNK", 2)
    bulk: Any = store._bulk  # type: ignore[attr-defined]
    real = bulk._chunk
    calls: list[int] = []

    async def second_fails(*args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise Unavailable("the state store cannot be reached")
        return await real(*args)

    monkeypatch.setattr(bulk, "_chunk", second_fails)
    out = await store.create_many(LSTM, recs("f1", "f2", "f3", "f4"), [None] * 4)
    assert [isinstance(o, SessionRecord) for o in out] == [True, True, False, False]
    assert isinstance(out[2], Unavailable)
    assert (await store.get("f2")).id == "f2"
    calls.clear()
    calls.append(1)  # the next call is the "second": it fails before anything is written
    with pytest.raises(Unavailable):
        await store.create_many(LSTM, recs("g1"), [None])


async def test_a_full_lru_memory_store_evicts_one_per_session_past_its_room(
        events: Events) -> None:
    store = MemoryStateStore(ttl_s=60, max_sessions=3, when_full="lru",
                             on_event=recorder(events))
    for sid in ("old1", "old2"):
        await store.create(LSTM, rec(sid), None)
    out = await store.create_many(LSTM, recs("n1", "n2", "n3"), [None] * 3)
    assert all(isinstance(o, SessionRecord) for o in out)
    assert await store.live_sessions() == {"lstm": 3}
    assert [e[0] for e in events].count("evicted") == 2
    for sid in ("n1", "n2", "n3"):
        assert (await store.get(sid)).id == sid
