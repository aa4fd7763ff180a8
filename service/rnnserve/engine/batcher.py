"""Coalesce concurrent work for one model version into few ONNX Runtime calls.

Jobs are stateless sequences (predict, v2 infer) or session steps (state gathered from the
store, run, scattered back). A batch holds jobs of one length (timesteps), so no padding exists
to leak into a result, and at most one job per session, so a session's steps apply one at a
time in arrival order: a session with a step in flight waits for the next batch.

Policy: when a run slot is free and no run of this model is in flight, run at once (a lone
request never waits); while another run is in flight, wait up to `max_delay_s` for the batch to
fill towards `max_batch` rows. The queue is bounded: past `max_queue` rows, callers get 503."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rnnserve.engine.runner import Runner, Tensors
from rnnserve.errors import RnnServeError, StepConflict, Unavailable
from rnnserve.metrics import Metrics
from rnnserve.state import StateLayout, StateStore
from rnnserve.tracing import Tracing

log = logging.getLogger("rnnserve.batcher")


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int
    max_delay_s: float
    max_queue: int


@dataclass
class JobResult:
    """One job's rows of the batch output: y [rows, time, out] and final states
    [layers, rows, hidden]; for session rows, each session's timesteps after the step
    (`steps`) or the error that row met (`errors`; its y row is then meaningless)."""

    y: np.ndarray
    states: dict[str, np.ndarray]
    steps: list[int] | None = None
    errors: list[RnnServeError | None] | None = None


class Completion(Protocol):
    """How a job's outcome reaches its caller: an asyncio.Future for `submit`, a
    CallbackCompletion for `enqueue`."""

    def done(self) -> bool: ...
    def set_result(self, result: JobResult, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...


class CallbackCompletion:
    """Calls back from the batch's own completion instead of waking an awaiting task: a caller
    with hundreds of one-step messages in flight (the direct WebSocket stream) saves a future,
    a task switch and a coroutine frame per step. A callback that raises is logged; it never
    fails the batch's other rows."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Callable[[JobResult | BaseException], None]) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def _call(self, outcome: JobResult | BaseException) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._callback(outcome)
        except Exception:
            log.exception("a job's completion callback failed")

    def set_result(self, result: JobResult, /) -> None:
        self._call(result)

    def set_exception(self, exc: BaseException, /) -> None:
        self._call(exc)


@dataclass(eq=False)
class Job:
    """Rows that run together: stateless sequences of one length with optional initial states
    [layers, rows, hidden] (zeros when absent), or one step for each of `sessions` (one row
    per session, state from the store), each checked against its caller's owner id."""

    x: np.ndarray
    sessions: list[str] | None = None
    owners: list[str | None] | None = None  # per row; None: no ownership check
    step_ids: list[str | None] | None = None  # per row: the client's idempotency keys
    initial: dict[str, np.ndarray] | None = None
    future: Completion = field(init=False)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    def part(self, start: int, stop: int) -> Job:
        """Rows start..stop of this job, as a job of their own."""
        def rows(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else values[start:stop]

        return Job(self.x[start:stop], sessions=rows(self.sessions), owners=rows(self.owners),
                   step_ids=rows(self.step_ids),
                   initial=None if self.initial is None else
                   {name: value[:, start:stop] for name, value in self.initial.items()})

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])


class Batcher:
    """The queue and the loop for one model version. Start inside the running event loop."""

    def __init__(self, runner: Runner, store: StateStore, slots: asyncio.Semaphore,
                 options: BatcherOptions, metrics: Metrics, tracing: Tracing) -> None:
        self.runner = runner
        self.store = store
        self.options = options
        sig = runner.signature
        self.layout = StateLayout(runner.name, runner.version,
                                  tuple((s.input, s.layers, s.hidden) for s in sig.states))
        self._slots = slots
        label = (runner.name, str(runner.version))  # labelled once: labels() is costly per job
        self._depth_gauge = metrics.queue_depth.labels(*label)
        self._queue_seconds = metrics.queue_seconds.labels(*label)
        self._run_seconds = metrics.run_seconds.labels(*label)
        self._batch_rows = metrics.batch_rows.labels(*label)
        self._gather_seconds = metrics.store_seconds.labels(store.name, "gather")
        self._scatter_seconds = metrics.store_seconds.labels(store.name, "scatter")
        self._tracing = tracing
        self._queue: deque[Job] = deque()
        self._queued_rows = 0
        self._in_flight_sessions: set[str] = set()
        self._runs_in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name=f"batcher {runner.name}")

    # -- callers ---------------------------------------------------------------------------

    async def submit(self, job: Job) -> JobResult:
        """Queue a job and wait for its rows of the result. A job of more than max_batch rows
        is split into max_batch parts, which run side by side on the inference workers; for
        session rows, a part that could not run (queue full) fails only its own rows."""
        size = self.options.max_batch
        if job.rows <= size:
            return await self._submit_whole(job)
        parts = [job.part(at, at + size) for at in range(0, job.rows, size)]
        outcomes = await asyncio.gather(*(self._submit_whole(p) for p in parts),
                                        return_exceptions=True)
        return self._joined(parts, outcomes, stateful=job.sessions is not None)

    def _joined(self, parts: list[Job], outcomes: list[JobResult | BaseException],
                stateful: bool) -> JobResult:
        """One result from the results of a job's parts, in row order. A stateless job fails
        as a whole; a part of a session job that failed with an RnnServeError gives that error
        to each of its rows (zeros in y and states): the other parts' steps were applied."""
        sig = self.runner.signature
        results: list[JobResult] = []
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, JobResult):
                results.append(outcome)
            elif stateful and isinstance(outcome, RnnServeError):
                results.append(JobResult(
                    y=np.zeros((part.rows, part.steps, sig.output_size), np.float32),
                    states={s.input: np.zeros(s.shape(part.rows), np.float32)
                            for s in sig.states},
                    steps=[0] * part.rows, errors=[outcome] * part.rows))
            else:
                raise outcome
        joined = JobResult(y=np.concatenate([r.y for r in results]),
                           states={s.input: np.concatenate([r.states[s.input] for r in results],
                                                           axis=1) for s in sig.states})
        if stateful:
            joined.steps = [n for r in results for n in r.steps or ()]
            joined.errors = [e for r in results for e in r.errors or ()]
        return joined

    async def _submit_whole(self, job: Job) -> JobResult:
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        job.future = future
        self._admit(job)
        return await future

    def enqueue(self, job: Job, on_done: Callable[[JobResult | BaseException], None]) -> None:
        """Queue a job whose outcome (its rows of the result, or the error) goes to `on_done`,
        called from the event loop. Raises Unavailable at once when the queue is full."""
        job.future = CallbackCompletion(on_done)
        self._admit(job)

    @property
    def room(self) -> int:
        """Rows the queue takes now (0 while closing)."""
        return 0 if self._closing else max(0, self.options.max_queue - self._queued_rows)

    def overloaded(self) -> Unavailable:
        """The 503 a caller gets when the queue has no room for its rows."""
        if self._closing:
            return Unavailable("the server is shutting down", retry_after_s=1)
        return Unavailable(f"model {self.runner.name!r} has {self._queued_rows} rows waiting "
                           f"(limit {self.options.max_queue}); retry shortly", retry_after_s=1)

    def _admit(self, job: Job) -> None:
        if job.rows > self.room:
            raise self.overloaded()
        self._queue.append(job)
        self._queued_rows += job.rows
        self._idle.clear()
        self._wake.set()

    async def close(self) -> None:
        """Finish what is queued and in flight, then stop the loop."""
        self._closing = True
        await self._idle.wait()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._runs_in_flight == 0:
                    self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._slots.acquire()
            try:
                if (self._runs_in_flight and self.options.max_delay_s > 0
                        and self._queued_rows < self.options.max_batch):
                    await asyncio.sleep(self.options.max_delay_s)  # let the batch fill
                batch = self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                if self._queue:  # everything queued waits on a session already in flight
                    self._wake.clear()
                    await self._wake.wait()
                continue  # (or every queued job was cancelled: back to idle)
            self._runs_in_flight += 1
            asyncio.create_task(self._run_and_release(batch))

    def _take_batch(self) -> list[Job]:
        """The oldest eligible job, then every later job of the same length that fits, at
        most one step per session, never overtaking an earlier job of the same session."""
        batch: list[Job] = []
        kept: deque[Job] = deque()
        blocked: set[str] = set(self._in_flight_sessions)
        steps, rows = -1, 0
        for job in self._queue:
            if job.future.done():  # cancelled by its caller while queued
                self._queued_rows -= job.rows
                continue
            sessions = job.sessions or ()
            free = not blocked.intersection(sessions) if sessions else True
            fits = (free and steps in (-1, job.steps)
                    and (rows + job.rows <= self.options.max_batch or not batch))
            if fits:
                batch.append(job)
                steps, rows = job.steps, rows + job.rows
            else:
                kept.append(job)
            blocked.update(sessions)  # a kept job's later steps must not overtake it
        self._queue = kept
        self._queued_rows -= rows
        for job in batch:
            self._in_flight_sessions.update(job.sessions or ())
        self._depth_gauge.set(self._queued_rows)
        return batch

    async def _run_and_release(self, batch: list[Job]) -> None:
        try:
            with self._tracing.span(f"batch {self.runner.name}") as span:
                if span is not None:
                    span.set_attribute("rnnserve.model", self.runner.name)
                    span.set_attribute("rnnserve.version", self.runner.version)
                    span.set_attribute("rnnserve.rows", sum(j.rows for j in batch))
                await self._run(batch)
        except Exception as exc:  # never let a batch take the loop down
            log.exception("batch of %d jobs failed", len(batch))
            self._fail(batch, exc)
        finally:
            for job in batch:
                self._in_flight_sessions.difference_update(job.sessions or ())
            self._runs_in_flight -= 1
            self._slots.release()
            self._wake.set()

    @staticmethod
    def _fail(jobs: list[Job], exc: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    async def _run(self, batch: list[Job]) -> None:
        sig = self.runner.signature
        started = time.perf_counter()
        stateful = [j for j in batch if j.sessions]
        stateless = [j for j in batch if not j.sessions]
        ordered = stateful + stateless
        ids = [sid for j in stateful for sid in j.sessions or ()]
        gathered = None
        if ids:
            owners = [o for j in stateful for o in (j.owners or [None] * j.rows)]
            gathered = await self.store.gather(self.layout, ids, owners)
            self._gather_seconds.observe(time.perf_counter() - started)

        x = ordered[0].x if len(ordered) == 1 else np.concatenate([j.x for j in ordered])
        feeds: Tensors = {sig.input_name: x}
        for s in sig.states:
            parts = [gathered.states[s.input]] if gathered is not None else []
            for job in stateless:
                given = job.initial.get(s.input) if job.initial else None
                parts.append(given if given is not None
                             else np.zeros(s.shape(job.rows), np.float32))
            feeds[s.input] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

        for job in batch:
            self._queue_seconds.observe(started - job.enqueued)
        try:
            out = await self.runner.run(feeds)
        except RnnServeError as exc:
            if len(batch) == 1:
                raise
            log.warning("batch of %d failed (%s); running its jobs one by one", len(batch), exc)
            for job in batch:  # a failing row must not fail its neighbours
                try:
                    await self._run([job])
                except RnnServeError as single:
                    self._fail([job], single)
            return
        self._run_seconds.observe(time.perf_counter() - started)
        self._batch_rows.observe(x.shape[0])

        y = out[sig.output_name]
        written = None
        if gathered is not None:
            k = len(ids)
            new_states = {s.input: out[s.output][:, :k] for s in sig.states}
            step_ids = [t for j in stateful for t in (j.step_ids or [None] * j.rows)]
            scattering = time.perf_counter()
            written = await self.store.scatter(gathered, new_states, [x.shape[1]] * k, y[:k],
                                               step_ids)
            self._scatter_seconds.observe(time.perf_counter() - scattering)
        retry: list[Job] = []
        offset = 0
        for job in ordered:
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            if job.future.done():
                continue
            result = JobResult(y=y[rows], states={s.input: out[s.output][:, rows]
                                                  for s in sig.states})
            if job.sessions and written is not None:
                conflict = written.conflict[rows]
                if any(conflict) and job.rows == 1:  # another replica stepped it: run again
                    retry.append(job)
                    continue
                errors = [e or (StepConflict("the session changed during this step (another "
                                             "replica); retry it", retry_after_s=0) if c else None)
                          for e, c in zip(written.errors[rows], conflict, strict=True)]
                replayed = written.replayed[rows]
                if any(r is not None for r in replayed):
                    result.y = result.y.copy()
                    for i, r in enumerate(replayed):
                        if r is not None:  # applied before: its recorded outputs, not rerun
                            result.y[i] = r[0]
                result.steps, result.errors = written.steps[rows], errors
            job.future.set_result(result)
        if retry:  # rerun on the other writer's state, before anything newer
            self._queue.extendleft(reversed(retry))
            self._queued_rows += sum(j.rows for j in retry)
            self._depth_gauge.set(self._queued_rows)

