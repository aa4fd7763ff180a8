"""The mechanics of one batch: gather the sessions' states from the store, build the feeds,
run ONNX Runtime, scatter the new states back, and answer each job with its rows.

The queue and the policy that decide what forms a batch live in batcher.py; this module only
executes one. A row whose session another writer (replica) changed between gather and scatter
is answered with StepConflict and was not applied: the step entrance (steps.py) runs it again.
A row whose step id the store recognises as already applied gets its recorded outputs.

The scatter is the steps' commit point: just before it, each job's gate names the rows of
steps their callers withdrew (at a deadline), and those rows are marked as errors, so the store
writes nothing for them. A store failure before the scatter (the gather) leaves every step
unapplied and says so; a failure of the scatter itself cannot tell whether the write landed:
StepMayBeApplied."""

from __future__ import annotations

import logging
import time
from itertools import chain
from typing import Any

import numpy as np

from rnnserve.engine.jobs import Job, JobResult
from rnnserve.engine.runner import Runner, Tensors
from rnnserve.errors import (
    NOT_APPLIED,
    RnnServeError,
    StepConflict,
    StepMayBeApplied,
    StepTimedOut,
    StoreFull,
    Unavailable,
    not_applied,
)
from rnnserve.metrics import Metrics
from rnnserve.state import Gathered, StateLayout, StateStore, Written

log = logging.getLogger("rnnserve.batcher")


class BatchMechanics:
    """Runs batches of one model version."""

    def __init__(self, runner: Runner, store: StateStore, layout: StateLayout,
                 metrics: Metrics) -> None:
        self.runner = runner
        self.store = store
        self.layout = layout
        label = (runner.name, str(runner.version))  # labelled once: labels() is costly per job
        self._run_seconds = metrics.run_seconds.labels(*label)
        self._onnxruntime_seconds = metrics.onnxruntime_seconds.labels(*label)
        self._batch_rows = metrics.batch_rows.labels(*label)
        self._gather_seconds = metrics.store_seconds.labels(store.name, "gather")
        self._scatter_seconds = metrics.store_seconds.labels(store.name, "scatter")

    async def run(self, batch: list[Job]) -> None:
        """Run the jobs (session jobs first in the feed) and answer each. If ONNX Runtime fails
        on a batch of several jobs, each job runs alone, so a failing row fails only its job."""
        started = time.perf_counter()
        stateful = [j for j in batch if j.sessions]
        stateless = [j for j in batch if not j.sessions]
        ordered = stateful + stateless
        gathered = await self._gather(stateful, started) if stateful else None
        x = ordered[0].x if len(ordered) == 1 else np.concatenate([j.x for j in ordered])
        try:
            feeds = self._feeds(x, gathered, stateless)
            fed = time.perf_counter()
            out, runtime_s = await self.runner.run(feeds)
        except RnnServeError as exc:
            if len(batch) == 1:
                raise
            log.warning("batch of %d failed (%s); running its jobs one by one", len(batch), exc)
            for job in batch:
                try:
                    await self.run([job])
                except RnnServeError as single:
                    if not job.future.done():
                        job.future.set_exception(single)
            return
        ran = time.perf_counter()
        self._run_seconds.observe(ran - started)
        self._onnxruntime_seconds.observe(runtime_s)
        self._batch_rows.observe(x.shape[0])
        written = None
        if gathered is not None:
            _commit(stateful, gathered)
            written = await self._scatter(gathered, stateful, x, out)
        self._answer(ordered, out, written, gathered)
        waited = sum(j.rows * (started - j.enqueued) for j in ordered)
        self.runner.stats.ran(int(x.shape[0]), int(waited * 1e9), int((fed - started) * 1e9),
                              int((ran - fed) * 1e9), int((time.perf_counter() - ran) * 1e9))

    async def _gather(self, stateful: list[Job], started: float) -> Gathered:
        ids = _per_row(stateful, "sessions")
        owners = _per_row(stateful, "owners")
        holders = None
        if any(j.holders for j in stateful):  # streamed steps: fenced by their attach
            holders = _per_row(stateful, "holders")
        try:
            gathered = await self.store.gather(self.layout, ids, owners, holders)
        except Unavailable as exc:  # nothing is written before the scatter
            raise not_applied(exc) from exc
        self._gather_seconds.observe(time.perf_counter() - started)
        return gathered

    def _feeds(self, x: np.ndarray, gathered: Gathered | None, stateless: list[Job]) -> Tensors:
        """The sequence input and each state input: the gathered sessions' states, then each
        stateless job's initial states (zeros when it has none), on the batch axis."""
        sig = self.runner.signature
        feeds: Tensors = {sig.input_name: x}
        for s in sig.states:
            parts = [gathered.states[s.input]] if gathered is not None else []
            for job in stateless:
                given = job.initial.get(s.input) if job.initial else None
                parts.append(given if given is not None
                             else np.zeros(s.shape(job.rows), np.float32))
            feeds[s.input] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        return feeds

    async def _scatter(self, gathered: Gathered, stateful: list[Job], x: np.ndarray,
                       out: Tensors) -> Written:
        sig = self.runner.signature
        k = len(gathered.ids)
        new_states = {s.input: out[s.output][:, :k] for s in sig.states}
        step_ids = _per_row(stateful, "step_ids")
        scattering = time.perf_counter()
        try:
            # the sessions keep their last inputs (migration) only where the version says so
            kept = {"inputs": x[:k]} if self.layout.rewarm_steps else {}
            written = await self.store.scatter(gathered, new_states, [x.shape[1]] * k,
                                               out[sig.output_name][:k], step_ids, **kept)
        except StoreFull as exc:  # Redis refuses a script before its first write
            raise not_applied(exc) from exc
        except Exception as exc:  # sent, perhaps, and applied: nobody can tell
            reason = exc.message if isinstance(exc, RnnServeError) else repr(exc)
            raise StepMayBeApplied(f"{reason}; the state store failed while writing the "
                                   "step, so it may have been applied", retry_after_s=1
                                   ) from exc
        self._scatter_seconds.observe(time.perf_counter() - scattering)
        return written

    def _answer(self, ordered: list[Job], out: Tensors, written: Written | None,
                gathered: Gathered | None) -> None:
        sig = self.runner.signature
        y = out[sig.output_name]
        offset = 0
        for job in ordered:
            rows = slice(offset, offset + job.rows)
            offset += job.rows
            if job.future.done():
                continue
            result = JobResult(y=y[rows], states={s.input: out[s.output][:, rows]
                                                  for s in sig.states} if job.keep_states else {})
            if job.sessions and written is not None:
                _session_rows(result, written, rows, gathered)
            job.future.set_result(result)


def _per_row(jobs: list[Job], field: str) -> list[Any]:
    """The jobs' lists named `field` (None for a job without one), joined: one row each.
    A batch of one job (a bulk request's part) takes its list as it is, not row by row."""
    lists = [getattr(job, field) or [None] * job.rows for job in jobs]
    return list(lists[0]) if len(lists) == 1 else list(chain.from_iterable(lists))


def _commit(stateful: list[Job], gathered: Gathered) -> None:
    """The commit point of the batch's steps: rows of withdrawn steps become errors (the
    store skips rows with errors); every other step can no longer be withdrawn."""
    row = 0
    for job in stateful:
        gate = job.gate
        if gate is not None:
            for i in gate.commit(job.offset, job.offset + job.rows):
                gathered.errors[row + i] = StepTimedOut(f"withdrawn at its deadline; "
                                                        f"{NOT_APPLIED}")
        row += job.rows


def _session_rows(result: JobResult, written: Written, rows: slice,
                  gathered: Gathered | None) -> None:
    """A session job's rows of the scatter's outcome: steps, errors (a conflict becomes a
    StepConflict), and the recorded outputs of replayed steps in place of the run's; their
    states, if asked for, are the stored ones (the replayed step's: it is the latest)."""
    errors, conflict = written.errors[rows], written.conflict[rows]
    if True in conflict or errors.count(None) != len(errors):  # else: a pass per row saved
        errors = [e or (StepConflict("another replica kept changing the session between "
                                     f"this step's read and write; {NOT_APPLIED}",
                                     retry_after_s=0) if c else None)
                  for e, c in zip(errors, conflict, strict=True)]
    result.errors = errors
    replayed = written.replayed[rows]
    if replayed.count(None) != len(replayed):
        result.y = result.y.copy()
        result.states = {name: value.copy() for name, value in result.states.items()}
        for i, r in enumerate(replayed):
            if r is not None:  # applied before: its recorded outputs, not rerun
                result.y[i] = r[0]
                for name, value in result.states.items():
                    assert gathered is not None
                    value[:, i] = gathered.states[name][:, rows.start + i]
    result.steps = written.steps[rows]
