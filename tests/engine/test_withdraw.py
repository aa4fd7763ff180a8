"""Withdrawing a step at its call's deadline (rnnserve.engine.steps, step_waits, deadlines):
possible while the step waits in the entrance or sits in a batch that has not reached its
state write, never after. A withdrawn step changes nothing; a committed one is answered with
its real result, late, and the call's time limit does not cut it off meanwhile.

The store below is the real memory store with a pause before its gather returns and before its
scatter writes: the places where a deadline can land, held open for as long as a test needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
from rnnserve.engine import Engine, TimeLimit
from rnnserve.engine.batcher import Batcher
from rnnserve.engine.pending import (
    COMMITTED,
    WAITING,
    WITHDRAWN,
    PendingStep,
    StepOutcome,
    StepResult,
)
from rnnserve.engine.runner import Runner
from rnnserve.engine.sessions import Sessions
from rnnserve.engine.steps import StepEntrance
from rnnserve.errors import InvalidInput, StepTimedOut
from rnnserve.state import Gathered, StateLayout, Written
from rnnserve.state.memory import MemoryStateStore

from tests.engine.test_steps import own_batcher

MODEL = "tiny-gru"
X = np.ones((1, 5, 3), np.float32)  # one step of 5 timesteps


class PausingStore(MemoryStateStore):
    """Signals when a batch has gathered and when it is about to write, and waits there until
    the test lets it go on (both open unless a test closes them)."""

    def __init__(self) -> None:
        super().__init__(ttl_s=60, max_sessions=100)
        self.gathered, self.writing = asyncio.Event(), asyncio.Event()
        self.after_gather, self.before_write = asyncio.Event(), asyncio.Event()
        self.after_gather.set()
        self.before_write.set()

    async def gather(self, layout: StateLayout, ids: list[str], owners: list[str | None],
                     holders: list[int | None] | None = None) -> Gathered:
        gathered = await super().gather(layout, ids, owners, holders)
        self.gathered.set()
        await self.after_gather.wait()
        return gathered

    async def scatter(self, gathered: Gathered, states: dict[str, np.ndarray],
                      steps: list[int], outputs: np.ndarray,
                      step_ids: list[str | None]) -> Written:
        self.writing.set()
        await self.before_write.wait()
        return await super().scatter(gathered, states, steps, outputs, step_ids)


class Answers:
    """The outcomes each step's `done` got (a step is answered at most once by the entrance,
    except a withdrawn one's late answer from its batch, which its caller drops)."""

    def __init__(self) -> None:
        self.got: list[list[StepOutcome]] = []
        self.event = asyncio.Event()

    def __call__(self, outcomes: list[StepOutcome]) -> None:
        self.got.append(outcomes)
        self.event.set()


def watched(session_ids: list[str], x: np.ndarray, done: Answers) -> PendingStep:
    """A step as a caller with a deadline enters it (sessions.step_waits does this)."""
    return PendingStep(session_ids, "", x, None, done, phase=WAITING)


@asynccontextmanager
async def pausing(engine: Engine, max_batch: int = 8, sessions: int = 1
                  ) -> AsyncIterator[tuple[PausingStore, StepEntrance, list[str]]]:
    store = PausingStore()
    async with own_batcher(engine, MODEL, store, max_batch) as (batcher, entrance):
        ids = [f"p{i}" for i in range(sessions)]
        for sid in ids:
            record = await engine.sessions.open(engine.models.get(MODEL), sid, "")
            await store.create(batcher.layout, record, None)
        yield store, entrance, ids


async def test_withdrawn_while_waiting_behind_its_session_never_applies(engine: Engine) -> None:
    async with pausing(engine) as (store, entrance, (sid,)):
        store.before_write.clear()
        first, second = Answers(), Answers()
        step1, step2 = watched([sid], X, first), watched([sid], X, second)
        entrance.add(step1)
        entrance.add(step2)  # waits in the entrance: its session has a step in flight
        await asyncio.wait_for(store.writing.wait(), 10)
        assert step1.phase == COMMITTED and not entrance.withdraw(step1)  # at its write: no
        assert entrance.withdraw(step2) and step2.phase == WITHDRAWN
        store.before_write.set()
        await asyncio.wait_for(first.event.wait(), 10)
        (outcome,) = first.got[0]
        assert isinstance(outcome, StepResult) and outcome.steps == 5  # the real result
        for _ in range(20):  # whatever runs next, the withdrawn step is not among it
            await asyncio.sleep(0.005)
        assert second.got == [] and (await store.get(sid)).steps == 5


async def test_withdrawn_mid_batch_before_the_write_changes_nothing(engine: Engine) -> None:
    async with pausing(engine) as (store, entrance, (sid,)):
        store.after_gather.clear()
        answers = Answers()
        step = watched([sid], X, answers)
        entrance.add(step)
        await asyncio.wait_for(store.gathered.wait(), 10)  # gathered; ONNX Runtime is next
        assert entrance.withdraw(step)
        store.after_gather.set()
        await asyncio.wait_for(answers.event.wait(), 10)  # the batch's late answer for it
        (outcome,) = answers.got[0]
        assert isinstance(outcome, StepTimedOut) and "not applied" in outcome.message
        record = await store.get(sid)
        assert record.steps == 0
        _, state = await store.read(sid)
        assert not any(value.any() for value in state.values())  # still zeros


async def test_a_step_of_many_rows_is_withdrawn_whole_or_not_at_all(engine: Engine) -> None:
    """A gateway's step split past max_batch: once one part reached its write, the step can
    no longer be withdrawn, and every row is applied."""
    async with pausing(engine, max_batch=2, sessions=4) as (store, entrance, ids):
        store.before_write.clear()
        answers = Answers()
        step = watched(ids, np.ones((4, 5, 3), np.float32), answers)
        entrance.add(step)
        await asyncio.wait_for(store.writing.wait(), 10)  # the first part's write
        assert not entrance.withdraw(step)
        store.before_write.set()
        await asyncio.wait_for(answers.event.wait(), 10)
        assert [o.steps for o in answers.got[0] if isinstance(o, StepResult)] == [5] * 4
        assert [(await store.get(sid)).steps for sid in ids] == [5] * 4


class OwnBatcher:
    """The ServedVersions a Sessions needs, over a batcher of the test's own store."""

    def __init__(self, engine: Engine, batcher: Batcher) -> None:
        self._engine, self._batcher = engine, batcher

    def runner(self, model: str, version: str | int | None = None) -> Runner:
        return self._engine.runner(model, version)

    def served_version(self, model: str, version: int) -> Runner | None:
        return self._engine.served_version(model, version)

    def session_runner(self, model: str, version: int, created: float) -> Runner | None:
        return self._engine.session_runner(model, version, created)

    def batcher(self, runner: Runner) -> Batcher:
        return self._batcher


async def test_at_the_deadline_a_committed_step_is_answered_and_a_waiting_one_withdrawn(
        engine: Engine) -> None:
    """Two calls, each under a 50 ms TimeLimit as the transports run them, step one session
    while the first step's write is held for 300 ms: the first call is not cancelled at its
    limit but gets its real result; the second step, still waiting, is withdrawn at the
    deadline with StepTimedOut, and the session counts only the first."""
    store = PausingStore()
    async with own_batcher(engine, MODEL, store, 8) as (batcher, _):
        sessions = Sessions(engine.settings, store, OwnBatcher(engine, batcher), engine.limits)
        record = await sessions.create(MODEL)
        store.before_write.clear()

        async def call(x: np.ndarray) -> StepResult:
            async with TimeLimit(0.05):
                return await sessions.step(record.id, x)

        first = asyncio.create_task(call(X[0]))
        await asyncio.wait_for(store.writing.wait(), 10)
        second = asyncio.create_task(call(X[0, :2]))
        await asyncio.sleep(0.3)  # both deadlines pass while the first step is being written
        assert not first.done()  # held, not cancelled
        store.before_write.set()
        result = await asyncio.wait_for(first, 10)
        assert result.steps == 5
        with pytest.raises(StepTimedOut, match="not applied"):
            await asyncio.wait_for(second, 10)
        assert (await sessions.describe(record.id)).steps == 5


async def test_a_call_that_changed_nothing_is_still_cancelled_at_its_limit(
        engine: Engine) -> None:
    """The transport's limit is restored after a step that was not applied (bad inputs)."""
    record = await engine.sessions.create(MODEL)
    with pytest.raises(TimeoutError):
        async with TimeLimit(0.05):
            with pytest.raises(InvalidInput):
                await engine.sessions.step(record.id, np.full((1, 3), np.nan, np.float32))
            await asyncio.sleep(5)  # cut at the limit
    assert (await engine.sessions.describe(record.id)).steps == 0
