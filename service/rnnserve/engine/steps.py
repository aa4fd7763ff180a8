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
times; this is the only place that retries.

Withdrawal: a caller that awaits a step with a deadline (step_waits.py) may take it back
(`withdraw`) until the step reaches its commit point, the state write of its batch: while it
waits here, while its job is queued, and while its batch gathers and runs. At the commit point
the job's gate (`_JobAnswers.commit`) names the rows of withdrawn steps, which the batch marks
as errors so that the store writes nothing for them, and commits the others: from then on a
step is applied unless the store says otherwise, and its caller gets the real outcome."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import operator
from collections import deque
from collections.abc import Sequence, Sized

import numpy as np

from rnnserve.engine.batcher import Batcher
from rnnserve.engine.jobs import Job, Outcome
from rnnserve.engine.limits import Limits
from rnnserve.engine.pending import (
    COMMITTED,
    SUBMITTED,
    WAITING,
    WITHDRAWN,
    PendingStep,
    StepDecoder,
    StepOutcome,
    StepResult,
    StepRows,
    all_applied,
    joined_parts,
)
from rnnserve.engine.signature import Signature
from rnnserve.errors import InferenceFailed, RnnServeError, StepConflict

log = logging.getLogger("rnnserve.steps")

MAX_CONFLICT_RETRIES = 8
_NO_STATES: dict[str, np.ndarray] = {}  # an entrance step reports no states: one shared {}

Piece = tuple[list[PendingStep], np.ndarray]  # steps and their rows' inputs, checked
_OWNER = operator.attrgetter("owner")
_WITH_STATES = operator.attrgetter("with_states")
_HOLDER = operator.attrgetter("holder")
_PHASE = operator.attrgetter("phase")  # non-zero: a watched step


class StepEntrance:
    """The entrance of one model version; created by Sessions, one per batcher."""

    def __init__(self, sig: Signature, batcher: Batcher, limits: Limits) -> None:
        self._sig = sig
        self.batcher = batcher
        self._tracing = batcher.tracing
        self._limits = limits
        self._full = batcher.options.max_batch
        self._waiting: deque[PendingStep] = deque()
        self._in_flight: set[str] = set()
        self._scheduled = False

    def add(self, step: PendingStep) -> None:
        if self._tracing.enabled:  # in the caller's context: its span, for the batch's link
            step.trace = self._tracing.current()
        self._waiting.append(step)
        self._schedule()

    def withdraw(self, step: PendingStep) -> bool:
        """Take back a watched step before its commit point (the state write). True: it will
        not be applied, and the caller answers it (the entrance's own answer for it, if any,
        comes later and is to be dropped). False: it is committed or answered already, so
        its real outcome comes (or came) as usual."""
        phase = step.phase
        if phase == WAITING:
            try:
                self._waiting.remove(step)  # rare (a deadline passed): a scan is fine
            except ValueError:  # answered already, before it was submitted (bad inputs)
                return False
        elif phase != SUBMITTED:
            return phase == WITHDRAWN
        step.phase = WITHDRAWN
        return True

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
        last: StepDecoder | None = None  # the stream's turn: one decoder for every step
        alike: list[PendingStep] = arrays
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
            if decoder is not last:
                last = decoder
                alike = arrays if decoder is None else undecoded.setdefault(decoder, [])
            alike.append(step)
        self._waiting = held
        pieces: list[Piece] = [([step], _checked(step.inputs)) for step in arrays]
        for decoder, steps in undecoded.items():
            self._decode(decoder, steps, pieces)
        by_length: dict[int, list[Piece]] = {}
        for piece in pieces:
            if len(piece[1]) >= self._full:  # a full batch already (a gateway's request):
                self._submit(*piece)          # merging it would only copy, not batch more
                continue
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
        sessions = (steps[0].sessions if len(steps) == 1
                    else [sid for s in steps for sid in s.sessions])
        self._in_flight.update(sessions)
        owners: list[str | None]
        holders: list[int | None] | None = None
        if len(sessions) == len(steps):  # one row each: the stream's usual turn
            owners = list(map(_OWNER, steps))
            step_ids = [ids[0] if (ids := s.step_ids) else None for s in steps]
            holders = list(map(_HOLDER, steps))
        else:  # a gateway's rows: whole lists, not a Python step per row
            owners, step_ids = [], []
            for s in steps:
                owners.extend([s.owner] * s.rows)
                step_ids.extend(s.step_ids or [None] * s.rows)
        watched = any(map(_PHASE, steps))
        answers = _JobAnswers(self, steps, x, watched)
        job = Job(x, sessions=sessions, owners=owners, step_ids=step_ids,
                  holders=holders if holders and holders.count(None) != len(holders) else None,
                  keep_states=any(map(_WITH_STATES, steps)),
                  gate=answers if watched else None,
                  traces=tuple(s.trace for s in steps if s.trace is not None)
                  if self._tracing.enabled else ())
        try:
            self.batcher.enqueue(job, answers.part_done)
        except RnnServeError as exc:  # the queue is full or the server is stopping
            answers.part_done(exc, start=0, stop=job.rows)

    # -- answering -------------------------------------------------------------------------

    def _answer_rows(self, steps: list[PendingStep], x: np.ndarray, outcome: Outcome) -> None:
        """Answer steps of one row each from their rows of a part's outcome."""
        in_flight = self._in_flight
        if isinstance(outcome, BaseException):
            error = _as_step_error(outcome)
            for step in steps:
                in_flight.discard(step.sessions[0])
                _answer(step, [error])
            return
        assert outcome.steps is not None and outcome.errors is not None
        states = outcome.states
        for k, (step, row, count, failed) in enumerate(
                zip(steps, outcome.y, outcome.steps, outcome.errors, strict=True)):
            in_flight.discard(step.sessions[0])
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

    def _complete(self, step: PendingStep, x: np.ndarray,
                  outcomes: Sequence[StepOutcome]) -> None:
        """Every row of a step is answered: rerun the rows another writer overtook, or answer."""
        self._in_flight.difference_update(step.sessions)
        if step.retries < MAX_CONFLICT_RETRIES and not all_applied(outcomes):
            outcomes = list(outcomes)
            again = [i for i, o in enumerate(outcomes) if isinstance(o, StepConflict)]
            if again:
                self._retry(step, x, outcomes, again)
                return
        _answer(step, outcomes)

    def _retry(self, step: PendingStep, x: np.ndarray, outcomes: list[StepOutcome],
               again: list[int]) -> None:
        """Run the rows another replica stepped meanwhile again, on the new state, before
        anything newer of their sessions; the step is answered once, when they are done."""
        def merged(retried: Sequence[StepOutcome]) -> None:
            for i, outcome in zip(again, retried, strict=True):
                outcomes[i] = outcome
            _answer(step, outcomes)

        ids = step.step_ids
        self._waiting.appendleft(PendingStep(
            [step.sessions[i] for i in again], step.owner, x[again],
            None if ids is None else [ids[i] for i in again], merged, None, step.retries + 1,
            step.with_states, holder=step.holder))


class _JobAnswers:
    """The steps of one job, answered part by part as the batcher finishes each part (a job
    past max_batch runs as several): a step is answered once all its rows are."""

    __slots__ = ("_entrance", "_steps", "_x", "_starts", "_buffers", "_left", "_watched")

    def __init__(self, entrance: StepEntrance, steps: list[PendingStep], x: np.ndarray,
                 watched: bool = False) -> None:
        self._entrance = entrance
        self._steps = steps
        self._x = x
        self._starts: list[int] = []
        self._buffers: list[list[tuple[int, Sequence[StepOutcome]]] | None] = []
        self._left: list[int] = []
        if len(steps) != len(x):  # some step has several rows (a gateway's)
            self._starts = list(itertools.accumulate((s.rows for s in steps), initial=0))[:-1]
            self._buffers = [None] * len(steps)
            self._left = [s.rows for s in steps]
        self._watched: list[int] = []  # the indexes of watched steps (the job's gate)
        if watched:
            self._watched = [i for i, s in enumerate(steps) if s.phase]
            for i in self._watched:
                steps[i].phase = SUBMITTED

    def commit(self, start: int, stop: int) -> list[int]:
        """The job's gate: rows start..stop reach their state write now. Returns the rows
        (counted from `start`) of withdrawn steps, which must not be written; every other
        watched step there is committed and can no longer be withdrawn. A step of several
        rows split across parts is withdrawn whole or not at all."""
        withdrawn: list[int] = []
        starts, steps = self._starts, self._steps
        for i in self._watched:
            step = steps[i]
            first = starts[i] if starts else i
            last = first + step.rows
            if first >= stop or last <= start:
                continue
            if step.phase == WITHDRAWN:
                withdrawn.extend(range(max(first, start) - start, min(last, stop) - start))
            else:
                step.phase = COMMITTED
        return withdrawn

    def part_done(self, outcome: Outcome, start: int, stop: int) -> None:
        entrance = self._entrance
        try:
            if not self._starts:
                entrance._answer_rows(self._steps[start:stop], self._x[start:stop], outcome)
            else:
                self._fill(outcome, start, stop)
        finally:
            entrance._schedule()

    def _fill(self, outcome: Outcome, start: int, stop: int) -> None:
        """Rows start..stop of the job into the buffers of the steps they belong to."""
        starts, steps = self._starts, self._steps
        i = bisect.bisect_right(starts, start) - 1
        while i < len(steps) and starts[i] < stop:
            step, first = steps[i], starts[i]
            lo, hi = max(start, first), min(stop, first + step.rows)
            rows = _outcomes(outcome, lo - start, hi - start, step.with_states)
            parts = self._buffers[i]
            if parts is None and hi - lo == step.rows:  # the whole step in this part
                self._entrance._complete(step, self._x[first:first + step.rows], rows)
            else:
                if parts is None:
                    parts = self._buffers[i] = []
                parts.append((lo - first, rows))
                self._left[i] -= hi - lo
                if self._left[i] == 0:
                    self._entrance._complete(step, self._x[first:first + step.rows],
                                             joined_parts(parts))
            i += 1


def _outcomes(outcome: Outcome, start: int, stop: int,
              with_states: bool) -> Sequence[StepOutcome]:
    """Rows start..stop of a part's outcome as step outcomes."""
    if isinstance(outcome, BaseException):
        return [_as_step_error(outcome)] * (stop - start)
    assert outcome.steps is not None and outcome.errors is not None
    y, counts, errors = outcome.y[start:stop], outcome.steps[start:stop], outcome.errors[start:stop]
    if not with_states and not any(errors):  # a gateway's rows, all applied: arrays, kept
        return StepRows(y, np.asarray(counts))
    return [StepResult(row, n, _states(outcome.states, start + k) if with_states
                       else _NO_STATES) if failed is None else failed
            for k, (row, n, failed) in enumerate(zip(y, counts, errors, strict=True))]


def _as_step_error(exc: BaseException) -> RnnServeError:
    return exc if isinstance(exc, RnnServeError) else InferenceFailed(f"the step failed: {exc}")


def _checked(inputs: object) -> np.ndarray:
    """A step without a decoder carries a checked array (its creator's promise)."""
    assert isinstance(inputs, np.ndarray)
    return inputs


def _states(states: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    """One row's new state, [layers, 1, hidden] per tensor."""
    return {name: value[:, row:row + 1] for name, value in states.items()}


def _answer(step: PendingStep, outcomes: Sequence[StepOutcome]) -> None:
    """Hand a step its outcomes; a caller's callback that raises never costs its neighbours
    their answers."""
    try:
        step.done(outcomes)
    except Exception:
        log.exception("answering a step of session %s failed", step.sessions[:1])
