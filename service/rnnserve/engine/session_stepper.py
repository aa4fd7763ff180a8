"""A session's steps resolved once, for callers that keep many in flight without a task each:
the WebSocket stream (inputs decoded with the other steps of the turn) and a v2 sequence on a
gRPC stream (checked arrays). Made by `Sessions.stepper` and `Sessions.sequence_stepper`."""

from __future__ import annotations

from rnnserve.engine.pending import (
    PendingStep,
    StepDecoder,
    StepResult,
    StepsDone,
    check_step_id,
)
from rnnserve.engine.step_waits import one_step, unset
from rnnserve.engine.steps import StepEntrance


class SessionStepper:
    """The steps of one session on its model version, resolved once, for a caller that keeps
    many in flight without a task each (the WebSocket stream): inputs as they came off the
    wire, decoded by the transport's decoder together with the other steps of the turn. Without
    a decoder (a v2 sequence on a gRPC stream, `Sessions.sequence_stepper`) the inputs are
    checked arrays [1, time, features], and no holder is claimed, as in `step_checked`."""

    __slots__ = ("_entrance", "_sessions", "_owner", "_decoder", "_holder", "_with_states")

    def __init__(self, entrance: StepEntrance, session_id: str, owner: str,
                 decoder: StepDecoder | None, holder: int | None,
                 with_states: bool = False) -> None:
        self._entrance = entrance
        self._sessions = [session_id]  # every step's `sessions`: one list, never changed
        self._owner = owner
        self._decoder = decoder
        self._holder = holder  # the attach this stream holds: steps after a newer one fail
        self._with_states = with_states  # each result carries the session's new state

    def step(self, inputs: object, step_id: str | None, done: StepsDone) -> None:
        """Queue one step; `done` gets [its outcome] from the event loop. A repeat of the
        session's recent step ids (its replay window) is replayed, not applied twice."""
        if step_id is None:
            self._entrance.add(PendingStep(self._sessions, self._owner, inputs, None, done,
                                           self._decoder, holder=self._holder,
                                           with_states=self._with_states))
            return
        check_step_id(step_id)
        self._entrance.add(PendingStep(self._sessions, self._owner, inputs, [step_id], done,
                                       self._decoder, holder=self._holder,
                                       with_states=self._with_states))

    async def step_async(self, inputs: object, step_id: str | None) -> StepResult:
        """`step`, awaited (one step at a time: the stream's plain ASGI path)."""
        check_step_id(step_id)
        return await one_step(self._entrance, PendingStep(
            self._sessions, self._owner, inputs, None if step_id is None else [step_id],
            unset, self._decoder, holder=self._holder))
