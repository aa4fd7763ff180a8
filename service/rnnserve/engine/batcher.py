"""Coalesce concurrent work for one model version into few ONNX Runtime calls: the queue and
its policy. What one batch does (gather, run, scatter) is batch.py's.

Jobs are stateless sequences (predict, v2 infer) or session steps. A batch holds jobs of one
length (timesteps), so no padding exists to leak into a result. Session jobs come only from the
step entrance (steps.py), which keeps at most one step of a session in flight until it is
answered, so a batch never holds two rows of one session and no job overtakes an earlier step
of its session: the batcher keeps no per-session record of its own (for a gateway's 1024
sessions that was four set operations over them per batch).

Policy: when a run slot is free and no run of this model is in flight, run at once (a lone
request never waits); while another run is in flight, wait up to `max_delay_s` for the batch to
fill towards `max_batch` rows. A job of more rows than max_batch is split here, whichever way it
was submitted, into parts that run side by side: `enqueue` answers each part as it finishes,
`submit` joins them into one result. The queue is bounded:
past `max_queue` rows, a stateless job gets 503; a session job is cut to the room left and its
other rows get 503, unchanged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from functools import partial

from rnnserve.engine.batch import BatchMechanics
from rnnserve.engine.jobs import CallbackCompletion, Job, JobResult, JoinedParts, OnPart
from rnnserve.engine.runner import Runner
from rnnserve.errors import RnnServeError, Unavailable
from rnnserve.metrics import Metrics
from rnnserve.state import StateLayout, StateStore
from rnnserve.tracing import Tracing

log = logging.getLogger("rnnserve.batcher")


@dataclass(frozen=True)
class BatcherOptions:
    max_batch: int
    max_delay_s: float
    max_queue: int


class Batcher:
    """The queue and the loop for one model version. Start inside the running event loop."""

    def __init__(self, runner: Runner, store: StateStore, slots: asyncio.Semaphore,
                 options: BatcherOptions, metrics: Metrics, tracing: Tracing) -> None:
        self.runner = runner
        self.options = options
        sig = runner.signature
        own = runner.settings  # a version's own idle timeout and cap, when model.json sets them
        self.layout = StateLayout(
            runner.name, runner.version, tuple((s.input, s.layers, s.hidden) for s in sig.states),
            ttl_s=own.session_ttl_s if own.is_declared("session_ttl_s") else None,
            max_sessions=own.max_sessions if own.is_declared("max_sessions") else None,
            rewarm_steps=own.rewarm_steps, features=sig.input_size)
        self._mechanics = BatchMechanics(runner, store, self.layout, metrics)
        self._slots = slots
        label = (runner.name, str(runner.version))  # labelled once: labels() is costly per job
        self._depth_gauge = metrics.queue_depth.labels(*label)
        self._queue_seconds = metrics.queue_seconds.labels(*label)
        self.tracing = tracing
        self._queue: deque[Job] = deque()
        self._queued_rows = 0
        self._runs_in_flight = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._closed_error: RnnServeError | None = None
        self._closed_reason = ("the server is shutting down: nothing was run or applied; "
                               "retry (another replica will answer)")
        self.last_active = time.perf_counter()  # a batch's start: model control's idleness
        self._task = asyncio.create_task(self._loop(), name=f"batcher {runner.name}")

    # -- callers ---------------------------------------------------------------------------

    async def submit(self, job: Job) -> JobResult:
        """Queue a job and wait for its rows of the result (a split job's parts joined)."""
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        if self.tracing.enabled and not job.traces:  # the caller's span: the batch links it
            job.traces = tuple(filter(None, (self.tracing.current(),)))
        parts = self._split(job)
        if len(parts) == 1:
            job.future = future
            self._queue_job(job)
        else:
            joined = JoinedParts(self.runner.signature, [part for part, _ in parts], future)
            for index, (part, _) in enumerate(parts):
                part.future = joined.completion(index)
            self._queue_parts(parts)
        return await future

    def enqueue(self, job: Job, on_part: OnPart) -> None:
        """Queue a job whose outcome goes to `on_part(outcome, start, stop)`, called from the
        event loop once for each part (rows start..stop) as soon as that part is done: one
        call for a job within max_batch. Raises Unavailable at once when the queue has no
        room at all."""
        parts = self._split(job)
        for part, start in parts:
            part.future = CallbackCompletion(partial(on_part, start=start,
                                                     stop=start + part.rows))
        self._queue_parts(parts)

    @property
    def room(self) -> int:
        """Rows the queue takes now (0 while closing)."""
        return 0 if self._closing else max(0, self.options.max_queue - self._queued_rows)

    def overloaded(self) -> RnnServeError:
        """The 503 a caller gets when the queue has no room for its rows (once closed for a
        retired version: its error)."""
        if self._closing and self._closed_error is not None:
            return self._closed_error
        if self._closing:
            return Unavailable(self._closed_reason, retry_after_s=1)
        return Unavailable(f"model {self.runner.name!r} has {self._queued_rows} rows waiting "
                           f"(limit {self.options.max_queue}): nothing was run or applied; "
                           "retry shortly", retry_after_s=1)

    def _split(self, job: Job) -> list[tuple[Job, int]]:
        """The job as parts of at most max_batch rows, each with its first row. Rows past the
        queue's room form a last part that `_queue_parts` answers 503 (a session job); a
        stateless job is refused whole."""
        size, room = self.options.max_batch, self.room
        if job.rows <= size and job.rows <= room:  # the common case: one part, the job
            return [(job, 0)]
        if job.rows > room and (job.sessions is None or room == 0):
            raise self.overloaded()
        fits = min(job.rows, room)
        starts = list(range(0, fits, size))
        parts = [(job.part(at, min(at + size, fits)), at) for at in starts]
        if fits < job.rows:
            parts.append((job.part(fits, job.rows), fits))
        return parts

    def _queue_parts(self, parts: list[tuple[Job, int]]) -> None:
        room = self.room
        for part, _ in parts:
            if part.rows <= room:
                self._queue_job(part)
                room -= part.rows
            else:  # the rows past the queue's room: 503, their sessions unchanged
                part.future.set_exception(self.overloaded())

    def _queue_job(self, job: Job) -> None:
        self._queue.append(job)
        self._queued_rows += job.rows
        self._idle.clear()
        self._wake.set()

    async def close(self, reason: str | None = None, error: RnnServeError | None = None
                    ) -> None:
        """Finish what is queued and in flight, then stop the loop; later work is refused
        with `reason` (the default: the server is shutting down), or with `error`."""
        self._closing = True
        self._closed_error = error
        if reason is not None:
            self._closed_reason = f"{reason}: nothing was run or applied"
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
            if not batch:  # every queued job was cancelled by its caller: back to idle
                self._slots.release()
                continue
            self._runs_in_flight += 1
            asyncio.create_task(self._run_and_release(batch))

    def _take_batch(self) -> list[Job]:
        """The oldest job, then every later job of the same length that fits."""
        batch: list[Job] = []
        kept: deque[Job] = deque()
        steps, rows = -1, 0
        for job in self._queue:
            if job.future.done():  # cancelled by its caller while queued
                self._queued_rows -= job.rows
                continue
            if steps in (-1, job.steps) and (rows + job.rows <= self.options.max_batch
                                              or not batch):
                batch.append(job)
                steps, rows = job.steps, rows + job.rows
            else:
                kept.append(job)
        self._queue = kept
        self._queued_rows -= rows
        self._depth_gauge.set(self._queued_rows)
        return batch

    async def _run_and_release(self, batch: list[Job]) -> None:
        started = self.last_active = time.perf_counter()
        for job in batch:
            self._queue_seconds.observe(started - job.enqueued)
        try:
            links = [trace for job in batch for trace in job.traces]
            with self.tracing.span(f"batch {self.runner.name}", links=links) as span:
                if span is not None:
                    span.set_attribute("rnnserve.model", self.runner.name)
                    span.set_attribute("rnnserve.version", self.runner.version)
                    span.set_attribute("rnnserve.rows", sum(j.rows for j in batch))
                await self._mechanics.run(batch)
        except Exception as exc:  # never let a batch take the loop down
            log.exception("batch of %d jobs failed", len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
        finally:
            self._runs_in_flight -= 1
            self._slots.release()
            self._wake.set()
