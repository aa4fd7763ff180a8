"""The inputs a store keeps for migration (layout `rewarm_steps`), on the memory store and on
Redis in both record formats: the last W inputs of the steps since creation or reset, oldest
first, across steps of several timesteps; and a window that missed steps (stepped while no
inputs were kept) is refused until W kept steps have followed, never replayed around the gap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from rnnserve.errors import MigrationRefused
from rnnserve.state.base import StateLayout, StateStore
from rnnserve.state.memory import MemoryStateStore

from tests.state.conftest import NO_REDIS_PY, no_ids, random_state, rec

FEATURES = 3
KEEPING = StateLayout("kept", 1, (("h0", 2, 4),), rewarm_steps=4, features=FEATURES)


@pytest.fixture(params=["memory", "redis", "redis-format2"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    made: StateStore
    if request.param.startswith("redis"):
        pytest.importorskip("redis", reason=NO_REDIS_PY)
        from rnnserve.state.redis import RedisStateStore

        made = RedisStateStore(request.getfixturevalue("redis_url"), ttl_s=60,
                               max_sessions=100,
                               record_format=2 if request.param == "redis-format2" else 1)
    else:
        made = MemoryStateStore(ttl_s=60, max_sessions=100)
    await made.start()
    yield made
    await made.close()


async def step(store: StateStore, x: np.ndarray | None, **layout: Any) -> None:
    """One step of session "s" with inputs x [time, features]; None: a step whose inputs are
    not kept (its version keeps none, or an older release wrote it)."""
    gathered = await store.gather(KEEPING, ["s"], [None])
    steps, outputs, ids = no_ids([1 if x is None else len(x)])
    if x is None:
        written = await store.scatter(gathered, random_state(KEEPING, 1), steps, outputs, ids)
    else:
        written = await store.scatter(gathered, random_state(KEEPING, 1), steps, outputs, ids,
                                      inputs=x[None].astype(np.float32))
    assert written.errors == [None]


async def test_the_last_inputs_are_kept_in_order(store: StateStore) -> None:
    x = np.arange(7 * FEATURES, dtype=np.float32).reshape(7, FEATURES)
    await store.create(KEEPING, rec("s", KEEPING), None)
    _, none_yet = await store.recent_inputs("s", FEATURES)
    await step(store, x[:2])

    _, short = await store.recent_inputs("s", FEATURES)
    await step(store, x[2:7])
    record, full = await store.recent_inputs("s", FEATURES)

    assert none_yet.shape == (0, FEATURES)
    np.testing.assert_array_equal(short, x[:2])
    np.testing.assert_array_equal(full, x[3:7])
    assert record.steps == 7
    await store.reset("s", None)  # a reset: only the inputs after it count
    await step(store, x[:1])
    np.testing.assert_array_equal((await store.recent_inputs("s", FEATURES))[1], x[:1])


async def test_a_gap_in_the_kept_inputs_is_never_replayed_around(store: StateStore) -> None:
    x = np.arange(10 * FEATURES, dtype=np.float32).reshape(10, FEATURES)
    await store.create(KEEPING, rec("s", KEEPING), None)
    await step(store, x[:4])  # a full window
    await step(store, None)  # a step whose input was not kept
    with pytest.raises(MigrationRefused):
        await store.recent_inputs("s", FEATURES)
    await step(store, x[4:6])  # kept again, but the window holds only what came after the gap

    _, after_gap = await store.recent_inputs("s", FEATURES)
    await step(store, x[6:8])
    _, whole_again = await store.recent_inputs("s", FEATURES)

    np.testing.assert_array_equal(after_gap, x[4:6])  # fewer than W: migration refuses it
    np.testing.assert_array_equal(whole_again, x[4:8])
