"""The inputs a Redis session keeps for migration (model.json `rewarm_steps` W > 0):

    rnnserve:in:{id}   string: the session's last W timesteps of input, float32
                       little-endian, oldest first, each `features` wide; the hash's TTL.
                       Appended (and cut to W) by redis_scatter.lua in the write of the state
    in_steps           hash field: the session's `steps` when its inputs were last appended

Both are new names that a replica of an older release never reads, so records stay readable
by it (docs/deploy.md, "Rolling upgrades"). Such a replica steps a session without keeping its
inputs: then `in_steps` is not the session's `steps`, and the kept inputs are refused as
incomplete rather than replayed wrong; and the next step this code writes restarts the window
(redis_scatter.lua drops what was kept when `in_steps` is not the steps before it, as after a
reset), so the session can be migrated again once it has taken `rewarm_steps` steps since."""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnserve.state import redis_records
from rnnserve.state.base import unkept
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import MARKER, PREFIX, SESSION, not_found, text

INPUTS = PREFIX + "in:"


async def recent_inputs(client: Any, where: str, session_id: str, features: int
                        ) -> tuple[dict[bytes, Any], np.ndarray]:
    """The session's hash and its kept inputs [n, features], read in one MULTI so that they
    agree; SessionNotFound as any read, MigrationRefused (unkept) when steps went unkept."""
    async with guard(where):
        async with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(SESSION + session_id)
            pipe.get(MARKER + session_id)
            pipe.get(INPUTS + session_id)
            fields, marker, kept = await pipe.execute()
    if not fields:
        raise not_found(session_id, marker)
    redis_records.record_format(session_id, fields.get(redis_records.FORMAT))
    steps = int(text(fields.get(b"steps", b"0")))
    rows = np.frombuffer(kept or b"", "<f4").reshape(-1, features)
    if steps == 0:
        return dict(fields), rows[:0].astype(np.float32)
    if text(fields.get(b"in_steps", b"")) != str(steps):
        raise unkept(session_id)
    return dict(fields), rows[-steps:].astype(np.float32)
