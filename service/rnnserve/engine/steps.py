"""The one entrance of a session step: every step (WebSocket, REST, the bulk gateway, KServe v2
sequences over HTTP and gRPC) becomes a PendingStep and joins its model version's StepEntrance.

A streaming client sends one timestep per message, and hundreds of connections deliver theirs
in the same turn of the event loop. As one batcher job each, every step would pay for its own
array, checks, job record and result slicing in Python; collected until the loop turns
(`call_soon`), they become one job of many sessions, decoded and checked as one array. The
batcher still decides when and with what else it runs (and splits past max_batch).

Inputs arrive either as float32 arrays already checked (REST, the gateway, v2) or undecoded,
with the transport's StepDecoder (the WebSocket stream's JSON lists): the entrance hands the
decoder every undecoded step of one turn at once, then checks shapes, limits and finiteness
itself. An item that fits no shape or holds a non-number is decoded and checked alone, so it
gets its own precise error and never fails its neighbours.

Order: a session has at most one collected step in flight; its later steps wait here, in
arrival order, until that one is answered. Conflicts: a row whose session another replica
stepped meanwhile (StepConflict) runs again on the new state, at most MAX_CONFLICT_RETRIES
times; this is the only place that retries."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sized
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Protocol

import numpy as np

from rnnserve.engine.batcher import Batcher
from rnnserve.engine.jobs import Job, JobResult, Outcome
from rnnserve.engine.limits import Limits
from rnnserve.engine.signature import Signature
from rnnserve.errors import InferenceFailed, InvalidInput, RnnServeError, StepConflict

log = logging.getLogger("rnnserve.steps")

MAX_CONFLICT_RETRIES = 8


class StepResult(NamedTuple):
    """A step's outputs [time, out], the session's timesteps after it, and its state
    [layers, 1, hidden] (empty when the step came through the entrance). A tuple: made for
    every streamed step."""

    outputs: np.ndarray
    steps: int
    states: dict[str, np.ndarray]


StepOutcome = StepResult | RnnServeError
StepsDone = Callable[[list[StepOutcome]], None]
"""Called once, from the event loop, with one outcome per row of a PendingStep."""

_NO_STATES: dict[str, np.ndarray] = {}  # an entrance step reports no states: one shared {}


class StepDecoder(Protocol):
    """A transport's way from its undecoded step inputs to float32 (the engine holds no wire
    format). `decode_many` gets the inputs of every undecoded step of one turn at once."""

    def decode_many(self, items: list[object]) -> tuple[np.ndarray | None, set[int]]:
        """The items as one float32 array [items, ...] and the indexes of items that hold
        something that is not a number; None (and every index) when they share no shape."""
        ...

    def decode_one(self, item: object, what: str) -> np.ndarray:
        """One item as a float32 array, or InvalidInput saying what is wrong with it."""
        ...


@dataclass(slots=True, eq=False)
class PendingStep:
    """One step for each of `sessions` (row i steps sessions[i]), entering together. `inputs`
    is a checked float32 array [rows, time, features]; or, with a `decoder`, the one row's
    inputs as they came off the wire. Results carry the new states only when asked: slicing
    them costs a dict per step, and only a v2 sequence step returns them."""

    sessions: list[str]
    owner: str
    inputs: object
    step_ids: list[str | None] | None
    done: StepsDone
    decoder: StepDecoder | None = None
    retries: int = 0
    with_states: bool = False  # each result carries its session's new state (v2 sequences)

    @property
    def rows(self) -> int:
        return len(self.sessions)


def check_step_id(step_id: object) -> None:
    if step_id is not None and (not isinstance(step_id, str) or not 0 < len(step_id) <= 128):
        raise InvalidInput("step_id must be a string of 1 to 128 characters")


Piece = tuple[list[PendingStep], np.ndarray]  # steps and their rows' inputs, checked


class StepEntrance:
    """The entrance of one model version; created by Sessions, one per batcher."""

    def __init__(self, sig: Signature, batcher: Batcher, limits: Limits) -> None:
        self._sig = sig
        self.batcher = batcher
        self._limits = limits
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
        arrays: list[PendingStep] = []
        undecoded: dict[StepDecoder, list[PendingStep]] = {}
        held: deque[PendingStep] = deque()
        blocked = self._in_flight.copy()
        for step in self._waiting:
            sessions = step.sessions
            if len(sessions) == 1:  # the stream's step: a set lookup, no set operation
                sid = sessions[0]
                if sid in blocked:
                    held.append(step)  # behind an earlier step of its session
                    continue
                blocked.add(sid)
            else:
                free = blocked.isdisjoint(sessions)
                blocked.update(sessions)
                if not free:
                    held.append(step)
                    continue
            decoder = step.decoder
            if decoder is None:
                arrays.append(step)
            else:
                alike = undecoded.get(decoder)
                if alike is None:
                    undecoded[decoder] = [step]
                else:
                    alike.append(step)
        self._waiting = held
        pieces: list[Piece] = [([step], _checked(step.inputs)) for step in arrays]
        for decoder, steps in undecoded.items():
            self._decode(decoder, steps, pieces)
        by_length: dict[int, list[Piece]] = {}
        for piece in pieces:
            by_length.setdefault(int(piece[1].shape[1]), []).append(piece)
        for group in by_length.values():
            if len(group) == 1:
                self._submit(*group[0])
            else:
                self._submit([s for steps, _ in group for s in steps],
                             np.concatenate([x for _, x in group]))

    def _decode(self, decoder: StepDecoder, steps: list[PendingStep], pieces: list[Piece]
                ) -> None:
        """Single-row steps with undecoded inputs → checked pieces; a bad step is answered."""
        x, odd = decoder.decode_many([s.inputs for s in steps])
        if x is not None and (x.ndim != 3 or x.shape[2] != self._sig.input_size
                              or x.shape[1] == 0 or x.shape[1] > self._limits.max_step_timesteps):
            x, odd = None, set(range(len(steps)))
        if x is None and len(steps) > 1:  # not one shape: try once per number of timesteps
            by_length: dict[int, list[PendingStep]] = {}
            for step in steps:
                length = len(step.inputs) if isinstance(step.inputs, Sized) else -1
                by_length.setdefault(length, []).append(step)
            if len(by_length) > 1:
                for group in by_length.values():
                    self._decode(decoder, group, pieces)
                return
        if x is not None:
            finite = np.isfinite(x).all(axis=(1, 2))
            if not finite.all():
                odd.update(np.flatnonzero(~finite).tolist())
        for i in sorted(odd):  # decoded and checked alone: its own precise error
            step = steps[i]
            try:
                one = decoder.decode_one(step.inputs, "inputs")
                self._limits.check_step_input(self._sig, one)
            except RnnServeError as exc:
                _answer(step, [exc])
                continue
            pieces.append(([step], one[None]))
        if x is None:
            return
        if odd:
            keep = [i for i in range(len(steps)) if i not in odd]
            if not keep:
                return
            steps, x = [steps[i] for i in keep], x[keep]
        pieces.append((steps, x))

    def _submit(self, steps: list[PendingStep], x: np.ndarray) -> None:
        sessions = [sid for s in steps for sid in s.sessions]
        self._in_flight.update(sessions)
        owners: list[str | None]
        if len(sessions) == len(steps):  # one row each: the stream's usual turn
            owners = [s.owner for s in steps]
            step_ids = [s.step_ids[0] if s.step_ids else None for s in steps]
        else:
            owners = [s.owner for s in steps for _ in s.sessions]
            step_ids = [t for s in steps for t in (s.step_ids or [None] * s.rows)]
        job = Job(x, sessions=sessions, owners=owners, step_ids=step_ids)
        try:
            self.batcher.enqueue(job, partial(self._finish, steps, x))
        except RnnServeError as exc:  # the queue is full or the server is stopping
            self._finish(steps, x, exc)

    # -- answering -------------------------------------------------------------------------

    def _finish(self, steps: list[PendingStep], x: np.ndarray, outcome: Outcome) -> None:
        for step in steps:
            self._in_flight.difference_update(step.sessions)
        try:
            if isinstance(outcome, BaseException):
                error = (outcome if isinstance(outcome, RnnServeError)
                         else InferenceFailed(f"the step failed: {outcome}"))
                for step in steps:
                    _answer(step, [error] * step.rows)
                return
            assert outcome.steps is not None and outcome.errors is not None
            if len(steps) == len(outcome.errors):  # one row each: the stream's usual turn
                self._answer_rows(steps, x, outcome)
                return
            y, counts, errors = outcome.y, outcome.steps, outcome.errors
            offset = 0
            for step in steps:
                start = offset
                offset += step.rows
                outcomes: list[StepOutcome] = []
                again: list[int] = []
                for i, k in enumerate(range(start, offset)):
                    failed = errors[k]
                    if failed is None:
                        outcomes.append(StepResult(
                            y[k], counts[k],
                            _states(outcome.states, k) if step.with_states else _NO_STATES))
                    else:
                        outcomes.append(failed)
                        if isinstance(failed, StepConflict):
                            again.append(i)
                if again and step.retries < MAX_CONFLICT_RETRIES:
                    self._retry(step, x[start:offset], outcomes, again)
                else:
                    _answer(step, outcomes)
        finally:
            self._schedule()

    def _answer_rows(self, steps: list[PendingStep], x: np.ndarray, outcome: JobResult) -> None:
        """`_finish` for steps of one row each, without a list per step to assemble."""
        assert outcome.steps is not None and outcome.errors is not None
        states = outcome.states
        for k, (step, row, count, failed) in enumerate(
                zip(steps, outcome.y, outcome.steps, outcome.errors, strict=True)):
            answer: StepOutcome
            if failed is None:
                answer = StepResult(row, count, _states(states, k) if step.with_states
                                    else _NO_STATES)
            elif isinstance(failed, StepConflict) and step.retries < MAX_CONFLICT_RETRIES:
                self._retry(step, x[k:k + 1], [failed], [0])
                continue
            else:
                answer = failed
            try:
                step.done([answer])
            except Exception:  # a caller's callback never costs its neighbours their answers
                log.exception("answering a step of session %s failed", step.sessions[0])

    def _retry(self, step: PendingStep, x: np.ndarray, outcomes: list[StepOutcome],
               again: list[int]) -> None:
        """Run the rows another replica stepped meanwhile again, on the new state, before
        anything newer of their sessions; the step is answered once, when they are done."""
        def merged(retried: list[StepOutcome]) -> None:
            for i, outcome in zip(again, retried, strict=True):
                outcomes[i] = outcome
            _answer(step, outcomes)

        ids = step.step_ids
        self._waiting.appendleft(PendingStep(
            [step.sessions[i] for i in again], step.owner, x[again],
            None if ids is None else [ids[i] for i in again], merged, None, step.retries + 1,
            step.with_states))


def _checked(inputs: object) -> np.ndarray:
    """A step without a decoder carries a checked array (its creator's promise)."""
    assert isinstance(inputs, np.ndarray)
    return inputs


def _states(states: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """One row's new state, [layers, 1, hidden] per tensor."""
    return {name: value[:, row:row + 1] for name, value in states.items()}


def _answer(step: PendingStep, outcomes: list[StepOutcome]) -> None:
    """Hand a step its outcomes; a caller's callback that raises never costs its neighbours
    their answers."""
    try:
        step.done(outcomes)
    except Exception:
        log.exception("answering a step of session %s failed", step.sessions[:1])
