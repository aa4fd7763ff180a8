"""A session's steps resolved once, for callers that keep many in flight without a task each:
the WebSocket stream (inputs decoded with the other steps of the turn) and a v2 sequence on a
gRPC stream (checked arrays). Made by `Sessions.stepper` and `Sessions.sequence_stepper`."""

from __future__ import annotations

from collections.abc import Sequence

from rnnserve.engine.pending import (
    UNWATCHED,
    WAITING,
    PendingStep,
    StepDecoder,
    StepOutcome,
    StepResult,
    StepsDone,
    check_step_id,
)
from rnnserve.engine.statistics import ModelStats, now_ns
from rnnserve.engine.step_waits import one_step, unset
from rnnserve.engine.steps import StepEntrance
from rnnserve.errors import InvalidInput


class SessionStepper:
    """The steps of one session on its model version, resolved once, for a caller that keeps
    many in flight without a task each (the WebSocket stream): inputs as they came off the
    wire, decoded by the transport's decoder together with the other steps of the turn. Without
    a decoder (a v2 sequence on a gRPC stream, `Sessions.sequence_stepper`) the inputs are
    checked arrays [1, time, features], and no holder is claimed, as in `step_checked`.
    With `stats` each step counts as one request there (the WebSocket's messages); without,
    its caller counts (the gRPC stream, which sends a failed step the whole way again)."""

    __slots__ = ("_entrance", "_sessions", "_owner", "_decoder", "_holder", "_with_states",
                 "_stats")

    def __init__(self, entrance: StepEntrance, session_id: str, owner: str,
                 decoder: StepDecoder | None, holder: int | None,
                 with_states: bool = False, *, stats: ModelStats | None = None) -> None:
        self._entrance = entrance
        self._sessions = [session_id]  # every step's `sessions`: one list, never changed
        self._owner = owner
        self._decoder = decoder
        self._holder = holder  # the attach this stream holds: steps after a newer one fail
        self._with_states = with_states  # each result carries the session's new state
        self._stats = stats

    def step(self, inputs: object, step_id: str | None, done: StepsDone, *,
             watched: bool = False) -> PendingStep:
        """Queue one step; `done` gets [its outcome] from the event loop. A repeat of the
        session's recent step ids (its replay window) is replayed, not applied twice.
        `watched`: its caller may take it back at a deadline (`withdraw`)."""
        if self._stats is not None:
            done = _counted(done, self._stats, now_ns())
        if step_id is not None:
            try:
                check_step_id(step_id)
            except InvalidInput:
                if self._stats is not None:
                    self._stats.failed(now_ns())  # refused at once: no time to speak of
                raise
        step = PendingStep(self._sessions, self._owner, inputs,
                           None if step_id is None else [step_id], done, self._decoder,
                           holder=self._holder, with_states=self._with_states,
                           phase=WAITING if watched else UNWATCHED)
        self._entrance.add(step)
        return step

    def withdraw(self, step: PendingStep) -> bool:
        """Take back a watched step short of its commit point (StepEntrance.withdraw): True,
        it will not be applied and its caller answers it; False, its outcome comes."""
        return self._entrance.withdraw(step)

    async def step_async(self, inputs: object, step_id: str | None) -> StepResult:
        """`step`, awaited (one step at a time: the stream's plain ASGI path)."""
        started = now_ns()
        try:
            check_step_id(step_id)
            result = await one_step(self._entrance, PendingStep(
                self._sessions, self._owner, inputs, None if step_id is None else [step_id],
                unset, self._decoder, holder=self._holder))
        except Exception:
            if self._stats is not None:
                self._stats.failed(started)
            raise
        if self._stats is not None:
            self._stats.succeeded(started)
        return result


def _counted(done: StepsDone, stats: ModelStats, started: int) -> StepsDone:
    """`done`, counting its one step's outcome in `stats` first."""
    def counted(outcomes: Sequence[StepOutcome]) -> None:
        if isinstance(outcomes[0], StepResult):
            stats.succeeded(started)
        else:
            stats.failed(started)
        done(outcomes)

    return counted
