"""The state store contract: what every store must do alike, run against the memory store
(the default; never skipped) and the Redis store on a real redis-server (skipped only without
redis-py or the redis-server binary): exact float32 round trips, create/get/read/reset/delete,
batched gather/scatter and step counts, owner checks, step-id replay, expired vs unknown,
the session cap, live, owned and per-client-address session counts and the per-address cap,
events. What only Redis has is in
test_state_redis.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import InvalidInput, SessionNotFound, SessionQuotaExceeded, Unavailable
from rnnserve.state.base import SessionRecord, StateLayout, StateStore
from rnnserve.state.memory import MemoryStateStore

from tests.state.conftest import (
    GRU,
    LSTM,
    LSTM2,
    NO_REDIS_PY,
    Events,
    assert_bytes_equal,
    no_ids,
    random_state,
    rec,
    recorder,
    step,
)


@pytest.fixture
def events() -> Events:
    """What `store` reports: (event, model, steps), in order."""
    return []


@pytest.fixture(params=["memory", "redis", "redis-format2"])
async def store(request: pytest.FixtureRequest, events: Events) -> AsyncIterator[StateStore]:
    """A started store of each kind: ttl_s 60 and max_sessions 1000 unless the test's
    `@pytest.mark.store(...)` says otherwise. Redis twice: writing record format 1 (the
    default) and 2. The Redis ones skip without redis-py or redis-server (and only they)."""
    marker = request.node.get_closest_marker("store")
    options: dict[str, Any] = {"ttl_s": 60, "max_sessions": 1000}
    options.update(marker.kwargs if marker else {})
    made: StateStore
    if request.param.startswith("redis"):
        pytest.importorskip("redis", reason=NO_REDIS_PY)
        from rnnserve.state.redis import RedisStateStore

        url = request.getfixturevalue("redis_url")
        record_format = 2 if request.param == "redis-format2" else 1
        made = RedisStateStore(url, **options, on_event=recorder(events),
                               record_format=record_format)
    else:
        made = MemoryStateStore(**options, on_event=recorder(events))
    await made.start()
    yield made
    await made.close()


async def test_create_get_read_exact_bytes(store: StateStore) -> None:
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


async def test_create_without_state_is_zeros(store: StateStore) -> None:
    await store.create(GRU, rec("g", GRU), None)
    _, read = await store.read("g")
    assert_bytes_equal(read, GRU.zeros(1))


async def test_taken_id_and_replace(store: StateStore, events: Events) -> None:
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


async def test_reset(store: StateStore) -> None:
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


async def test_delete(store: StateStore, events: Events) -> None:
    await store.create(LSTM, rec("s"), None)
    await step(store, LSTM, ["s"], random_state(LSTM, 1), n=7)
    await store.delete("s")
    assert events[-1] == ("deleted", "lstm", 7)
    for call in (store.get("s"), store.read("s"), store.delete("s")):
        with pytest.raises(SessionNotFound, match="unknown session 's'"):
            await call
    gathered = await store.gather(LSTM, ["s"], [None])
    assert isinstance(gathered.errors[0], SessionNotFound)


async def test_gather_scatter_many(store: StateStore) -> None:
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


@pytest.mark.parametrize("order", ["created", "reversed", "shuffled", "every other"])
async def test_gather_scatter_in_any_order(store: StateStore, order: str) -> None:
    """A batch of sessions in the order they were created is one block of the memory
    store's slab (copied as a slice); any other order, or a gap, is copied row by row. Both
    must move exactly each session's own bytes."""
    ids = [f"s{i}" for i in range(24)]
    initial = random_state(LSTM, 4, batch=len(ids))
    for i, sid in enumerate(ids):
        await store.create(LSTM, rec(sid), {n: a[:, i:i + 1] for n, a in initial.items()})
    picked = {"created": list(range(24)), "reversed": list(range(23, -1, -1)),
              "shuffled": np.random.default_rng(5).permutation(24).tolist(),
              "every other": list(range(0, 24, 2))}[order]
    batch = [ids[i] for i in picked]
    gathered = await store.gather(LSTM, batch, [None] * len(batch))
    assert_bytes_equal(gathered.states, {n: a[:, picked] for n, a in initial.items()})

    new = random_state(LSTM, 6, batch=len(batch))
    written = await store.scatter(gathered, new, *no_ids([1] * len(batch)))
    assert written.errors == [None] * len(batch)
    for row, i in enumerate(picked):
        assert_bytes_equal((await store.read(ids[i]))[1], {n: a[:, row:row + 1]
                                                            for n, a in new.items()})
    for i in sorted(set(range(24)) - set(picked)):  # sessions not in the batch: untouched
        record, read = await store.read(ids[i])
        assert record.steps == 0
        assert_bytes_equal(read, {n: a[:, i:i + 1] for n, a in initial.items()})


async def test_gather_rows_with_errors(store: StateStore) -> None:
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


@pytest.mark.store(ttl_s=0.3)
async def test_expired_vs_unknown(store: StateStore) -> None:
    await store.create(LSTM, rec("old"), None)
    await asyncio.sleep(0.5)
    with pytest.raises(SessionNotFound, match=r"session 'old' expired after 0.3 s idle; "
                                              "create a new one"):
        await store.get("old")
    with pytest.raises(SessionNotFound, match=r"unknown session 'never'"):
        await store.get("never")
    gathered = await store.gather(LSTM, ["old"], [None])
    assert "expired after 0.3 s idle" in str(gathered.errors[0])
    await store.create(LSTM, rec("old"), None)  # the id can be taken again
    assert (await store.get("old")).steps == 0


@pytest.mark.store(ttl_s=0.6)
async def test_steps_refresh_the_idle_timeout(store: StateStore) -> None:
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


async def test_steps_whose_sessions_ended_reset_or_were_replaced_meanwhile(
        store: StateStore) -> None:
    """Between a batch's gather and its scatter: a deleted session's row is an error; so is
    one whose slot another session took (the newcomer keeps its own state); a reset
    session's step stands but its state stays the reset one; the others are written."""
    ids = ["keep", "gone", "taken", "reset"]
    for sid in ids:
        await store.create(LSTM, rec(sid), None)
    gathered = await store.gather(LSTM, ids, [None] * 4)
    await store.delete("gone")
    await store.delete("taken")
    newcomer = random_state(LSTM, 8)
    await store.create(LSTM, rec("newcomer"), newcomer)  # may reuse a freed slot
    reset_to = random_state(LSTM, 9)
    await store.reset("reset", reset_to)
    new = random_state(LSTM, 10, batch=4)
    written = await store.scatter(gathered, new, *no_ids([1] * 4))
    assert written.errors[0] is None and written.errors[3] is None
    assert isinstance(written.errors[1], SessionNotFound)
    assert isinstance(written.errors[2], SessionNotFound)
    assert_bytes_equal((await store.read("keep"))[1], {n: a[:, :1] for n, a in new.items()})
    assert_bytes_equal((await store.read("newcomer"))[1], newcomer)
    assert (await store.get("newcomer")).steps == 0
    assert_bytes_equal((await store.read("reset"))[1], reset_to)


async def test_step_on_session_deleted_meanwhile(store: StateStore) -> None:
    await store.create(LSTM, rec("s"), None)
    gathered = await store.gather(LSTM, ["s"], [None])
    await store.delete("s")
    written = await store.scatter(gathered, random_state(LSTM, 1), *no_ids([1]))
    assert written.errors[0] is not None
    assert isinstance(written.errors[0], SessionNotFound)
    assert written.conflict == [False]
    with pytest.raises(SessionNotFound, match="unknown"):
        await store.get("s")


@pytest.mark.store(ttl_s=0.3, max_sessions=3)
async def test_max_sessions(store: StateStore) -> None:
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


@pytest.mark.store(ttl_s=0.3)
async def test_live_sessions_and_events(store: StateStore, events: Events) -> None:
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


@pytest.mark.store(ttl_s=0.4)
async def test_owned_sessions(store: StateStore) -> None:
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


def by(session_id: str, client: str, layout: StateLayout = LSTM) -> SessionRecord:
    """A keys-off session counted against the address `client`."""
    record = rec(session_id, layout, owner="")
    record.client = client
    return record


async def counts(store: StateStore, *clients: str) -> list[int]:
    return [await store.client_sessions(c) for c in clients]


@pytest.mark.store(ttl_s=0.4, max_sessions_per_client=2)
async def test_client_sessions_and_the_per_address_cap(store: StateStore) -> None:
    await store.create(LSTM, by("a1", "10.0.0.1"), None)
    await store.create(GRU, by("a2", "10.0.0.1", GRU), None)
    await store.create(LSTM, by("b1", "10.0.0.2"), None)
    await store.create(LSTM, by("n1", ""), None)  # not counted: a trusted proxy's own
    await store.create(LSTM, by("n2", ""), None)
    await store.create(LSTM, by("n3", ""), None)
    assert await counts(store, "10.0.0.1", "10.0.0.2", "10.0.0.3") == [2, 1, 0]
    assert (await store.get("a1")).client == "10.0.0.1"
    with pytest.raises(SessionQuotaExceeded, match=r"client address 10.0.0.1 holds its maximum "
                       r"of 2 live sessions .*--max-sessions-per-client") as info:
        await store.create(LSTM, by("a3", "10.0.0.1"), None)
    assert info.value.retry_after_s == 5 and info.value.http_status == 429
    with pytest.raises(SessionNotFound):  # the refused session was not stored
        await store.get("a3")
    await store.create(LSTM, by("a2", "10.0.0.1"), None, replace=True)  # its own: no extra
    with pytest.raises(SessionQuotaExceeded):  # another address's id is one more for .1
        await store.create(LSTM, by("b1", "10.0.0.1"), None, replace=True)
    await store.create(LSTM, by("b1", "10.0.0.3"), None, replace=True)  # now .3's
    assert await counts(store, "10.0.0.1", "10.0.0.2", "10.0.0.3") == [2, 0, 1]
    await store.delete("a1")  # a delete frees its count at once
    assert await counts(store, "10.0.0.1") == [1]
    await store.create(LSTM, by("a3", "10.0.0.1"), None)
    assert await counts(store, "10.0.0.1") == [2]
    await asyncio.sleep(0.6)  # all expire: every count is free again
    assert await counts(store, "10.0.0.1", "10.0.0.3") == [0, 0]
    await store.create(LSTM, by("c1", "10.0.0.1"), None)
    await store.create(LSTM, by("c2", "10.0.0.1"), None)
    assert await counts(store, "10.0.0.1") == [2]


@pytest.mark.store(ttl_s=0.6, max_sessions_per_client=1)
async def test_a_stepped_session_keeps_counting_past_its_first_expiry(store: StateStore) -> None:
    await store.create(LSTM, by("s", "10.0.0.1"), None)
    for _ in range(4):  # 1.2 s in all: past the expiry it had when created, never idle 0.6 s
        await asyncio.sleep(0.3)
        assert (await step(store, LSTM, ["s"], random_state(LSTM, 1))).errors == [None]
    assert await counts(store, "10.0.0.1") == [1]
    with pytest.raises(SessionQuotaExceeded):
        await store.create(LSTM, by("t", "10.0.0.1"), None)
    await asyncio.sleep(0.9)  # idle past the timeout now
    assert await counts(store, "10.0.0.1") == [0]
    await store.create(LSTM, by("t", "10.0.0.1"), None)


async def test_the_memory_sweep_frees_the_count() -> None:
    now = [time.time()]  # records are stamped with the real time
    store = MemoryStateStore(ttl_s=10, max_sessions=100, clock=lambda: now[0],
                             max_sessions_per_client=2)  # not started: sweeps only when told
    await store.create(LSTM, by("a", "10.0.0.1"), None)
    await store.create(LSTM, by("b", "10.0.0.1"), None)
    now[0] += 11  # idle past the timeout
    assert store.sweep() == 2
    assert await counts(store, "10.0.0.1") == [0]
    await store.create(LSTM, by("c", "10.0.0.1"), None)


async def test_lru_eviction_frees_the_client_count() -> None:
    store = MemoryStateStore(ttl_s=60, max_sessions=2, when_full="lru",
                             max_sessions_per_client=2)
    await store.create(LSTM, by("old", "10.0.0.1"), None)
    await store.create(LSTM, by("b", "10.0.0.2"), None)
    await store.create(LSTM, by("c", "10.0.0.2"), None)  # evicts .1's session
    assert await counts(store, "10.0.0.1", "10.0.0.2") == [0, 2]


async def test_gather_checks_the_owner(store: StateStore) -> None:
    await store.create(LSTM, rec("a", owner="alice"), random_state(LSTM, 1))
    await store.create(LSTM, rec("b", owner="bob"), None)
    await store.create(LSTM, rec("c", owner="bob"), None)
    gathered = await store.gather(LSTM, ["a", "b", "c"], ["alice", "alice", None])
    assert gathered.errors[0] is None and gathered.errors[2] is None  # None: no check
    assert isinstance(gathered.errors[1], SessionNotFound)  # another's: as if unknown
    assert "unknown session 'b'" in str(gathered.errors[1])
    written = await store.scatter(gathered, random_state(LSTM, 2, batch=3), *no_ids([1] * 3))
    assert isinstance(written.errors[1], SessionNotFound)
    assert [(await store.get(s)).steps for s in ("a", "b", "c")] == [1, 0, 1]


async def test_step_id_is_replayed_not_applied_twice(store: StateStore) -> None:
    await store.create(GRU, rec("s", GRU), None)
    outputs = np.array([[[0.5], [-1.25]]], np.float32)  # one row: [time 2, out 1]
    first = random_state(GRU, 1)
    gathered = await store.gather(GRU, ["s"], [None])
    written = await store.scatter(gathered, first, [2], outputs, ["id-1"])
    assert written.steps == [2] and written.replayed == [None] and written.errors == [None]

    again = await store.gather(GRU, ["s"], [None])  # the same step, retried
    written = await store.scatter(again, random_state(GRU, 2), [2], outputs * 0, ["id-1"])
    assert written.errors == [None] and written.conflict == [False]
    assert written.steps == [2]
    replayed = written.replayed[0]
    assert replayed is not None and replayed[1] == 2
    np.testing.assert_array_equal(replayed[0], outputs[0])
    record, state = await store.read("s")
    assert record.steps == 2
    assert_bytes_equal(state, first)  # not applied twice

    found = await store.replay("s", "id-1", "alice")
    assert found is not None and found[1] == 2
    np.testing.assert_array_equal(found[0], outputs[0])
    assert await store.replay("s", "id-1", "bob") is None  # another owner's
    assert await store.replay("s", "id-0", "alice") is None  # not the last step

    await step(store, GRU, ["s"], random_state(GRU, 3))  # a step without an id
    found = await store.replay("s", "id-1", "alice")  # still in the window: still replayed
    assert found is not None and found[1] == 2
    gathered = await store.gather(GRU, ["s"], [None])
    written = await store.scatter(gathered, random_state(GRU, 4), [1], outputs, ["id-2"])
    assert written.steps == [4]
    await store.reset("s", None)
    assert await store.replay("s", "id-2", "alice") is None  # a reset forgets it


async def test_bad_state_shape(store: StateStore) -> None:
    with pytest.raises((InvalidInput, ValueError)):
        await store.create(LSTM, rec("s"), {"h0": np.zeros((2, 1, 15), np.float32)})




async def test_the_latest_attach_holds_the_session(store: StateStore) -> None:
    """A connection's attach raises the holder number and every watcher hears of it; a step
    claiming an older holder is refused (not written), one claiming the current goes."""
    heard: list[tuple[str, int]] = []
    store.watch_attachments(lambda sid, holder: heard.append((sid, holder)))
    await store.create(LSTM, rec("s1"), None)
    assert (await store.get("s1")).holder == 0  # its creator
    attached = await store.attach("s1", "alice")
    assert attached.holder == 1 and attached.steps == 0 and attached.model == LSTM.model
    assert heard[-1] == ("s1", 1)
    new = random_state(LSTM, 3)
    old = await store.gather(LSTM, ["s1"], ["alice"], [0])
    assert type(old.errors[0]).__name__ == "StreamReplaced"
    written = await store.scatter(old, new, *no_ids([1]))
    assert written.errors[0] is not None and (await store.get("s1")).steps == 0
    current = await store.gather(LSTM, ["s1"], ["alice"], [1])
    assert current.errors == [None]
    await store.scatter(current, new, *no_ids([1]))
    assert (await store.get("s1")).steps == 1
    unfenced = await store.gather(LSTM, ["s1"], ["alice"], [None])  # REST: no holder claimed
    assert unfenced.errors == [None]


async def test_another_owner_cannot_attach(store: StateStore) -> None:
    await store.create(LSTM, rec("s1", owner="alice"), None)
    with pytest.raises(SessionNotFound, match="unknown session"):
        await store.attach("s1", "mallory")
    with pytest.raises(SessionNotFound, match="unknown session"):
        await store.attach("nobody", "alice")
    assert (await store.get("s1")).holder == 0


async def test_a_step_gathered_before_an_attach_is_not_written(store: StateStore) -> None:
    """A streamed step in flight when a newer connection attaches does not land after the
    attach (the new connection's greeting counts every step there will be of the old one)."""
    await store.create(LSTM, rec("s1"), None)
    in_flight = await store.gather(LSTM, ["s1"], ["alice"], [0])
    assert in_flight.errors == [None]
    await store.attach("s1", "alice")
    written = await store.scatter(in_flight, random_state(LSTM, 5), *no_ids([1]))
    assert written.conflict == [True] or type(written.errors[0]).__name__ == "StreamReplaced"
    assert (await store.get("s1")).steps == 0


@pytest.mark.store(step_history=4)
async def test_the_last_n_step_ids_replay_and_older_ones_apply(store: StateStore) -> None:
    """A stream that had steps in flight when its connection dropped re-sends them all with
    their ids: each of the session's last N (here 4) is replayed with its own outputs and
    steps, never applied again; the one before them has left the window."""
    await store.create(GRU, rec("s", GRU), None)
    outputs = [np.full((1, 1, 1), float(k), np.float32) for k in range(6)]
    states = [random_state(GRU, 10 + k) for k in range(6)]
    for k in range(6):
        gathered = await store.gather(GRU, ["s"], [None])
        written = await store.scatter(gathered, states[k], [1], outputs[k], [f"id-{k}"])
        assert written.replayed == [None] and written.steps == [k + 1]
    assert (await store.attach("s", "alice")).last_step_id == "id-5"

    again = await store.gather(GRU, ["s"], [None])  # ids 2..5 re-sent: replayed, in order
    for k in range(2, 6):
        gathered = await store.gather(GRU, ["s"], [None])
        written = await store.scatter(gathered, random_state(GRU, 99), [1], outputs[0] - 7,
                                      [f"id-{k}"])
        replayed = written.replayed[0]
        assert written.errors == [None] and replayed is not None and replayed[1] == k + 1
        np.testing.assert_array_equal(replayed[0], outputs[k][0])
        found = await store.replay("s", f"id-{k}", "alice")
        assert found is not None and found[1] == k + 1
    record, state = await store.read("s")
    assert record.steps == 6
    assert_bytes_equal(state, states[5])  # none applied twice

    assert await store.replay("s", "id-1", "alice") is None  # older than the window
    written = await store.scatter(again, states[0], [1], outputs[1], ["id-1"])
    assert written.replayed == [None] and written.steps == [7]  # so it applies again

    await store.reset("s", None)  # a reset forgets the window
    assert await store.replay("s", "id-5", "alice") is None
    assert (await store.attach("s", "alice")).last_step_id is None


async def test_a_new_session_of_a_reused_id_replays_nothing(store: StateStore) -> None:
    """A sequence restarted under the same id (create with replace: KServe v2's
    sequence_start) is a new session: the old one's step ids apply, not replay."""
    await store.create(GRU, rec("s", GRU), None)
    for k in range(3):
        gathered = await store.gather(GRU, ["s"], [None])
        await store.scatter(gathered, random_state(GRU, k), [1],
                            np.ones((1, 1, 1), np.float32), [f"id-{k}"])
    await store.create(GRU, rec("s", GRU), None, replace=True)
    for k in range(3):
        assert await store.replay("s", f"id-{k}", "alice") is None
    gathered = await store.gather(GRU, ["s"], [None])
    written = await store.scatter(gathered, random_state(GRU, 5), [1],
                                  np.ones((1, 1, 1), np.float32), ["id-1"])
    assert written.replayed == [None] and written.steps == [1]
