"""Where the memory store puts sessions' rows (state/slab.py): freed slots are reused lowest
first, one at a time and in bulk, so sessions created one after another sit in ascending
slots however earlier sessions came and went, and a batch of them is copied as a block or
nearly in memory order. The order sessions were deleted in used to decide it (freed slots
were a stack): a gateway's sessions, made after churn, landed in scattered slots and its bulk
steps cost about 1.4 ms more per 1024 sessions (python -m bench.binary_steps --churn)."""

from __future__ import annotations

import random

import numpy as np
from rnnserve.state.memory import MemoryStateStore
from rnnserve.state.slab import Slab, block

from tests.state.conftest import LSTM, random_state
from tests.state.test_memory_expiry import Clock, record_at


def churned_slab(made: int, freed: list[int]) -> Slab:
    slab = Slab(LSTM, 16)
    for _ in range(made):
        slab.allocate()
    for slot in freed:
        slab.release(slot)
    return slab


def test_freed_slots_are_reused_lowest_first_whatever_order_they_were_freed_in() -> None:
    freed = list(range(0, 100, 3))
    random.Random(5).shuffle(freed)
    slab = churned_slab(100, freed)
    again = [slab.allocate() for _ in range(len(freed) + 3)]
    assert again == sorted(freed) + [100, 101, 102]  # then fresh slots above the high water
    assert slab.live == 103 and not slab.free


def test_a_bulk_allocation_takes_the_lowest_freed_slots_ascending_then_fresh_ones() -> None:
    freed = list(range(10, 60))
    random.Random(7).shuffle(freed)
    slab = churned_slab(64, freed)
    first = slab.allocate_many(20)
    assert first.tolist() == list(range(10, 30))
    assert isinstance(block(first), slice)  # copied in and out as one block
    rest = slab.allocate_many(40)  # the 30 freed slots left, then 10 fresh ones
    assert rest.tolist() == list(range(30, 60)) + list(range(64, 74))
    assert slab.live == 64 - 50 + 60 and not slab.free
    assert slab.allocate() == 74


async def test_sessions_made_one_at_a_time_after_churn_sit_in_ascending_slots() -> None:
    clock = Clock()
    store = MemoryStateStore(ttl_s=10.0, max_sessions=1000, clock=clock)
    earlier = [f"early-{i}" for i in range(300)]
    for sid in earlier:
        await store.create(LSTM, record_at(sid, LSTM, clock.now), None)
    random.Random(11).shuffle(earlier)
    freed = sorted(store._locate(sid)[2] for sid in earlier[:200])
    for sid in earlier[:200]:  # deleted in no particular order
        await store.delete(sid)
    later = [f"later-{i}" for i in range(64)]
    states = {sid: random_state(LSTM, 1) for sid in later}
    for sid in later:
        await store.create(LSTM, record_at(sid, LSTM, clock.now), states[sid])
    slots = [store._locate(sid)[2] for sid in later]
    assert slots == freed[:64]  # the lowest freed slots, in the order the sessions came
    gathered = await store.gather(LSTM, later, [None] * len(later))
    assert not any(gathered.errors)
    for i, sid in enumerate(later):  # each session's own state, whatever slot it took
        for name, value in states[sid].items():
            np.testing.assert_array_equal(gathered.states[name][:, i], value[:, 0])
