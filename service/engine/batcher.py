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
from dataclasses import dataclass, field

import numpy as np

from service.engine.runner import Runner, Tensors
from service.engine.state import SessionRecord, StateLayout, StateStore
from service.errors import RnnServeError, Unavailable
from service.metrics import Metrics

log = logging.getLogger("rnnserve.batcher")


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int
    max_delay_s: float
    max_queue: int


@dataclass
class JobResult:
    """One job's rows of the batch output: y [n, time, out], final states [layers, n, hidden],
    and for a session step its updated record."""

    y: np.ndarray
    states: dict[str, np.ndarray]
    record: SessionRecord | None = None


@dataclass(eq=False)
class Job:
    """Rows that run together: one session's step (n = 1) or a group of stateless sequences
    of one length with optional initial states [layers, n, hidden] (zeros when absent)."""

    x: np.ndarray
    session_id: str | None = None
    initial: dict[str, np.ndarray] | None = None
    step_id: str | None = None  # a client's idempotency key for a session step
    future: asyncio.Future[JobResult] = field(init=False)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])


class Batcher:
    """The queue and the loop for one model version. Start inside the running event loop."""

    def __init__(self, runner: Runner, store: StateStore, slots: asyncio.Semaphore,
                 options: BatcherOptions, metrics: Metrics) -> None:
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
        """Queue a job and wait for its rows of the result."""
        if self._closing:
            raise Unavailable("the server is shutting down", retry_after_s=1)
        if self._queued_rows + job.rows > self.options.max_queue:
            raise Unavailable(f"model {self.runner.name!r} has {self._queued_rows} rows waiting "
                              f"(limit {self.options.max_queue}); retry shortly",
                              retry_after_s=1)
        job.future = asyncio.get_running_loop().create_future()
        self._queue.append(job)
        self._queued_rows += job.rows
        self._idle.clear()
        self._set_depth()
        self._wake.set()
        return await job.future

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

    def _set_depth(self) -> None:
        self._depth_gauge.set(self._queued_rows)

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
        most one per session, never overtaking an earlier job of the same session."""
        batch: list[Job] = []
        kept: deque[Job] = deque()
        blocked: set[str] = set(self._in_flight_sessions)
        steps, rows = -1, 0
        for job in self._queue:
            if job.future.done():  # cancelled by its caller while queued
                self._queued_rows -= job.rows
                continue
            sid = job.session_id
            fits = (steps in (-1, job.steps) and rows + job.rows <= self.options.max_batch
                    and (sid is None or sid not in blocked))
            if not fits and not batch and rows == 0 and steps == -1 and sid not in blocked:
                fits = True  # an oversized job still runs (alone)
            if fits:
                batch.append(job)
                steps, rows = job.steps, rows + job.rows
                if sid is not None:
                    blocked.add(sid)
            else:
                kept.append(job)
                if sid is not None:
                    blocked.add(sid)  # its later steps must not overtake it
        self._queue = kept
        self._queued_rows -= rows
        for job in batch:
            if job.session_id is not None:
                self._in_flight_sessions.add(job.session_id)
        self._set_depth()
        return batch

    async def _run_and_release(self, batch: list[Job]) -> None:
        try:
            await self._run(batch)
        except Exception as exc:  # never let a batch take the loop down
            log.exception("batch of %d jobs failed", len(batch))
            self._fail(batch, exc)
        finally:
            for job in batch:
                if job.session_id is not None:
                    self._in_flight_sessions.discard(job.session_id)
            self._runs_in_flight -= 1
            self._slots.release()
            self._wake.set()

    @staticmethod
    def _replay(replayed: tuple[np.ndarray, int] | None,
                record: SessionRecord | None) -> JobResult:
        """A step that was applied already: its recorded outputs, nothing run again."""
        assert replayed is not None and record is not None
        outputs, steps = replayed
        record.steps = steps
        return JobResult(y=outputs[None], states={}, record=record)

    @staticmethod
    def _fail(jobs: list[Job], exc: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    async def _run(self, batch: list[Job]) -> None:
        sig = self.runner.signature
        started = time.perf_counter()
        sessions = [j for j in batch if j.session_id is not None]
        stateless = [j for j in batch if j.session_id is None]
        ordered = sessions + stateless
        gathered = (await self.store.gather(self.layout, [j.session_id or "" for j in sessions])
                    if sessions else None)

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

        records: list[SessionRecord | None] = [None] * len(sessions)
        errors: list[RnnServeError | None] = [None] * len(sessions)
        replayed: list[tuple[np.ndarray, int] | None] = [None] * len(sessions)
        retry: list[Job] = []
        if gathered is not None:
            k = len(sessions)
            new_states = {s.input: out[s.output][:, :k] for s in sig.states}
            y = out[sig.output_name]
            written = await self.store.scatter(
                gathered, new_states, [j.steps for j in sessions], [y[i] for i in range(k)],
                [j.step_id for j in sessions])
            records, errors, replayed = written.records, written.errors, written.replayed
            retry = [j for j, c in zip(sessions, written.conflict, strict=True) if c]

        offset = 0
        for i, job in enumerate(ordered):
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            if job.future.done() or job in retry:
                continue
            if i < len(sessions) and errors[i] is not None:
                job.future.set_exception(errors[i])  # type: ignore[arg-type]
                continue
            if i < len(sessions) and replayed[i] is not None:
                job.future.set_result(self._replay(replayed[i], records[i]))
                continue
            job.future.set_result(JobResult(
                y=out[sig.output_name][rows],
                states={s.input: out[s.output][:, rows] for s in sig.states},
                record=records[i] if i < len(sessions) else None,
            ))
        if retry:  # another replica stepped these sessions meanwhile: run them again, first
            self._queue.extendleft(reversed(retry))
            self._queued_rows += sum(j.rows for j in retry)
            self._set_depth()
