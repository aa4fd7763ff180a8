"""The in-memory state store: each model version's session states in one slab of float32 rows
([capacity, layers, hidden] per state tensor), a dict from session id to slot, and per-slot
metadata in numpy arrays. So an idle session costs its raw state bytes plus ~200 bytes of
index, gathering and scattering a batch is one fancy-indexing operation per tensor (none for a
gateway's next step of the same sessions: slab.py keeps a large batch's states), and expiry
is a vectorised comparison on a timer rather than a scan per request.

Sessions here die with the process: use the Redis store for durability and replicas."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

from rnnserve.errors import (
    RnnServeError,
    SessionNotFound,
    SessionOnOtherVersion,
    Unavailable,
    UnknownSession,
)
from rnnserve.state.base import (
    AttachEvent,
    Gathered,
    SessionEvent,
    SessionRecord,
    StateLayout,
    replaced,
    store_full,
    unkept,
    version_full,
)
from rnnserve.state.client_counts import ClientCounts
from rnnserve.state.memory_bulk import SLOT_BITS, BulkCreate
from rnnserve.state.memory_move import Move
from rnnserve.state.memory_scatter import Scatter
from rnnserve.state.retired import MemoryRetirements
from rnnserve.state.slab import Slab, block, read_rows, reserved_rows
from rnnserve.state.step_history import StepHistory

log = logging.getLogger("rnnserve.state.memory")

RECENTLY_ENDED = 100_000  # how many expired/evicted ids are remembered, to say why they're gone

class MemoryStateStore(Scatter, Move, BulkCreate, MemoryRetirements):
    """Sessions of this process, idle timeout, live-session cap (+memory_bulk, memory_scatter,
    retired)."""

    name = "memory"

    def __init__(
        self,
        *,
        ttl_s: float,
        max_sessions: int,
        when_full: Literal["reject", "lru"] = "reject",
        on_event: SessionEvent | None = None,
        clock: Callable[[], float] = time.time,
        max_sessions_per_client: int = 0,
        step_history: int = 16,
    ) -> None:
        """`step_history`: how many step ids (with outputs) each session keeps for replays."""
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.clients = ClientCounts(max_sessions_per_client)
        self.when_full = when_full
        self._on_event = on_event or (lambda event, model, steps: None)
        self._clock = clock
        self._slabs: list[Slab] = []
        self._slab_of: dict[str, int] = {}
        self._index: dict[str, int] = {}
        self._owners: list[str] = [""]
        self._owner_ids: dict[str, int] = {"": 0}
        self._owner_live: dict[int, int] = {}
        self._ended: dict[str, tuple[str, float, float]] = {}  # id -> (why, idle s, ttl s)
        self._history = StepHistory(step_history)  # only sessions whose clients send ids
        # id -> (steps after them, its last inputs [n <= rewarm_steps, features]): only the
        # sessions of versions that keep them
        self._windows: dict[str, tuple[int, np.ndarray]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._attach_watchers: list[AttachEvent] = []
        self._retired: dict[tuple[str, int], float] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="session-sweeper")

    async def ping(self) -> None:
        """In this process: always reachable."""

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass

    async def _sweep_forever(self) -> None:
        while True:
            shortest = min([self.ttl_s, *(slab.ttl_s for slab in self._slabs)])
            await asyncio.sleep(max(0.05, min(1.0, shortest / 4)))
            self.sweep()

    def sweep(self) -> int:
        """End every session idle longer than the timeout: one vectorised test per slab."""
        now, ended = self._clock(), 0
        for slab_no, slab in enumerate(self._slabs):
            n = slab.high_water
            stale = np.flatnonzero(slab.alive[:n] & (slab.last_used[:n] + slab.ttl_s <= now))
            for slot in stale.tolist():
                self._end(slab_no, slot, "expired")
                ended += 1
        return ended

    # -- index -----------------------------------------------------------------------------

    def _slab(self, layout: StateLayout) -> tuple[int, Slab]:
        """The slab of a model version, which takes the version's own idle timeout and cap
        (model.json) from the layout it is handed."""
        number = self._slab_of.get(layout.key)
        if number is None:
            number = len(self._slabs)
            self._slabs.append(Slab(layout, reserved_rows(layout, self.max_sessions)))
            self._slab_of[layout.key] = number
        slab = self._slabs[number]
        slab.ttl_s = self.ttl_s if layout.ttl_s is None else layout.ttl_s
        slab.max_live = layout.max_sessions
        slab.rewarm_steps = layout.rewarm_steps
        return number, slab

    def _remember_end(self, session_id: str, why: str, idle_s: float, ttl_s: float) -> None:
        self._ended[session_id] = (why, idle_s, ttl_s)
        if len(self._ended) > RECENTLY_ENDED:
            del self._ended[next(iter(self._ended))]

    def _end(self, slab_no: int, slot: int, why: str) -> None:
        slab = self._slabs[slab_no]
        session_id = slab.ids[slot]
        assert session_id is not None
        idle = self._clock() - float(slab.last_used[slot])
        self._on_event(why, slab.layout.model, int(slab.steps[slot]))
        owner = int(slab.owner[slot])
        self._owner_live[owner] = self._owner_live.get(owner, 1) - 1
        self.clients.remove(session_id)
        del self._index[session_id]
        self._history.forget(session_id)
        self._windows.pop(session_id, None)
        slab.release(slot)
        if why != "deleted":
            self._remember_end(session_id, why, idle, slab.ttl_s)

    def _not_found(self, session_id: str) -> SessionNotFound:
        ended = self._ended.get(session_id)
        if ended is None:
            return UnknownSession(f"unknown session {session_id!r}")
        why, idle, ttl_s = ended
        if why == "expired":
            return SessionNotFound(f"session {session_id!r} expired after {ttl_s:g} s "
                                   f"idle; create a new one")
        return SessionNotFound(f"session {session_id!r} was evicted to make room (least "
                               f"recently used, idle {idle:.0f} s); create a new one")

    def _locate(self, session_id: str) -> tuple[int, Slab, int]:
        code = self._index.get(session_id)
        if code is None:
            raise self._not_found(session_id)
        slab_no, slot = code >> SLOT_BITS, code & ((1 << SLOT_BITS) - 1)
        slab = self._slabs[slab_no]
        if slab.last_used[slot] + slab.ttl_s <= self._clock():  # idle past the timeout
            self._end(slab_no, slot, "expired")
            raise self._not_found(session_id)
        return slab_no, slab, slot

    def _record(self, slab: Slab, slot: int) -> SessionRecord:
        session_id = slab.ids[slot]
        assert session_id is not None
        return SessionRecord(
            id=session_id, model=slab.layout.model, version=slab.layout.version,
            created=float(slab.created[slot]), last_used=float(slab.last_used[slot]),
            ttl_s=slab.ttl_s, steps=int(slab.steps[slot]),
            owner=self._owners[int(slab.owner[slot])], holder=int(slab.holder[slot]),
            client=self.clients.client_of(session_id),
            last_step_id=self._history.latest(session_id),
        )

    def _make_room(self) -> None:
        if len(self._index) < self.max_sessions:
            return
        if self.when_full != "lru":
            raise store_full(self.max_sessions)
        best: tuple[float, int, int] | None = None
        for slab_no, slab in enumerate(self._slabs):
            n = slab.high_water
            if slab.live == 0:
                continue
            used = np.where(slab.alive[:n], slab.last_used[:n], np.inf)
            slot = int(np.argmin(used))
            if best is None or used[slot] < best[0]:
                best = (float(used[slot]), slab_no, slot)
        if best is not None:
            self._end(best[1], best[2], "evicted")

    def _owner_id(self, owner: str) -> int:
        if owner not in self._owner_ids:
            self._owner_ids[owner] = len(self._owners)
            self._owners.append(owner)
        return self._owner_ids[owner]

    # -- the interface ---------------------------------------------------------------------

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        self.clients.check(record, replace)
        if record.id in self._index:
            if not replace:
                raise Unavailable(f"session id {record.id!r} is taken", retry_after_s=0)
            slab_no, _, slot = self._locate_any(record.id)
            self._end(slab_no, slot, "deleted")
        slab_no, slab = self._slab(layout)
        if slab.max_live is not None and slab.live >= slab.max_live:
            raise version_full(layout, slab.max_live)
        self._make_room()
        slot = slab.allocate()
        slab.write(slot, state)
        slab.steps[slot] = 0
        slab.holder[slot] = 0
        slab.created[slot] = slab.last_used[slot] = record.last_used
        owner = self._owner_id(record.owner)
        slab.owner[slot] = owner
        self._owner_live[owner] = self._owner_live.get(owner, 0) + 1
        self.clients.add(record)
        slab.ids[slot] = record.id
        slab.alive[slot] = True
        self._index[record.id] = slab_no << SLOT_BITS | slot
        self._ended.pop(record.id, None)
        self._on_event("created", layout.model, 0)
        return self._record(slab, slot)

    def _locate_any(self, session_id: str) -> tuple[int, Slab, int]:
        code = self._index[session_id]
        slab_no = code >> SLOT_BITS
        return slab_no, self._slabs[slab_no], code & ((1 << SLOT_BITS) - 1)

    async def get(self, session_id: str) -> SessionRecord:
        _, slab, slot = self._locate(session_id)
        return self._record(slab, slot)

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        _, slab, slot = self._locate(session_id)
        state = {name: arr[:, slot][:, None, :].copy() for name, arr in slab.arrays.items()}
        return self._record(slab, slot), state

    async def reset(
        self, session_id: str, state: dict[str, np.ndarray] | None
    ) -> SessionRecord:
        _, slab, slot = self._locate(session_id)
        slab.write(slot, state)
        self._history.forget(session_id)
        self._windows.pop(session_id, None)
        slab.steps[slot] = 0
        slab.last_used[slot] = self._clock()
        return self._record(slab, slot)

    async def recent_inputs(self, session_id: str, features: int
                            ) -> tuple[SessionRecord, np.ndarray]:
        _, slab, slot = self._locate(session_id)
        record = self._record(slab, slot)
        kept_after, kept = self._windows.get(session_id, (0, np.zeros((0, features), np.float32)))
        if record.steps and kept_after != record.steps:
            raise unkept(session_id)
        return record, kept.copy()

    async def delete(self, session_id: str) -> None:
        slab_no, _, slot = self._locate(session_id)
        self._end(slab_no, slot, "deleted")

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        _, slab, slot = self._locate(session_id)
        if self._owners[int(slab.owner[slot])] != owner:
            raise UnknownSession(f"unknown session {session_id!r}")
        slab.holder[slot] += 1
        record = self._record(slab, slot)
        for on_attach in self._attach_watchers:
            on_attach(session_id, record.holder)
        return record

    def watch_attachments(self, on_attach: AttachEvent) -> None:
        self._attach_watchers.append(on_attach)

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None],
        holders: list[int | None] | None = None,
    ) -> Gathered:
        """Stack the sessions' rows into [layers, batch, hidden] per tensor. The index
        lookups, expiry, owner and version checks are vectorised; only rows that fail one of
        them take the slow path that words their error."""
        slab_no, slab = self._slab(layout)
        codes = np.fromiter(map(self._index.get, ids, itertools.repeat(-1)), np.int64, len(ids))
        slots = np.where(codes >= 0, codes & ((1 << SLOT_BITS) - 1), 0)
        ok = (codes >= 0) & ((codes >> SLOT_BITS) == slab_no)
        slots[~ok] = 0
        ok &= slab.last_used[slots] + slab.ttl_s > self._clock()
        if owners.count(None) != len(owners):
            distinct = set(owners)
            if len(distinct) == 1:  # one caller's rows (a gateway's): one lookup
                wanted = np.asarray(self._owner_ids.get(str(owners[0]), -2), np.int64)
            else:
                wanted = np.array([-1 if o is None else self._owner_ids.get(o, -2)
                                   for o in owners], np.int64)
            ok &= (wanted == -1) | (slab.owner[slots] == wanted)
        errors: list[RnnServeError | None] = [None] * len(ids)
        claimed = None
        if holders is not None:
            claimed = np.array([-1 if h is None else h for h in holders], np.int64)
            let_go = ok & (claimed >= 0) & (slab.holder[slots] != claimed)
            for i in np.flatnonzero(let_go).tolist():
                errors[i] = replaced(ids[i])
            ok &= ~let_go
        for i in np.flatnonzero(~ok).tolist():
            errors[i] = errors[i] or self._gather_error(ids[i], owners[i], slab_no)
            slots[i] = 0
        everyone = bool(ok.all())
        states = slab.kept_states(slots) if everyone else None  # a gateway's next step
        if states is None:
            rows = block(slots)
            states = {name: read_rows(arr, rows) for name, arr in slab.arrays.items()}
        if not everyone:
            for arr in states.values():
                arr[:, ~ok] = 0.0  # rows of missing sessions are zeros, not another's state
        return Gathered(ids, states, errors,
                        token=(slab_no, slots, slab.generation[slots], claimed))

    def _gather_error(self, session_id: str, owner: str | None, slab_no: int) -> RnnServeError:
        """Why a session cannot be gathered: unknown, expired (ended now), another owner's
        (reported as unknown), or another model version's."""
        try:
            found_no, found, slot = self._locate(session_id)
        except SessionNotFound as exc:
            return exc
        if owner is not None and self._owners[int(found.owner[slot])] != owner:
            return UnknownSession(f"unknown session {session_id!r}")
        if found_no != slab_no:
            return SessionOnOtherVersion(f"session {session_id!r} belongs to another model "
                                         "or version")
        return SessionNotFound(f"session {session_id!r} cannot be stepped now")

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        _, slab, slot = self._locate(session_id)
        if self._owners[int(slab.owner[slot])] != owner:
            return None
        return self._history.find(session_id, step_id)

    async def owned_sessions(self, owner: str) -> int:
        owner_id = self._owner_ids.get(owner)
        return 0 if owner_id is None else self._owner_live.get(owner_id, 0)

    async def client_sessions(self, client: str) -> int:
        return self.clients.count(client)

    async def live_sessions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slab in self._slabs:
            counts[slab.layout.model] = counts.get(slab.layout.model, 0) + slab.live
        return counts
