"""The one entrance of a step (rnnserve.engine.steps): the undecoded steps of one event-loop
turn reach the transport's decoder in one call, a job past max_batch is split by the batcher
whichever way it was submitted, and a row that keeps losing races to another writer is retried
a bounded number of times, in one place, then answered 503 with the session unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from rnnserve.engine import Engine
from rnnserve.engine.batcher import Batcher, BatcherOptions
from rnnserve.engine.pending import PendingStep, StepOutcome, StepResult, StepRows
from rnnserve.engine.steps import MAX_CONFLICT_RETRIES, StepEntrance
from rnnserve.errors import StepConflict
from rnnserve.http.json_arrays import JSON_STEPS
from rnnserve.state import Gathered, Written
from rnnserve.state.memory import MemoryStateStore

from tests.engine.test_batcher import batch_count

RNG = np.random.default_rng(41)


@asynccontextmanager
async def own_batcher(engine: Engine, model: str, store: MemoryStateStore, max_batch: int
                      ) -> AsyncIterator[tuple[Batcher, StepEntrance]]:
    """A batcher and entrance of `model` over `store` (not the engine's), with this max_batch."""
    runner = engine.models.get(model)
    await store.start()
    batcher = Batcher(runner, store, asyncio.Semaphore(2), BatcherOptions(max_batch, 0.0, 100),
                      engine.metrics, engine.tracing)
    try:
        yield batcher, StepEntrance(runner.signature, batcher, engine.limits)
    finally:
        await batcher.close()
        await store.close()


class CountingDecoder:
    """The WebSocket stream's JSON decoder, counting its calls."""

    def __init__(self) -> None:
        self.many: list[int] = []
        self.one = 0

    def decode_many(self, items: list[object]) -> tuple[np.ndarray | None, set[int]]:
        self.many.append(len(items))
        return JSON_STEPS.decode_many(items)

    def decode_one(self, item: object, what: str) -> np.ndarray:
        self.one += 1
        return JSON_STEPS.decode_one(item, what)


async def test_one_turns_undecoded_steps_are_decoded_in_one_call(engine: Engine) -> None:
    records = [await engine.sessions.create("tiny-gru") for _ in range(40)]
    x = RNG.normal(size=(40, 1, 3)).astype(np.float32)
    decoder = CountingDecoder()
    answers: list[asyncio.Future[list[StepOutcome]]] = []
    for i, record in enumerate(records):
        future: asyncio.Future[list[StepOutcome]] = asyncio.get_running_loop().create_future()
        answers.append(future)
        engine.sessions.stepper(record, decoder).step(x[i].tolist(), None, future.set_result)
    bad_record = await engine.sessions.create("tiny-gru")
    bad: asyncio.Future[list[StepOutcome]] = asyncio.get_running_loop().create_future()
    engine.sessions.stepper(bad_record, decoder).step([["1", 2, 3]], None, bad.set_result)
    outcomes = [(await a)[0] for a in answers]
    assert decoder.many == [41]  # every step of the turn in one call
    assert decoder.one == 1  # the odd one decoded alone, for its own error
    bad_outcome = (await bad)[0]
    assert not isinstance(bad_outcome, StepResult) and "numbers only" in bad_outcome.message
    for i, got in enumerate(outcomes):  # each equals the same step taken alone
        assert isinstance(got, StepResult) and got.steps == 1
        fresh = await engine.sessions.create("tiny-gru")
        alone = await engine.sessions.step(fresh.id, x[i])
        np.testing.assert_allclose(got.outputs, alone.outputs, rtol=0, atol=1e-6)
    assert (await engine.sessions.describe(bad_record.id)).steps == 0


async def test_entrance_jobs_past_max_batch_are_split_by_the_batcher(engine: Engine) -> None:
    store = MemoryStateStore(ttl_s=60, max_sessions=100)
    async with own_batcher(engine, "tiny-lstm", store, 4) as (batcher, entrance):
        ids = [f"s{i}" for i in range(10)]
        for sid in ids:
            record = await engine.sessions.open(engine.models.get("tiny-lstm"), sid, "")
            await store.create(batcher.layout, record, None)
        x = RNG.normal(size=(10, 2, 3)).astype(np.float32)
        answer: asyncio.Future[list[StepOutcome]] = asyncio.get_running_loop().create_future()
        before = batch_count(engine, "tiny-lstm")
        entrance.add(PendingStep(ids, "", x, None, answer.set_result))
        outcomes = await answer
        assert [o.steps for o in outcomes if isinstance(o, StepResult)] == [2] * 10
        calls, rows = (a - b for a, b in zip(batch_count(engine, "tiny-lstm"), before,
                                              strict=True))
        assert rows == 10 and calls == 3  # 4 + 4 + 2 rows: split, never one run of 10
        # the parts joined in row order, as arrays (no object per row): each session's row
        # is its own step from a zero state, which a stateless predict of its input equals
        assert type(outcomes) is StepRows and outcomes.outputs.shape[:2] == (10, 2)
        for i, outcome in enumerate(outcomes):
            alone = await engine.predict("tiny-lstm", x[i:i + 1])
            np.testing.assert_allclose(outcome.outputs, alone.outputs[0],  # type: ignore
                                       atol=1e-5)


class AlwaysOvertaken(MemoryStateStore):
    """A store where another replica always wins the race: every scatter is a conflict (the
    fault two real replicas cause only by chance)."""

    scatters = 0

    async def scatter(self, gathered: Gathered, states: dict[str, np.ndarray],
                      steps: list[int], outputs: np.ndarray,
                      step_ids: list[str | None]) -> Written:
        self.scatters += 1
        n = len(gathered.ids)
        return Written([0] * n, [True] * n, [None] * n, [None] * n)


async def test_conflicts_are_retried_a_bounded_number_of_times(engine: Engine) -> None:
    store = AlwaysOvertaken(ttl_s=60, max_sessions=10)
    async with own_batcher(engine, "tiny-rnn", store, 8) as (batcher, entrance):
        record = await engine.sessions.create("tiny-rnn")
        await store.create(batcher.layout, record, None)
        answer: asyncio.Future[list[StepOutcome]] = asyncio.get_running_loop().create_future()
        x = np.zeros((1, 1, 3), np.float32)
        entrance.add(PendingStep([record.id], "", x, None, answer.set_result))
        (outcome,) = await asyncio.wait_for(answer, 10)
        assert isinstance(outcome, StepConflict) and outcome.http_status == 503
        assert store.scatters == 1 + MAX_CONFLICT_RETRIES
        assert (await store.get(record.id)).steps == 0


async def test_single_steps_past_max_batch_are_answered_part_by_part(engine: Engine) -> None:
    """Ten one-row steps of a turn form one job; the batcher runs it as parts of 4, 4 and 2,
    and each step gets its own row of its own part."""
    store = MemoryStateStore(ttl_s=60, max_sessions=100)
    async with own_batcher(engine, "tiny-gru", store, 4) as (batcher, entrance):
        runner = engine.models.get("tiny-gru")
        ids = [f"g{i}" for i in range(10)]
        for sid in ids:
            record = await engine.sessions.open(runner, sid, "")
            await store.create(batcher.layout, record, None)
        x = RNG.normal(size=(10, 1, 3)).astype(np.float32)
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in ids]
        before = batch_count(engine, "tiny-gru")
        for sid, rows, answer in zip(ids, x, answers, strict=True):
            entrance.add(PendingStep([sid], "", rows[None], None, answer.set_result))
        outcomes = [(await a)[0] for a in answers]
        calls, rows_run = (a - b for a, b in zip(batch_count(engine, "tiny-gru"), before,
                                                  strict=True))
        assert rows_run == 10 and calls == 3
        for sid, row, got in zip(ids, x, outcomes, strict=True):
            assert isinstance(got, StepResult) and got.steps == 1
            assert (await store.get(sid)).steps == 1
            fresh = await engine.sessions.create("tiny-gru")
            again = await engine.sessions.step(fresh.id, row)
            np.testing.assert_allclose(got.outputs, again.outputs, rtol=0, atol=1e-6)
