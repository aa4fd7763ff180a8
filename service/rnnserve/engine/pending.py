"""What a session step is while it waits: its inputs, its answer's shape, and the phases of a
step whose caller may withdraw it at a deadline. Shared by the entrance (steps.py), which moves
steps through the phases, and the sessions (sessions.py), which create and await them.

A watched step (one whose caller awaits it with a deadline: REST, the gateway, KServe v2)
goes WAITING (in the entrance, behind its session's earlier steps or the turn) → SUBMITTED (in
a batcher job) → COMMITTED (its batch reached the state write: from here on it is applied
unless the store reports otherwise, and it can no longer be withdrawn). Until COMMITTED the
caller may withdraw it (→ WITHDRAWN): the store then writes nothing for it. The WebSocket
stream's steps are not watched (UNWATCHED): they cost no bookkeeping."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, overload

import numpy as np

from rnnserve.errors import InvalidInput, RnnServeError

UNWATCHED, WAITING, SUBMITTED, COMMITTED, WITHDRAWN = range(5)
"""A PendingStep's phases (plain ints: compared on every batch)."""


class StepResult(NamedTuple):
    """A step's outputs [time, out], the session's timesteps after it, and its state
    [layers, 1, hidden] (empty when the step came through the entrance). A tuple: made for
    every streamed step."""

    outputs: np.ndarray
    steps: int
    states: dict[str, np.ndarray]


StepOutcome = StepResult | RnnServeError

_NO_STATES: dict[str, np.ndarray] = {}


class StepRows(Sequence[StepOutcome]):
    """The outcomes of many rows that were all applied, with no states asked for (a gateway's
    bulk steps), kept as the batch's arrays: outputs [rows, time, out] and timesteps [rows].
    A StepResult per row costs more than the row's share of the run; a reader that knows this
    type takes the arrays whole, any other reads it as the list of StepResults it stands for."""

    __slots__ = ("outputs", "steps")

    def __init__(self, outputs: np.ndarray, steps: np.ndarray) -> None:
        self.outputs = outputs
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    @overload
    def __getitem__(self, index: int) -> StepOutcome: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[StepOutcome]: ...

    def __getitem__(self, index: int | slice) -> StepOutcome | Sequence[StepOutcome]:
        if isinstance(index, slice):
            return StepRows(self.outputs[index], self.steps[index])
        return StepResult(self.outputs[index], int(self.steps[index]), _NO_STATES)

    @staticmethod
    def joined(parts: Sequence[StepRows]) -> StepRows:
        """Parts of one step's rows, in row order, as one."""
        if len(parts) == 1:
            return parts[0]
        return StepRows(np.concatenate([p.outputs for p in parts]),
                        np.concatenate([p.steps for p in parts]))


def joined_parts(parts: list[tuple[int, Sequence[StepOutcome]]]) -> Sequence[StepOutcome]:
    """A step's rows from its parts (each: its first row, its outcomes), in row order: one
    StepRows when every part is one."""
    parts.sort(key=lambda part: part[0])
    if all(type(rows) is StepRows for _, rows in parts):
        return StepRows.joined([rows for _, rows in parts])  # type: ignore[misc]
    return [outcome for _, rows in parts for outcome in rows]


def all_applied(outcomes: Sequence[StepOutcome]) -> bool:
    """Whether every row was applied (a StepRows always was)."""
    return type(outcomes) is StepRows or all(
        map(isinstance, outcomes, itertools.repeat(StepResult)))
StepsDone = Callable[[Sequence[StepOutcome]], None]
"""Called once, from the event loop, with one outcome per row of a PendingStep."""


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


class ArrayInputs:
    """The StepDecoder of steps whose inputs are float32 arrays [time, features] already but
    not yet checked (a REST step): stacking them is their decoding, and the entrance checks
    shapes, limits and finiteness for the whole turn at once instead of per request."""

    def decode_many(self, items: list[object]) -> tuple[np.ndarray | None, set[int]]:
        try:
            return np.stack(items).astype(np.float32, copy=False), set()  # type: ignore[arg-type]
        except (ValueError, TypeError):  # not one shape
            return None, set(range(len(items)))

    def decode_one(self, item: object, what: str) -> np.ndarray:
        return np.asarray(item, dtype=np.float32)


ARRAYS = ArrayInputs()


@dataclass(slots=True, eq=False)
class PendingStep:
    """One step for each of `sessions` (row i steps sessions[i]), entering together. `inputs`
    is a checked float32 array [rows, time, features]; or, with a `decoder`, the one row's
    inputs as they came off the wire. Results carry the new states only when asked: slicing
    them costs a dict per step, and only a v2 sequence step returns them. A step whose caller
    awaits it with a deadline is watched (`phase`), so that it can be withdrawn."""

    sessions: list[str]
    owner: str
    inputs: object
    step_ids: list[str | None] | None
    done: StepsDone
    decoder: StepDecoder | None = None
    retries: int = 0
    with_states: bool = False  # each result carries its session's new state (v2 sequences)
    phase: int = UNWATCHED  # where a watched step stands (see the phases above)
    holder: int | None = None  # a streamed step: the attach its connection holds (one row)
    trace: Any = None  # the span context of its request (tracing on): its batch links to it

    @property
    def rows(self) -> int:
        return len(self.sessions)


MAX_STEP_ID = 128
"""The longest step id, in characters."""


def check_step_id(step_id: object) -> None:
    if step_id is not None and (not isinstance(step_id, str)
                                or not 0 < len(step_id) <= MAX_STEP_ID):
        raise InvalidInput(f"step_id must be a string of 1 to {MAX_STEP_ID} characters")
