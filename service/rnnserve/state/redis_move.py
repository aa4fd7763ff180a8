"""The Redis store's half of a session migration (engine/migration.py): redis_move.lua writes
the session's new version, layout and state over its hash in one script, checked against the
gen read just before, and keeps its steps, owner, client and replay window of
step ids (`created` becomes the move's time: it picks the instance the session steps
on); its kept inputs (redis_inputs) become the replayed ones. Like the memory store's
move (memory_move), it is refused with SessionChanged when the session stepped, reset, was
attached or moved since the migration read it, so no acknowledged step is overwritten."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from rnnserve.state import redis_records
from rnnserve.state.base import SessionRecord, StateLayout, session_changed, version_full
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import (
    GEN,
    LIVE,
    MARKER,
    OWNER,
    SESSION,
    VLIVES,
    layout_json,
    not_found,
    text,
    version_key,
    write_id,
)
from rnnserve.state.redis_history import HISTORY
from rnnserve.state.redis_inputs import INPUTS, recent_inputs
from rnnserve.state.redis_ttl import TTL, Timeouts, TtlTimes


def same_point(fields: dict[bytes, Any], expect: SessionRecord) -> bool:
    """Whether the hash is the session as the migration read it: the same version, steps and
    last use (floats parsed from the same text compare equal)."""
    return (int(text(fields[b"version"])), int(text(fields.get(b"steps", b"0"))),
            float(text(fields[b"last_used"]))) == (expect.version, expect.steps,
                                                   expect.last_used)


def move_args(fields: dict[bytes, Any], layout: StateLayout, state: dict[str, np.ndarray],
              inputs: np.ndarray, record_format: int, ttl: TtlTimes, session_id: str,
              ) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of redis_move.lua for moving the session whose hash is `fields` to
    `layout`'s version, whose idle timeout is `ttl`."""
    old = [(str(n), int(layers), int(hidden))
           for n, layers, hidden in json.loads(fields[b"layout"])]
    old_fields = redis_records.tensor_fields(old)
    pairs, whole = redis_records.state_fields(layout.tensors, state, record_format)
    names = redis_records.tensor_fields(layout.tensors)
    kept = inputs[-layout.rewarm_steps:] if layout.rewarm_steps else inputs[:0]
    keys = [SESSION + session_id, MARKER + session_id, GEN,
            redis_records.STATE + session_id, INPUTS + session_id, HISTORY + session_id,
            version_key(layout.model, layout.version), VLIVES,
            version_key(layout.model, text(fields[b"version"]))]
    args = [fields[b"gen"], ttl.ms, ttl.marker_ms, ttl.label, LIVE, session_id, OWNER,
            write_id(), redis_records.NEWEST, record_format, whole, layout.version,
            layout_json(layout.tensors), kept.astype("<f4").tobytes(), repr(time.time()),
            ttl.field, layout.max_sessions or 0, SESSION, len(old_fields), *old_fields,
            len(names), *names, *pairs[1::2]]
    return keys, args


def outcome(session_id: str, layout: StateLayout, out: list[Any]) -> Any:
    """The script's `now` on success; the error of any other answer."""
    status = text(out[0])
    if status == "ok":
        return out[1]
    if status == "missing":
        raise not_found(session_id, out[1])
    if status == "format":
        raise redis_records.too_new(session_id, out[1])
    if status == "full":
        raise version_full(layout, layout.max_sessions or 0)
    raise session_changed(session_id)


class RedisMigration:
    """`recent_inputs` and `move` for RedisStateStore; the attributes below are the store's."""

    _client: Any
    _where: str
    _move: Any  # redis_move.lua, registered by the store
    record_format: int
    _timeouts: Timeouts
    _fetch: Callable[[str], Awaitable[dict[bytes, Any]]]
    _record: Callable[[str, dict[bytes, Any]], SessionRecord]

    async def recent_inputs(self, session_id: str, features: int
                            ) -> tuple[SessionRecord, np.ndarray]:
        fields, kept = await recent_inputs(self._client, self._where, session_id, features)
        return self._record(session_id, fields), kept

    async def move(self, layout: StateLayout, expect: SessionRecord,
                   state: dict[str, np.ndarray], inputs: np.ndarray) -> SessionRecord:
        """Read the hash, check it is the session the migration read, then the gen-checked
        script: a step between the two reads or after them refuses the move."""
        fields = await self._fetch(expect.id)
        if not same_point(fields, expect):
            raise session_changed(expect.id)
        ttl = self._timeouts.of_layout(layout)
        keys, args = move_args(fields, layout, state, inputs, self.record_format, ttl,
                               expect.id)
        async with guard(self._where):
            now = outcome(expect.id, layout, await self._move(keys=keys, args=args))
        fields.update({b"last_used": now, b"version": str(layout.version).encode(),
                       b"created": args[14], TTL: ttl.field})
        return self._record(expect.id, fields)
