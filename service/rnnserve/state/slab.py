"""The slab behind the memory store: one model version's session states as float32 rows.

Rows live in arrays preallocated for many sessions ([layers, slots, hidden] per state tensor,
plus per-slot metadata arrays), so an idle session costs its raw state bytes, and a batch is
gathered and scattered with one indexing operation per tensor: a slice when its sessions sit in
consecutive slots (`block`), else a fancy index over whole rows (`read_rows`, `write_rows`).

A large batch's new states may stay as ONNX Runtime returned them (`Slab.keep`) instead of
being copied into their rows: the next batch of the same sessions in the same order (a
gateway's next bulk step) is fed those arrays as they are (`Slab.kept_states`), and any other
use of the rows writes them in first (`Slab.arrays`)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from rnnserve.state.base import StateLayout

RESERVE_BYTES = 2 << 30
"""Address space reserved per model version for state rows. Untouched pages of a large
np.empty / np.zeros cost no memory (the OS backs them on first write), so reserving up front
avoids growth copies, whose freed blocks would otherwise linger in the allocator's heap."""


def block(slots: np.ndarray) -> slice | np.ndarray:
    """The slots as one slice when they are consecutive and ascending (sessions created
    together and stepped in the same order: a gateway's), else as they are. Indexing rows by
    a slice copies them as one block; a fancy index copies them one at a time, about three
    times slower on a batch of 1024 rows (bench.binary_steps)."""
    count = len(slots)
    if count:
        first = int(slots[0])
        if int(slots[-1]) == first + count - 1 and (count < 3 or bool(
                (np.diff(slots) == 1).all())):
            return slice(first, first + count)
    return slots


def read_rows(source: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """A copy of source[:, rows], [layers, len(rows), hidden], contiguous: ONNX Runtime's
    feed. A block is one slice copy; other rows are taken one row at a time."""
    return source[:, rows].copy() if type(rows) is slice else np.take(source, rows, axis=1)


def write_rows(target: np.ndarray, rows: slice | np.ndarray, values: np.ndarray) -> None:
    """target[:, rows] = values for [layers, slots, hidden] arrays. Rows not in one block are
    written through a view of each row's hidden values as one opaque item, so the fancy index
    copies a row at a time instead of a value at a time: on 1024 scattered rows of 128 floats
    about a third less time (bench.binary_steps's sessions are one block; bench.peers' are
    not)."""
    if (type(rows) is slice or values.dtype != target.dtype
            or values.strides[-1] != values.itemsize):
        target[:, rows] = values
        return
    item = np.dtype((np.void, target.shape[-1] * target.itemsize))
    target.view(item)[..., 0][:, rows] = values.view(item)[..., 0]


KEEP_ROWS = 256
"""The fewest rows of a batch whose new states are kept as they are (`Slab.keep`). Copying a
gateway's 1024 rows out of the slab and back costs about 0.8 ms of a bulk step's 7 ms on this
2-core machine: the rows are cold in the cache after each run (`python -m bench.binary_steps`
prints both copies). Small batches, whose copies are cheap, change their sessions from one
batch to the next and would only move the copy from their own scatter to the next gather."""


@dataclass(frozen=True, slots=True)
class KeptBatch:
    """The new states of the latest large batch of a slab, not yet in its rows: `states[name]`
    [layers, len(slots), hidden], row i the state of the session in `slots[i]`. Read-only:
    they are fed to ONNX Runtime as they are."""

    slots: np.ndarray
    states: dict[str, np.ndarray]


def reserved_rows(layout: StateLayout, max_sessions: int) -> int:
    return max(1024, min(max_sessions, RESERVE_BYTES // max(1, layout.row_bytes)))


class Slab:
    """The rows of one model version. Rows are allocated upward from 0 and reused when
    freed, lowest first, so the touched (resident) part stays as small as the live sessions
    need, and sessions created one after another sit in ascending slots even after others
    came and went: a batch of them is copied nearly in memory order (`python -m
    bench.binary_steps --churn 4000` measures the copies against sessions created in bulk)."""

    def __init__(self, layout: StateLayout, capacity: int) -> None:
        self.layout = layout
        self.capacity = capacity
        # [layers, slots, hidden]: ONNX Runtime's own layout, so a gather along the slot axis
        # is already the contiguous [layers, batch, hidden] feed and a run's final states go
        # back without a transpose
        self._arrays = {name: np.empty((layers, capacity, hidden), np.float32)
                        for name, layers, hidden in layout.tensors}
        self._kept: KeptBatch | None = None
        self.steps = np.zeros(capacity, np.int64)
        self.created = np.zeros(capacity, np.float64)
        self.last_used = np.zeros(capacity, np.float64)
        self.alive = np.zeros(capacity, np.bool_)
        self.owner = np.zeros(capacity, np.int32)
        self.generation = np.zeros(capacity, np.int64)  # bumped by create/reset
        self.holder = np.zeros(capacity, np.int64)  # which attach holds the session
        self.ids: list[str | None] = []  # slot -> session id, grown by append
        self.high_water = 0
        self.free: list[int] = []  # freed slots, a heap: the lowest is reused first
        self.live = 0
        self.ttl_s = 0.0  # the idle timeout and cap of this version's sessions: set by the
        self.max_live: int | None = None  # store from the latest layout it was handed
        self.rewarm_steps = 0  # how many last inputs each session keeps (the layout's)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The state rows, [layers, slots, hidden] per tensor, with a kept batch's states
        written into them first: every reader and writer of rows but `keep` and
        `kept_states` goes through here, so none sees a stale row, and no row written here is
        overwritten later by the older kept one."""
        self.settle()
        return self._arrays

    def settle(self) -> None:
        """Write the kept batch's states into their rows, and keep nothing."""
        kept, self._kept = self._kept, None
        if kept is not None:
            rows = block(kept.slots)
            for name, arr in self._arrays.items():
                write_rows(arr, rows, kept.states[name])

    def keep(self, slots: np.ndarray, states: dict[str, np.ndarray]) -> bool:
        """Keep a whole batch's new states for `slots` (distinct, every row written) as they
        are instead of copying them into the rows; False (nothing kept) when the batch is
        small or an array is not [layers, len(slots), hidden], contiguous float32."""
        count = len(slots)
        if count < KEEP_ROWS or states.keys() != self._arrays.keys():
            return False
        for name, arr in self._arrays.items():
            value = states[name]
            if (value.dtype != np.float32 or not value.flags.c_contiguous
                    or value.shape != (arr.shape[0], count, arr.shape[2])):
                return False
        if self._kept is not None and not np.array_equal(self._kept.slots, slots):
            self.settle()  # another batch's: into their rows first
        frozen = {name: value.view() for name, value in states.items()}
        for value in frozen.values():
            value.flags.writeable = False  # a reader that writes into them fails loudly
        self._kept = KeptBatch(slots.copy(), frozen)
        return True

    def kept_states(self, slots: np.ndarray) -> dict[str, np.ndarray] | None:
        """The kept batch's states when `slots` are its slots in its order, else None."""
        kept = self._kept
        return kept.states if kept is not None and np.array_equal(kept.slots, slots) else None

    def _grow(self) -> None:
        new_capacity = self.capacity * 2

        def grown(old: np.ndarray, zero: bool) -> np.ndarray:
            new = (np.zeros if zero else np.empty)((new_capacity, *old.shape[1:]), old.dtype)
            new[: self.capacity] = old
            return new

        def grown_state(old: np.ndarray) -> np.ndarray:
            layers, _, hidden = old.shape
            new = np.empty((layers, new_capacity, hidden), old.dtype)
            new[:, : self.capacity] = old
            return new

        self._arrays = {n: grown_state(a) for n, a in self.arrays.items()}
        self.steps, self.created = grown(self.steps, True), grown(self.created, True)
        self.last_used, self.alive = grown(self.last_used, True), grown(self.alive, True)
        self.owner = grown(self.owner, True)
        self.generation = grown(self.generation, True)
        self.holder = grown(self.holder, True)
        self.capacity = new_capacity

    def allocate(self) -> int:
        if self.free:
            slot = heapq.heappop(self.free)
        else:
            if self.high_water == self.capacity:
                self._grow()
            slot = self.high_water
            self.high_water += 1
            self.ids.append(None)
        self.live += 1
        return slot

    def allocate_many(self, count: int) -> np.ndarray:
        """`count` slots at once (a bulk create), ascending: freed ones first, lowest first,
        then fresh ones above the high water mark, growing once if need be."""
        reused_count = min(count, len(self.free))
        reused = [heapq.heappop(self.free) for _ in range(reused_count)]
        fresh = count - reused_count
        while self.high_water + fresh > self.capacity:
            self._grow()
        start = self.high_water
        self.high_water += fresh
        self.ids.extend([None] * fresh)
        self.live += count
        return np.concatenate([np.array(reused, np.int64),
                               np.arange(start, start + fresh, dtype=np.int64)])

    def release(self, slot: int) -> None:
        self.alive[slot] = False
        self.ids[slot] = None
        heapq.heappush(self.free, slot)
        self.live -= 1

    def write(self, slot: int, state: dict[str, np.ndarray] | None) -> None:
        self.generation[slot] += 1
        for name, arr in self.arrays.items():
            value = None if state is None else state.get(name)
            arr[:, slot] = 0.0 if value is None else value[:, 0, :]

    def write_many(self, slots: np.ndarray,
                   states: list[dict[str, np.ndarray] | None]) -> None:
        """`write` for many slots: zeros with one fancy-indexed store per tensor, then the
        given states (only the items that have one) row by row."""
        self.generation[slots] += 1
        rows = block(slots)  # fresh slots: a plain block, no fancy index
        for arr in self.arrays.values():
            arr[:, rows] = 0.0
        for slot, state in zip(slots.tolist(), states, strict=True):
            if state:
                for name, arr in self.arrays.items():
                    value = state.get(name)
                    if value is not None:
                        arr[:, slot] = value[:, 0, :]
