"""The Redis store's bulk create: many sessions of one model version, one script call
(redis_create_many.lua) and one round trip per CHUNK of them, each item checked as a single
create checks it (an id taken, the client address's cap, the version's own max_sessions,
--max-sessions), with the version's idle timeout (redis_ttl). Zeros states, the
common case, are sent once per call, not once per session. Each call carries its own write
id, stored on every session it makes, so a call resent after a lost reply (redis_client
resends once) answers the sessions its first run made as made, and makes none twice."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnserve.errors import RnnServeError, Unavailable
from rnnserve.state import redis_records, redis_scripts
from rnnserve.state.base import SessionRecord, StateLayout, store_full, version_full
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_create import CreateScript
from rnnserve.state.redis_format import (
    CLIENT,
    CLIENTS,
    GEN,
    LIVE,
    MARKER,
    MODELS,
    OWNER,
    SESSION,
    VLIVES,
    layout_json,
    text,
    version_key,
    write_id,
)
from rnnserve.state.redis_records import NEWEST

CHUNK = 256
"""Sessions per script call: a call holds Redis for its whole run (about 8 commands a
session), so a chunk bounds how long other replicas' commands wait behind one."""


class RedisBulkCreate(CreateScript):
    """`create_many` of RedisStateStore, with the store's settings."""

    SCRIPT = redis_scripts.CREATE_MANY

    async def create_many(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        out: list[SessionRecord | RnnServeError] = []
        for start in range(0, len(records), CHUNK):
            part = records[start:start + CHUNK]
            try:
                out += await self._chunk(layout, part, states[start:start + CHUNK])
            except RnnServeError as exc:
                if not start:
                    raise  # nothing written: the whole call fails
                out += [exc] * len(part)  # earlier chunks' sessions exist: say so, per item
        return out

    def _state_values(self, layout: StateLayout,
                      state: dict[str, np.ndarray] | None) -> list[Any]:
        """One state as the script takes it: format 1's value per tensor, or format 2's
        whole state."""
        pairs, whole = redis_records.state_fields(layout.tensors, state, self._format)
        return pairs[1::2] if self._format == 1 else [whole]

    async def _chunk(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        """One script call; the records share a model version, an owner, a client address
        and a creation time (they come from one bulk create)."""
        first = records[0]
        ttl = self._timeouts.of_layout(layout)
        names = redis_records.tensor_fields(layout.tensors) if self._format == 1 else []
        zeros = self._state_values(layout, None)
        blank = [""] * len(zeros)
        shared = ["model", layout.model, "version", layout.version, "created",
                  repr(first.created), "steps", 0, "owner", first.owner, "layout",
                  layout_json(layout.tensors), "ttl", ttl.field]
        items: list[Any] = []
        for record, state in zip(records, states, strict=True):
            items.append(record.id)
            items += blank if state is None else self._state_values(layout, state)
        client = first.client
        args: list[Any] = [
            self._max_sessions, ttl.ms, ttl.marker_ms, ttl.label, layout.model,
            LIVE, client, self._clients.cap, SESSION, MARKER, redis_records.STATE, write_id(),
            NEWEST, self._format, len(shared), len(names), layout.max_sessions or 0,
            layout.version, *shared, *names, *zeros, *items]
        async with guard(self._where):
            now, statuses, expired = await self._script(
                keys=[GEN, MODELS, LIVE + layout.model, OWNER + first.owner, CLIENT + client,
                      CLIENTS, version_key(layout.model, layout.version), VLIVES], args=args)
        for i in range(0, len(expired), 2):
            self._on_event("expired", text(expired[i]), int(expired[i + 1]))
        used = float(text(now))
        out: list[SessionRecord | RnnServeError] = []
        for record, raw in zip(records, statuses, strict=True):
            status = text(raw)
            if status == "ok":
                self._on_event("created", layout.model, 0)
                out.append(SessionRecord(
                    id=record.id, model=layout.model, version=layout.version,
                    created=record.created, last_used=used, ttl_s=ttl.ttl_s, steps=0,
                    owner=record.owner, client=record.client))
            elif status == "taken":
                out.append(Unavailable(f"session id {record.id!r} is taken", retry_after_s=0))
            elif status == "client-full":
                out.append(self._clients.refusal(record.client))
            elif status == "version-full":
                out.append(version_full(layout, layout.max_sessions or 0))
            else:
                out.append(store_full(self._max_sessions))
        return out
