"""The Redis store's single create (redis_create.lua): one script that refuses a taken id
(unless it replaces), an address over its cap, a model version at its own max_sessions
(model.json) or a full store, and otherwise writes the hash, its marker and its live-set
entries together, with the version's idle timeout (redis_ttl).

A version's cap counts its live ids in a sorted set of its own (rnnserve:vlive:{model}/
{version}, redis_vlive.lua), in the same script that adds to it, so concurrent creates on any
number of replicas cannot overshoot it. Each id's score is a lower bound of its expiry; the
count looks up every id whose score passed (alive and still of that version: re-scored;
else dropped), so sessions that expired while no replica ran are never counted, and a
create need not wait for any sweep. A count kept up by increments could not know of an
expiry that no replica saw."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rnnserve.errors import Unavailable
from rnnserve.state import redis_records, redis_scripts
from rnnserve.state.base import SessionRecord, StateLayout, store_full, version_full
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_client_sets import ClientSets
from rnnserve.state.redis_format import (
    GEN,
    LIVE,
    MARKER,
    MODELS,
    OWNER,
    SESSION,
    VLIVE,
    VLIVES,
    layout_json,
    text,
    version_key,
    write_id,
)
from rnnserve.state.redis_history import HISTORY
from rnnserve.state.redis_records import NEWEST, too_new
from rnnserve.state.redis_ttl import Timeouts


class CreateScript:
    """The store's settings that its create scripts' callers share (RedisCreate here,
    RedisBulkCreate in redis_bulk), with their script (`SCRIPT`) registered."""

    SCRIPT: str

    def __init__(self, client: aioredis.Redis, where: str, *, max_sessions: int,
                 timeouts: Timeouts, record_format: int, clients: ClientSets,
                 on_event: Callable[[str, str, int], None]) -> None:
        self._script = client.register_script(self.SCRIPT)
        self._where = where
        self._max_sessions = max_sessions
        self._timeouts = timeouts
        self._format = record_format
        self._clients = clients
        self._on_event = on_event


class RedisCreate(CreateScript):
    """`create` of RedisStateStore, with the store's settings."""

    SCRIPT = redis_scripts.CREATE

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        ttl = self._timeouts.of_layout(layout)
        pairs, whole = redis_records.state_fields(layout.tensors, state, self._format)
        fields: list[Any] = [
            "model", layout.model, "version", layout.version, "created", repr(record.created),
            "steps", 0, "owner", record.owner, "layout", layout_json(layout.tensors),
            "ttl", ttl.field, *pairs]
        clients = self._clients
        async with guard(self._where):
            out = await self._script(
                keys=[SESSION + record.id, MARKER + record.id, GEN, MODELS, LIVE + layout.model,
                      OWNER + record.owner, *clients.keys(record.client),
                      redis_records.STATE + record.id, HISTORY + record.id,
                      version_key(layout.model, layout.version), VLIVES],
                args=[int(replace), self._max_sessions, ttl.ms, ttl.marker_ms, ttl.label,
                      record.id, layout.model, LIVE, OWNER, *clients.args(record.client),
                      write_id(), NEWEST, self._format, whole, layout.max_sessions or 0,
                      layout.version, VLIVE, *fields])
        status = text(out[0])
        if status == "format":
            raise too_new(record.id, out[1])
        if status == "taken":
            raise Unavailable(f"session id {record.id!r} is taken", retry_after_s=0)
        if status == "full":
            raise store_full(self._max_sessions)
        if status == "version-full":
            raise version_full(layout, layout.max_sessions or 0)
        if status == "client-full":
            raise clients.refusal(record.client)
        now, rmodel, rsteps, emodel, esteps = (text(v) for v in out[1:6])
        if emodel:
            self._on_event("expired", emodel, int(esteps))
        if rmodel:
            self._on_event("deleted", rmodel, int(rsteps))
        self._on_event("created", layout.model, 0)
        return SessionRecord(id=record.id, model=layout.model, version=layout.version,
                             created=record.created, last_used=float(now), ttl_s=ttl.ttl_s,
                             steps=0, owner=record.owner, client=record.client)
