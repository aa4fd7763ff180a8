"""How a caller awaits a step it entered: one future per step, and where the call has a
deadline (deadlines.py), a watch on the call's one timer that withdraws the step at the
deadline if it has not reached its commit point (steps.py). The WebSocket stream does not
come here for its steps (it is called back, SessionStepper.step): no future, no timer per
message."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rnnserve.engine import deadlines
from rnnserve.engine.pending import COMMITTED, WAITING, PendingStep, StepOutcome, StepResult
from rnnserve.engine.steps import StepEntrance
from rnnserve.errors import NOT_APPLIED, RnnServeError, StepTimedOut


def unset(outcomes: Sequence[StepOutcome]) -> None:
    """A PendingStep's `done` until `_entered` sets it."""
    raise AssertionError("a PendingStep's done is set by _entered")


def _entered(entrance: StepEntrance, step: PendingStep) -> asyncio.Future[Sequence[StepOutcome]]:
    """Enter a step; the future gets its outcomes, one per row."""
    answer: asyncio.Future[Sequence[StepOutcome]] = asyncio.get_running_loop().create_future()

    def done(outcomes: Sequence[StepOutcome]) -> None:
        if not answer.done():  # (a withdrawn step's late answer from the entrance: dropped)
            answer.set_result(outcomes)

    step.done = done
    entrance.add(step)
    return answer


async def answered(entrance: StepEntrance, step: PendingStep) -> Sequence[StepOutcome]:
    """Enter a step and await its outcomes, one per row, within the call's deadline if it has
    one (deadlines.py). At the deadline a step short of its commit point (the state write) is
    withdrawn and answered StepTimedOut: not applied. A step past it is awaited to its real
    outcome, however late: a time-out never hides an applied step. Meanwhile the step owns the
    deadline, so the transport does not cancel the call under it; a caller cancelled anyway
    (a gRPC client gone) withdraws its step if it still can. No timer of its own: the call's
    deadline has one, and tells the steps that watch it."""
    deadline = deadlines.current()
    if deadline is None:
        return await _entered(entrance, step)
    loop = asyncio.get_running_loop()
    if loop.time() >= deadline.when:  # (a gateway's later steps, after a long first batch)
        return [_timed_out(deadline)] * step.rows
    step.phase = WAITING
    answer = _entered(entrance, step)

    def at_deadline() -> None:  # the call's own timer (CallDeadline) calls it
        if not answer.done() and entrance.withdraw(step):
            answer.set_result([_timed_out(deadline)] * step.rows)

    watching = deadline.watch(at_deadline)
    deadline.hold()
    try:
        return await answer
    except asyncio.CancelledError:
        entrance.withdraw(step)
        raise
    finally:
        deadline.unwatch(watching)
        deadline.release(committed=step.phase == COMMITTED)


def _timed_out(deadline: deadlines.CallDeadline) -> StepTimedOut:
    return StepTimedOut(f"the step was still waiting (behind its session's earlier steps, or "
                        f"in the queue) when the call's time limit of {deadline.limit_s:g} s "
                        f"ran out, and was withdrawn before its state write: {NOT_APPLIED}")


async def one_step(entrance: StepEntrance, step: PendingStep) -> StepResult:
    """Enter a step of one row and await its result (or raise its error)."""
    outcome = (await answered(entrance, step))[0]
    if isinstance(outcome, RnnServeError):
        raise outcome
    return outcome
