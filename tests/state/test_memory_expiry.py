"""The memory store's own expiry check in `gather`, on its own: a session idle past its
timeout that no sweep has ended yet (the sweeper runs at most a second late, and between two
sweeps the store is all there is) is refused at gather with the "expired" message, and nothing
is written for it, while the rest of its batch steps as usual.

The stores here are never started, so no sweeper runs, and their clock is the test's: time
moves only when a test moves it. The second test takes a step through the engine's own path
(step entrance, batcher, batch) over such a store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rnnserve.engine import Engine
from rnnserve.engine.batcher import Batcher, BatcherOptions
from rnnserve.engine.pending import PendingStep, StepOutcome, StepResult
from rnnserve.engine.steps import StepEntrance
from rnnserve.errors import SessionNotFound
from rnnserve.settings import Settings
from rnnserve.state.base import SessionRecord, StateLayout
from rnnserve.state.memory import MemoryStateStore

from tests.state.conftest import LSTM, Events, no_ids, random_state, recorder

TTL_S = 10.0


class Clock:
    """A clock the test moves; it starts at the real time (records are stamped with it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def record_at(session_id: str, layout: StateLayout, now: float) -> SessionRecord:
    return SessionRecord(id=session_id, model=layout.model, version=layout.version,
                         created=now, last_used=now, ttl_s=TTL_S)


def unswept_store(clock: Callable[[], float], events: Events | None = None) -> MemoryStateStore:
    """A memory store that is never started: no sweeper ends anything behind the test."""
    return MemoryStateStore(ttl_s=TTL_S, max_sessions=100, clock=clock,
                            on_event=recorder(events))


async def test_gather_refuses_a_session_past_its_ttl_that_no_sweep_ended() -> None:
    clock, events = Clock(), []
    store = unswept_store(clock, events)
    await store.create(LSTM, record_at("stale", LSTM, clock.now), random_state(LSTM, 1))
    clock.now += 6
    await store.create(LSTM, record_at("fresh", LSTM, clock.now), None)
    clock.now += 5  # "stale" is 11 s idle (past the 10 s timeout), "fresh" 5 s

    gathered = await store.gather(LSTM, ["fresh", "stale"], [None, None])
    assert gathered.errors[0] is None
    assert isinstance(gathered.errors[1], SessionNotFound)
    assert "session 'stale' expired after 10 s idle; create a new one" in str(
        gathered.errors[1])
    for name, stacked in gathered.states.items():  # its state is not fed to the model
        assert not stacked[:, 1].any(), name

    written = await store.scatter(gathered, random_state(LSTM, 2, batch=2), *no_ids([1, 1]))
    assert written.errors[0] is None and written.steps[0] == 1
    assert isinstance(written.errors[1], SessionNotFound)
    assert (await store.get("fresh")).steps == 1
    # nothing was written for "stale": it ended with the 0 steps it had, and stays ended
    assert events == [("created", "lstm", 0), ("created", "lstm", 0), ("expired", "lstm", 0)]
    assert await store.live_sessions() == {"lstm": 1}


async def test_a_step_through_the_engine_on_a_session_past_its_ttl_is_refused(
    tiny_repo: Path,
) -> None:
    """The path a gateway's or a stream's step takes (no lookup of the session before it
    enters): the entrance, the batcher and the batch over an unswept store. The session past
    its timeout gets the "expired" error and keeps its state; its batch-mate steps."""
    engine = Engine(Settings(models=tiny_repo, grpc_port=0))
    engine.start()
    clock = Clock()
    store = unswept_store(clock)
    runner = engine.models.get("tiny-gru")
    batcher = Batcher(runner, store, asyncio.Semaphore(1), BatcherOptions(8, 0.0, 100),
                      engine.metrics, engine.tracing)
    try:
        layout = batcher.layout
        start = {name: np.full((layers, 1, hidden), 0.5, np.float32)
                 for name, layers, hidden in layout.tensors}
        await store.create(layout, record_at("stale", layout, clock.now), start)
        await store.create(layout, record_at("fresh", layout, clock.now + 6), start)
        clock.now += TTL_S + 1

        answer: asyncio.Future[list[StepOutcome]] = asyncio.get_running_loop().create_future()
        x = np.ones((2, 1, 3), np.float32)
        StepEntrance(runner.signature, batcher, engine.limits).add(
            PendingStep(["fresh", "stale"], "", x, None, answer.set_result))
        fresh, stale = await asyncio.wait_for(answer, 10)
        assert isinstance(fresh, StepResult) and fresh.steps == 1
        assert isinstance(stale, SessionNotFound)
        assert "session 'stale' expired after 10 s idle" in stale.message
        assert (await store.get("fresh")).steps == 1
        assert await store.live_sessions() == {"tiny-gru": 1}
    finally:
        await batcher.close()
        engine.close()
