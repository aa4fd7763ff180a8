"""A large batch's new states kept as ONNX Runtime returned them (state/slab.py, `Slab.keep`):
the next gather of the same sessions in the same order is fed those very arrays, and every
other use of the rows (a read, a reset, another batch, a deleted session's slot taken again,
the slab growing) sees the newest state of each session, as if it had been copied in."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rnnserve.state.memory import MemoryStateStore
from rnnserve.state.slab import KEEP_ROWS

from tests.state.conftest import LSTM, no_ids, random_state
from tests.state.test_memory_expiry import Clock, record_at

N = KEEP_ROWS + 44


async def made(count: int = N, seed: int = 3, max_sessions: int = 100_000
               ) -> tuple[MemoryStateStore, list[str], dict[str, dict[str, np.ndarray]]]:
    """A store with `count` sessions of random states, listed in an order that is not their
    slots' (a gateway's sessions created by many clients at once)."""
    clock = Clock()
    store = MemoryStateStore(ttl_s=60.0, max_sessions=max_sessions, clock=clock)
    ids = [f"s{i}" for i in range(count)]
    truth = {sid: random_state(LSTM, seed + i) for i, sid in enumerate(ids)}
    for sid in ids:
        await store.create(LSTM, record_at(sid, LSTM, clock.now), truth[sid])
    random.Random(seed).shuffle(ids)
    return store, ids, truth


async def step(store: MemoryStateStore, ids: list[str], truth: dict[str, dict[str, np.ndarray]],
               seed: int) -> dict[str, np.ndarray]:
    """One batch of `ids`: gathered (checked against `truth`), new random states scattered
    (as ONNX Runtime hands them: contiguous [layers, batch, hidden]), `truth` updated."""
    gathered = await store.gather(LSTM, ids, [None] * len(ids))
    assert not any(gathered.errors)
    expect_rows(gathered.states, ids, truth)
    new = random_state(LSTM, seed, len(ids))
    written = await store.scatter(gathered, new, *no_ids([1] * len(ids)))
    assert not any(written.errors)
    remember(truth, ids, new)
    return new


def remember(truth: dict[str, dict[str, np.ndarray]], ids: list[str],
             new: dict[str, np.ndarray]) -> None:
    """Row i of a batch's new states is now the state of session ids[i]."""
    for i, sid in enumerate(ids):
        truth[sid] = {name: value[:, i:i + 1].copy() for name, value in new.items()}


def expect_rows(states: dict[str, np.ndarray], ids: list[str],
                truth: dict[str, dict[str, np.ndarray]]) -> None:
    for i, sid in enumerate(ids):
        for name, value in truth[sid].items():
            np.testing.assert_array_equal(states[name][:, i], value[:, 0], err_msg=sid)


async def expect_read(store: MemoryStateStore, sid: str,
                      truth: dict[str, dict[str, np.ndarray]]) -> None:
    _, state = await store.read(sid)
    for name, value in truth[sid].items():
        np.testing.assert_array_equal(state[name], value, err_msg=sid)


async def test_the_same_batch_again_is_fed_the_kept_arrays_read_only() -> None:
    store, ids, truth = await made()
    new = await step(store, ids, truth, 100)
    again = await store.gather(LSTM, ids, [None] * len(ids))
    for name, value in new.items():  # no copy out of the slab: the scattered arrays
        assert np.shares_memory(again.states[name], value)
        with pytest.raises(ValueError, match="read-only"):
            again.states[name][0, 0, 0] = 1.0
    expect_rows(again.states, ids, truth)
    newer = await step(store, ids, truth, 101)  # the batch gathered from them, kept in turn
    for name, value in newer.items():
        assert np.shares_memory((await store.gather(LSTM, ids, [None] * N)).states[name], value)


async def test_reads_other_orders_and_other_batches_see_the_newest_rows() -> None:
    store, ids, truth = await made()
    await step(store, ids, truth, 200)
    await expect_read(store, ids[7], truth)
    await step(store, ids, truth, 201)
    reordered = ids[::-1]  # the same sessions in another order: gathered from the rows
    await step(store, reordered, truth, 202)
    await step(store, ids[:KEEP_ROWS - 1], truth, 203)  # a small batch: written in place
    await step(store, ids[5:5 + KEEP_ROWS], truth, 204)  # another large batch of some of them
    await step(store, ids, truth, 205)
    for sid in ids[::13]:
        await expect_read(store, sid, truth)
    gathered = await store.gather(LSTM, ids, [None] * N)
    expect_rows(gathered.states, ids, truth)


async def test_a_reset_or_a_slot_taken_again_while_kept_keeps_every_other_session() -> None:
    store, ids, truth = await made()
    await step(store, ids, truth, 300)
    reset_to = random_state(LSTM, 301)
    await store.reset(ids[3], reset_to)
    truth[ids[3]] = reset_to
    await store.delete(ids[9])  # its slot is the lowest free one: the next session takes it
    truth.pop(ids[9])
    clock_now = (await store.get(ids[0])).last_used
    fresh = random_state(LSTM, 302)
    await store.create(LSTM, record_at("new", LSTM, clock_now), fresh)
    truth["new"] = fresh
    ids[9] = "new"
    await step(store, ids, truth, 303)  # the kept batch's other rows were not lost
    await step(store, ids, truth, 304)
    for sid in (ids[3], "new", ids[10]):
        await expect_read(store, sid, truth)


async def test_a_partly_written_batch_and_a_growing_slab_keep_every_row() -> None:
    store, ids, truth = await made(max_sessions=1000)  # rows reserved for 1024 sessions
    await step(store, ids, truth, 400)
    gathered = await store.gather(LSTM, ids, [None] * N)
    await store.delete(ids[0])  # deleted while its step ran: that row is not written
    truth.pop(ids[0])
    new = random_state(LSTM, 401, N)
    written = await store.scatter(gathered, new, *no_ids([1] * N))
    assert written.errors[0] is not None and not any(written.errors[1:])
    remember(truth, ids[1:], {name: value[:, 1:] for name, value in new.items()})
    await step(store, ids[1:], truth, 402)
    capacity = store._slab(LSTM)[1].capacity
    store.max_sessions = 3 * capacity  # more sessions than the rows reserved
    now = (await store.get(ids[1])).last_used
    for i in range(capacity):  # the slab grows (its arrays copied) while a batch is kept
        await store.create(LSTM, record_at(f"more-{i}", LSTM, now), None)
    assert store._slab(LSTM)[1].capacity > capacity
    for sid in ids[1::17]:
        await expect_read(store, sid, truth)
    await step(store, ids[1:], truth, 403)


async def test_two_large_batches_in_flight_at_once_both_stand() -> None:
    store, ids, truth = await made(2 * N)
    first, second = ids[:N], ids[N:]
    a = await store.gather(LSTM, first, [None] * N)
    b = await store.gather(LSTM, second, [None] * N)
    new_b = random_state(LSTM, 500, N)
    await store.scatter(b, new_b, *no_ids([1] * N))  # kept
    new_a = random_state(LSTM, 501, N)
    await store.scatter(a, new_a, *no_ids([1] * N))  # kept now: the second's go to their rows
    remember(truth, first, new_a)
    remember(truth, second, new_b)
    for sid in ids[::29]:
        await expect_read(store, sid, truth)
    await step(store, second, truth, 502)
    await step(store, first, truth, 503)
