"""The memory store's bulk create: many sessions of one model version in one call, with the
single create's checks per item (an id taken, the client address's cap, --max-sessions with
its `when_full` policy) but one slab allocation, one fancy-indexed write per array and one
index update for all of them. A mixin of MemoryStateStore (memory.py), which holds the
index, the slabs and the checks it calls."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal

import numpy as np

from rnnserve.errors import RnnServeError, Unavailable
from rnnserve.state.base import (
    SessionRecord,
    StateLayout,
    client_quota_exceeded,
    store_full,
    version_full,
)
from rnnserve.state.client_counts import ClientCounts
from rnnserve.state.slab import Slab

SLOT_BITS = 40  # a session's code in the index: slab number << SLOT_BITS | slot


class BulkCreate:
    """`create_many` for MemoryStateStore; the attributes and methods below are the store's."""

    ttl_s: float
    max_sessions: int
    when_full: Literal["reject", "lru"]
    clients: ClientCounts
    _index: dict[str, int]
    _ended: dict[str, tuple[str, float, float]]
    _owner_live: dict[int, int]
    _on_event: Callable[[str, str, int], None]

    def _slab(self, layout: StateLayout) -> tuple[int, Slab]:
        raise NotImplementedError

    def _owner_id(self, owner: str) -> int:
        raise NotImplementedError

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        raise NotImplementedError

    async def create_many(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        """Store new sessions (never replacing one): each record is created or gets the
        error its single create would get, in order."""
        out: list[SessionRecord | RnnServeError | None] = [None] * len(records)
        kept, evicting = self._admit(layout, records, out)
        ttl_s = self._slab(layout)[1].ttl_s
        if kept:
            self._store(layout, [records[i] for i in kept], [states[i] for i in kept])
            for i in kept:  # as stored: the caller's record, unless its fields differ
                record = records[i]
                out[i] = record if (
                    record.created == record.last_used and record.ttl_s == ttl_s
                    and record.model == layout.model and record.version == layout.version
                    and not record.steps and not record.holder) else SessionRecord(
                    id=record.id, model=layout.model, version=layout.version,
                    created=record.last_used, last_used=record.last_used, ttl_s=ttl_s,
                    owner=record.owner, client=record.client)
        for i in evicting:  # a full store under lru: each evicts the least recently used
            try:
                out[i] = await self.create(layout, records[i], states[i])
            except RnnServeError as exc:
                out[i] = exc
        return [o if o is not None else RnnServeError("not created") for o in out]

    def _admit(self, layout: StateLayout, records: list[SessionRecord],
               out: list[SessionRecord | RnnServeError | None]) -> tuple[list[int], list[int]]:
        """The indexes of records that fit, and of those past the room that a full store
        under `lru` makes room for one by one (a single create each); the others' errors go
        to `out`, as a single create words them: id taken, the address's cap, store full."""
        ids = [r.id for r in records]
        clash = self._index.keys() & set(ids)
        if clash or len(set(ids)) != len(ids):
            seen: set[str] = set()
            for i, sid in enumerate(ids):
                if sid in clash or sid in seen:
                    out[i] = Unavailable(f"session id {sid!r} is taken", retry_after_s=0)
                seen.add(sid)
        if self.clients.cap and any(r.client for r in records):
            held: dict[str, int] = {}
            for i, record in enumerate(records):
                client = record.client
                if out[i] is not None or not client:
                    continue
                count = held.get(client, self.clients.count(client))
                if count >= self.clients.cap:
                    out[i] = client_quota_exceeded(client, self.clients.cap)
                else:
                    held[client] = count + 1
        candidates = [i for i in range(len(records)) if out[i] is None]
        room = max(0, self.max_sessions - len(self._index))
        slab = self._slab(layout)[1]
        if slab.max_live is not None:  # the version's own cap: past it, refused (never lru)
            own_room = max(0, slab.max_live - slab.live)
            for i in candidates[own_room:]:
                out[i] = version_full(layout, slab.max_live)
            candidates = candidates[:own_room]
        if len(candidates) <= room:
            return candidates, []
        if self.when_full == "lru":
            return candidates[:room], candidates[room:]
        for i in candidates[room:]:
            out[i] = store_full(self.max_sessions)
        return candidates[:room], []

    def _store(self, layout: StateLayout, records: list[SessionRecord],
               states: list[dict[str, np.ndarray] | None]) -> None:
        slab_no, slab = self._slab(layout)
        slots = slab.allocate_many(len(records))
        slab.write_many(slots, states)
        slab.steps[slots] = 0
        slab.holder[slots] = 0
        used = np.fromiter((r.last_used for r in records), np.float64, len(records))
        slab.created[slots] = used
        slab.last_used[slots] = used
        owners = [self._owner_id(r.owner) for r in records]
        slab.owner[slots] = owners
        for owner, count in Counter(owners).items():
            self._owner_live[owner] = self._owner_live.get(owner, 0) + count
        for record in records:
            if record.client:
                self.clients.add(record)
        ids = slab.ids
        for slot, record in zip(slots.tolist(), records, strict=True):
            ids[slot] = record.id
        slab.alive[slots] = True
        codes = (slots | (slab_no << SLOT_BITS)).tolist()
        self._index.update(zip((r.id for r in records), codes, strict=True))
        if self._ended:
            for record in records:
                self._ended.pop(record.id, None)
        on_event, model = self._on_event, layout.model
        for _ in records:
            on_event("created", model, 0)
