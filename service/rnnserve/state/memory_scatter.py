"""The memory store's scatter: a batch's new states, step counts and recorded outputs written
back to the slab in one fancy-indexed write per array, row by row only for the rare rows that
need it (deleted, reset or taken over by a newer connection while their step ran, or step ids
found in the session's replay window: step_history). A mixin of MemoryStateStore (memory.py),
which holds the slabs and the clock."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnserve.errors import RnnServeError, SessionNotFound
from rnnserve.state.base import Gathered, Written, moved, replaced
from rnnserve.state.memory_bulk import SLOT_BITS
from rnnserve.state.slab import Slab, block, write_rows
from rnnserve.state.step_history import StepHistory


class Scatter:
    """`scatter` for MemoryStateStore; the attributes below are the store's."""

    _slabs: list[Slab]
    _clock: Callable[[], float]
    _history: StepHistory
    _windows: dict[str, tuple[int, np.ndarray]]
    _index: dict[str, int]

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None], inputs: np.ndarray | None = None,
    ) -> Written:
        slab_no, slots, generations, claimed = gathered.token
        slab = self._slabs[slab_no]
        n = len(slots)
        if gathered.errors.count(None) == n:  # the usual batch: C-level passes, no loop
            ok = np.ones(n, np.bool_)
        else:
            ok = np.array([e is None for e in gathered.errors], np.bool_)
        # A slot is (re)filled only by a write, which bumps its generation: a live slot of the
        # gathered generation still holds its session. Only the other rows (deleted, reset, or
        # reused by another session while their step ran) look up the id the slot holds now.
        moved_on = ok & ~(slab.alive[slots] & (slab.generation[slots] == generations))
        for i in np.flatnonzero(moved_on).tolist():
            ok[i] = slab.ids[int(slots[i])] == gathered.ids[i]
        let_go: set[int] = set()
        if claimed is not None:  # a newer connection attached while the step ran: not written
            taken = ok & (claimed >= 0) & (slab.holder[slots] != claimed)
            if taken.any():
                let_go = set(np.flatnonzero(taken).tolist())
                ok &= ~taken
        replayed = self._history.replays(gathered.ids, step_ids, ok)  # applied: not again
        # reset (or recreated) while its step ran: the step came first, so its outputs stand
        # and the reset's state stays
        write = ok & (slab.generation[slots] == generations)
        some_replayed = replayed.count(None) != n
        if some_replayed:
            write &= np.array([r is None for r in replayed], np.bool_)
        rows = block(slots[write])
        everyone = bool(write.all())
        if not (everyone and slab.keep(slots, states)):  # kept: copied in when next needed
            for name, arr in slab.arrays.items():
                write_rows(arr, rows, states[name] if everyone else states[name][:, write])
        slab.steps[rows] += np.asarray(steps, np.int64)[write]
        slab.last_used[slots[ok]] = self._clock()
        steps_after = slab.steps[slots]  # each row's session's timesteps after this write
        if any(step_ids):
            self._history.record_rows(gathered.ids, step_ids, outputs, write, steps_after)
        after = steps_after.tolist()
        if inputs is not None and slab.rewarm_steps:
            self._keep_inputs(gathered.ids, write, inputs, slab.rewarm_steps, after, steps)
        errors: list[RnnServeError | None] = [None] * n
        for i in np.flatnonzero(~ok).tolist():
            errors[i] = gathered.errors[i] or (replaced(gathered.ids[i]) if i in let_go else
                                               SessionNotFound(f"session {gathered.ids[i]!r} "
                                                               "was deleted or reset during "
                                                               "its step"))
            if (type(errors[i]) is SessionNotFound
                    and self._index.get(gathered.ids[i], -1) >> SLOT_BITS not in (-1, slab_no)):
                errors[i] = moved(gathered.ids[i])  # on another slab now: memory_move
        if some_replayed:
            after = [s if again is None else again[1]  # as a replay's first answer said
                     for s, again in zip(after, replayed, strict=True)]
        return Written(after, [False] * n, errors, replayed)

    def _keep_inputs(self, ids: list[str], written: np.ndarray, inputs: np.ndarray,
                     window: int, after: list[int], steps: list[int]) -> None:
        """Append each written row's inputs [time, features] to its session's window of the
        last `window` inputs (a copy: the batch's array is not kept alive by the store), with
        the session's steps after them. A window that missed steps (taken while the version
        kept no inputs) restarts with this step's inputs."""
        for i in np.flatnonzero(written).tolist():
            kept = self._windows.get(ids[i])
            before = after[i] - steps[i]
            rows = inputs[i] if kept is None or kept[0] != before else np.concatenate(
                (kept[1], inputs[i]))
            self._windows[ids[i]] = (after[i], np.array(rows[-window:], np.float32))
