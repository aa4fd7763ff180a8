"""The memory store's half of a session migration (engine/migration.py): the session moves to
the slab of another version of its model with a new state, and keeps everything else that
makes it the same session: its id, owner, client, step count, its replay window
of step ids (a step resent after the move is still answered from it, never applied twice) and
its kept inputs (so a second migration replays the same last inputs). A mixin of
MemoryStateStore (memory.py), which holds the slabs and the index.

The move is one synchronous stretch on the event loop, so it is atomic against steps: it is
refused (SessionChanged) when the session stepped, reset or moved since `expect` was read,
and a step in flight on the old slab finds its slot gone and is told the session moved
(memory_scatter), never applied to a state that is no longer the session's."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnnserve.state.base import SessionRecord, StateLayout, session_changed, version_full
from rnnserve.state.memory_bulk import SLOT_BITS
from rnnserve.state.slab import Slab


class Move:
    """`move` for MemoryStateStore; the attributes and methods below are the store's."""

    _slabs: list[Slab]
    _index: dict[str, int]
    _windows: dict[str, tuple[int, np.ndarray]]
    _clock: Callable[[], float]
    _locate: Callable[[str], tuple[int, Slab, int]]
    _slab: Callable[[StateLayout], tuple[int, Slab]]
    _record: Callable[[Slab, int], SessionRecord]

    async def move(self, layout: StateLayout, expect: SessionRecord,
                   state: dict[str, np.ndarray], inputs: np.ndarray) -> SessionRecord:
        _, old, old_slot = self._locate(expect.id)
        if (old.layout.version, int(old.steps[old_slot]), float(old.last_used[old_slot])) != (
                expect.version, expect.steps, expect.last_used):
            raise session_changed(expect.id)
        number, new = self._slab(layout)
        if new.max_live is not None and new.live >= new.max_live:
            raise version_full(layout, new.max_live)
        slot = new.allocate()
        new.write(slot, state)
        for field in ("steps", "owner", "holder"):
            getattr(new, field)[slot] = getattr(old, field)[old_slot]
        new.created[slot] = new.last_used[slot] = self._clock()  # picks its instance: _runner_of
        new.ids[slot] = expect.id
        new.alive[slot] = True
        old.release(old_slot)
        self._index[expect.id] = number << SLOT_BITS | slot
        steps = int(new.steps[slot])
        if new.rewarm_steps:
            self._windows[expect.id] = (steps, np.array(inputs[-new.rewarm_steps:], np.float32))
        else:
            self._windows.pop(expect.id, None)
        return self._record(new, slot)

