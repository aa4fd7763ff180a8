"""Coalesce single steps of many sessions into one batcher job per event-loop turn.

A streaming client sends one timestep per message, and hundreds of connections deliver theirs
in the same turn of the event loop. As one job each, every step would pay for its own array,
checks, job record and result slicing in Python; collected until the loop turns (`call_soon`),
they become one job of many sessions, converted from JSON lists and checked as one array, the
way a gateway request is. The batcher still decides when and with what else it runs.

Order: a session has at most one collected step in flight; its later steps wait here, in
arrival order, until that one is answered. Steps with different numbers of
timesteps form one job per length. Items that fit no shape (ragged, empty, wrong width) or hold
non-numbers fall back to a job each, checked one by one, so each gets its own precise error
and no item fails its neighbours."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rnnserve.engine.batcher import Batcher, Job, JobResult
from rnnserve.engine.runner import Runner
from rnnserve.engine.tensors import holds_non_numbers
from rnnserve.errors import InferenceFailed, RnnServeError, StepConflict

log = logging.getLogger("rnnserve.collector")

StepOutcome = Any  # StepResult | RnnServeError, typed by the caller (sessions.py)
CheckOne = Callable[[Any], np.ndarray]  # one item's inputs → [1, time, features], or raises
MakeResult = Callable[[np.ndarray, int, dict[str, np.ndarray]], Any]  # StepResult(y, n, {})
_NO_STATES: dict[str, np.ndarray] = {}  # a collected step reports no states: one shared {}

_MAX_CONFLICT_RETRIES = 8


@dataclass(slots=True)
class PendingStep:
    """One session's step: inputs as they came off the wire (nested lists), or an array
    [time, features] already checked (a REST step)."""

    session_id: str
    owner: str
    inputs: Any
    step_id: str | None
    done: Callable[[StepOutcome], None]
    retries: int = 0


class StepCollector:
    """The collector of one model version; created by Sessions, one per runner."""

    def __init__(self, runner: Runner, batcher: Batcher, max_timesteps: int,
                 check_one: CheckOne, make_result: MakeResult) -> None:
        sig = runner.signature
        self._features = sig.input_size
        self.batcher = batcher
        self._max_rows = batcher.options.max_batch
        self._max_timesteps = max_timesteps
        self._check_one = check_one
        self._make_result = make_result
        self._waiting: deque[PendingStep] = deque()
        self._in_flight: set[str] = set()
        self._scheduled = False

    def add(self, step: PendingStep) -> None:
        self._waiting.append(step)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._waiting:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    # -- forming jobs ----------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        ready: list[PendingStep] = []
        held: deque[PendingStep] = deque()
        blocked = self._in_flight.copy()
        for step in self._waiting:
            if step.session_id in blocked:
                held.append(step)  # behind an earlier step of its session
            else:
                ready.append(step)
            blocked.add(step.session_id)
        self._waiting = held
        for start in range(0, len(ready), self._max_rows):
            self._submit(ready[start:start + self._max_rows])

    def _submit(self, steps: list[PendingStep]) -> None:
        x, odd = self._as_array(steps)
        if x is None and len(steps) > 1:  # not one shape: a job per number of timesteps
            by_length: dict[int, list[PendingStep]] = {}
            for step in steps:
                length = len(step.inputs) if isinstance(step.inputs, list | np.ndarray) else -1
                by_length.setdefault(length, []).append(step)
            if len(by_length) > 1:
                for group in by_length.values():
                    self._submit(group)
                return
        if odd:  # the items that need a check of their own, each its own job
            for i in sorted(odd):
                self._submit_one(steps[i])
            if x is None:
                return
            keep = [i for i in range(len(steps)) if i not in odd]
            steps, x = [steps[i] for i in keep], x[keep]
            if not steps:
                return
        assert x is not None
        room = self.batcher.room
        if room < len(steps):  # the queue is (nearly) full: the rest get 503, unchanged
            error = self.batcher.overloaded()
            for step in steps[room:]:
                _answer(step, error)
            steps, x = steps[:room], x[:room]
            if not steps:
                return
        for step in steps:
            self._in_flight.add(step.session_id)
        job = Job(x, sessions=[s.session_id for s in steps], owners=[s.owner for s in steps],
                  step_ids=[s.step_id for s in steps])
        try:
            self.batcher.enqueue(job, lambda outcome: self._finish(steps, outcome))
        except RnnServeError as exc:  # the queue is full or the server is stopping
            self._finish(steps, exc)

    def _as_array(self, steps: list[PendingStep]) -> tuple[np.ndarray | None, set[int]]:
        """The items' inputs as one float32 array [items, time, features], and the indexes of
        items that need a check of their own (not finite, not numbers, another shape); None
        and every index when the items do not share a shape."""
        everyone = set(range(len(steps)))
        inputs = [s.inputs for s in steps]
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # too large → inf → not finite
                x = np.array(inputs, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):
            return None, everyone
        if (x.ndim != 3 or x.shape[2] != self._features or x.shape[1] == 0
                or x.shape[1] > self._max_timesteps):
            return None, everyone
        odd: set[int] = set()
        numpy_too = orjson.OPT_SERIALIZE_NUMPY  # a REST step's inputs are an array already
        if holds_non_numbers(orjson.dumps(inputs, option=numpy_too)):
            odd.update(i for i, value in enumerate(inputs)
                       if holds_non_numbers(orjson.dumps(value, option=numpy_too)))
        finite = np.isfinite(x).all(axis=(1, 2))
        if not finite.all():
            odd.update(np.flatnonzero(~finite).tolist())
        return x, odd

    def _submit_one(self, step: PendingStep) -> None:
        try:
            x3 = self._check_one(step.inputs)
        except RnnServeError as exc:
            _answer(step, exc)
            return
        self._in_flight.add(step.session_id)
        job = Job(x3, sessions=[step.session_id], owners=[step.owner], step_ids=[step.step_id])
        try:
            self.batcher.enqueue(job, lambda outcome: self._finish([step], outcome))
        except RnnServeError as exc:
            self._finish([step], exc)

    # -- answering -------------------------------------------------------------------------

    def _finish(self, steps: list[PendingStep], outcome: JobResult | BaseException) -> None:
        for step in steps:
            self._in_flight.discard(step.session_id)
        try:
            if isinstance(outcome, BaseException):
                error = (outcome if isinstance(outcome, RnnServeError)
                         else InferenceFailed(f"the step failed: {outcome}"))
                for step in steps:
                    _answer(step, error)
                return
            assert outcome.steps is not None and outcome.errors is not None
            y, counts, errors = outcome.y, outcome.steps, outcome.errors
            retry: list[PendingStep] = []
            make = self._make_result
            for step, row, count, err in zip(steps, y, counts, errors, strict=True):
                if err is None:
                    try:
                        step.done(make(row, count, _NO_STATES))
                    except Exception:  # a caller's callback never costs its neighbours
                        log.exception("answering a step of session %s failed",
                                      step.session_id)
                elif isinstance(err, StepConflict) and step.retries < _MAX_CONFLICT_RETRIES:
                    step.retries += 1  # another replica stepped it: run it on the new state
                    retry.append(step)
                else:
                    _answer(step, err)
            if retry:
                self._waiting.extendleft(reversed(retry))
        finally:
            self._schedule()


def _answer(step: PendingStep, outcome: StepOutcome) -> None:
    """Hand a step its outcome; a caller's callback that raises never costs its neighbours
    their answers."""
    try:
        step.done(outcome)
    except Exception:
        log.exception("answering a step of session %s failed", step.session_id)
