"""What the batcher queues and answers: jobs, their results, and how a result reaches its
caller. Shared by the queue (batcher.py), the mechanics of a batch (batch.py) and the step
entrance (steps.py), so none of them imports another for its types."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from rnnserve.engine.signature import Signature
from rnnserve.errors import RnnServeError

log = logging.getLogger("rnnserve.batcher")
T = TypeVar("T")


@dataclass
class JobResult:
    """One job's rows of the batch output: y [rows, time, out] and final states
    [layers, rows, hidden]; for session rows, each session's timesteps after the step
    (`steps`) or the error that row met (`errors`; its y row is then meaningless). A row whose
    session another writer changed meanwhile has a StepConflict: it was not applied."""

    y: np.ndarray
    states: dict[str, np.ndarray]
    steps: list[int] | None = None
    errors: list[RnnServeError | None] | None = None


class Completion(Protocol):
    """How a job's outcome reaches its caller: an asyncio.Future (`Batcher.submit`), a
    CallbackCompletion (`Batcher.enqueue`), or a part of a job split past max_batch."""

    def done(self) -> bool: ...
    def set_result(self, result: JobResult, /) -> None: ...
    def set_exception(self, exc: BaseException, /) -> None: ...


class CommitGate(Protocol):
    """Where a session job's steps meet their commit point (the step entrance's answers):
    `commit(start, stop)` is called once its rows start..stop (counted in the job as it was
    enqueued, before any split) are about to be written, and returns those of them (counted
    from `start`) whose steps were withdrawn: the store must write nothing for them."""

    def commit(self, start: int, stop: int, /) -> list[int]: ...


Outcome = JobResult | BaseException
OnDone = Callable[[Outcome], None]
OnPart = Callable[..., None]
"""`on_part(outcome, start=..., stop=...)`: one part's outcome and its rows in the whole job."""


class CallbackCompletion:
    """Calls back from the batch's own completion instead of waking an awaiting task: a caller
    with hundreds of one-step messages in flight (the step entrance) saves a future, a task
    switch and a coroutine frame per job. A callback that raises is logged; it never fails the
    batch's other rows."""

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: OnDone) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def _call(self, outcome: Outcome) -> None:
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
    holders: list[int | None] | None = None  # per row: the stream's attach (None: no check)
    initial: dict[str, np.ndarray] | None = None
    keep_states: bool = True  # False: the caller needs no final states (most session steps)
    gate: CommitGate | None = None  # None: no step of the job can be withdrawn (the stream)
    traces: tuple[Any, ...] = ()  # span contexts of the requests served (tracing on)
    offset: int = 0  # a part's first row in the job its gate knows
    future: Completion = field(init=False)
    enqueued: float = field(default_factory=time.perf_counter)

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps(self) -> int:
        return int(self.x.shape[1])

    def part(self, start: int, stop: int) -> Job:
        """Rows start..stop of this job, as a job of their own."""
        def rows(values: list[T] | None) -> list[T] | None:
            return None if values is None else values[start:stop]

        return Job(self.x[start:stop], sessions=rows(self.sessions), owners=rows(self.owners),
                   step_ids=rows(self.step_ids), holders=rows(self.holders),
                   keep_states=self.keep_states, gate=self.gate, offset=self.offset + start,
                   traces=self.traces,
                   initial=None if self.initial is None else
                   {name: value[:, start:stop] for name, value in self.initial.items()})


class JoinedParts:
    """The parts of a job split past max_batch (or past the queue's room), answered as one to
    a caller that awaits the whole (`Batcher.submit`):
    when every part is done, the caller's completion gets one result in row order. A stateless
    job fails as a whole; a part of a session job that failed with an RnnServeError gives that
    error to each of its rows (zeros in y and states): the other parts' steps were applied."""

    def __init__(self, sig: Signature, parts: list[Job], whole: Completion) -> None:
        self._sig = sig
        self._parts = parts
        self._whole = whole
        self._outcomes: list[Outcome | None] = [None] * len(parts)
        self._left = len(parts)

    def completion(self, index: int) -> Completion:
        return _PartCompletion(self, index)

    def _done(self, index: int, outcome: Outcome) -> None:
        if self._outcomes[index] is not None:
            return
        self._outcomes[index] = outcome
        self._left -= 1
        if self._left or self._whole.done():
            return
        try:
            joined = self._join()
        except BaseException as exc:  # a stateless part failed: the whole job fails
            self._whole.set_exception(exc)
            return
        self._whole.set_result(joined)

    def _join(self) -> JobResult:
        sig = self._sig
        stateful = self._parts[0].sessions is not None
        states = sig.states if self._parts[0].keep_states else ()
        results: list[JobResult] = []
        for part, outcome in zip(self._parts, self._outcomes, strict=True):
            if isinstance(outcome, JobResult):
                results.append(outcome)
            elif stateful and isinstance(outcome, RnnServeError):
                results.append(JobResult(
                    y=np.zeros((part.rows, part.steps, sig.output_size), np.float32),
                    states={s.input: np.zeros(s.shape(part.rows), np.float32)
                            for s in states},
                    steps=[0] * part.rows, errors=[outcome] * part.rows))
            else:
                assert outcome is not None
                raise outcome
        joined = JobResult(y=np.concatenate([r.y for r in results]),
                           states={s.input: np.concatenate([r.states[s.input] for r in results],
                                                           axis=1) for s in states})
        if stateful:
            joined.steps = [n for r in results for n in r.steps or ()]
            joined.errors = [e for r in results for e in r.errors or ()]
        return joined


class _PartCompletion:
    """One part's completion: done when the caller gave up on the whole (a cancelled future),
    so the queue drops the part instead of running it."""

    __slots__ = ("_index", "_joined", "_finished")

    def __init__(self, joined: JoinedParts, index: int) -> None:
        self._joined = joined
        self._index = index
        self._finished = False

    def done(self) -> bool:
        return self._finished or self._joined._whole.done()

    def set_result(self, result: JobResult, /) -> None:
        self._finished = True
        self._joined._done(self._index, result)

    def set_exception(self, exc: BaseException, /) -> None:
        self._finished = True
        self._joined._done(self._index, exc)
