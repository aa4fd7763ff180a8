"""The Redis store's gather: a batch's sessions read in one round trip and stacked for one
ONNX Runtime run.

One non-transactional pipeline, three commands per session: HMGET of the hash fields this
layout needs in either record format (redis_records), GET of the expiry marker (to tell
expired from unknown) and GET of format 2's state key. Without a transaction another
replica's write may land between a row's commands; that write changes the row's gen, so the
scatter finds a conflict and the step runs again on what that write left: a mismatched read
is never written back. Rows that fail (unknown, expired, another owner's, another holder's,
another version's, a record format too new) are errors of their own; the others are stacked
into [layers, batch, hidden] per tensor with one copy."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from rnnserve.errors import RnnServeError, SessionOnOtherVersion, UnknownSession
from rnnserve.state import redis_records
from rnnserve.state.base import Gathered, SessionRecord, StateLayout, replaced
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import (
    MARKER,
    META,
    SESSION,
    GatherToken,
    layout_json,
    not_found,
    record_from,
    text,
)


async def gather(
    client: aioredis.Redis, where: str, ttl_s: float, layout: StateLayout, ids: list[str],
    owners: list[str | None], holders: list[int | None] | None = None,
) -> Gathered:
    """The batch's states, each row's error or record, and the gens its scatter checks."""
    names = redis_records.read_fields(layout.tensors)
    async with guard(where):
        async with client.pipeline(transaction=False) as pipe:
            for session_id in ids:
                pipe.hmget(SESSION + session_id, [*META, *names])
                pipe.get(MARKER + session_id)
                pipe.get(redis_records.STATE + session_id)
            replies = await pipe.execute() if ids else []
    check = RowCheck(layout)
    errors: list[RnnServeError | None] = [None] * len(ids)
    rows: list[bytes] = []
    found: list[int] = []
    gens: list[bytes | None] = [None] * len(ids)
    records: list[SessionRecord | None] = [None] * len(ids)
    for i, session_id in enumerate(ids):
        values, marker, whole = replies[3 * i: 3 * i + 3]
        meta = dict(zip(META, values[: len(META)], strict=True))
        try:
            check(session_id, meta, marker, owners[i],
                  holders[i] if holders is not None else None)
            fmt = redis_records.record_format(session_id, values[len(META)])
            rows.append(redis_records.row_bytes(session_id, fmt, whole, values[len(META) + 1:],
                                                layout.tensors))
        except RnnServeError as exc:
            errors[i] = exc
            continue
        found.append(i)
        gens[i] = meta[b"gen"]
        records[i] = record_from(session_id, meta, ttl_s)
    states = layout.zeros(len(ids))
    if found:
        for name, block in redis_records.unstack(rows, layout.tensors).items():
            states[name][:, found, :] = block
    return Gathered(ids, states, errors, token=GatherToken(layout, gens, records))


class RowCheck:
    """Whether one gathered row may be stepped in this batch; raises what it is if not."""

    def __init__(self, layout: StateLayout) -> None:
        self.model = layout.model.encode()
        self.version = str(layout.version).encode()
        self.layout = layout_json(layout.tensors).encode()

    def __call__(self, session_id: str, meta: dict[bytes, Any], marker: Any,
                 owner: str | None, holder: int | None) -> None:
        if meta[b"gen"] is None:
            raise not_found(session_id, marker)
        if owner is not None and text(meta.get(b"owner") or b"") != owner:
            raise UnknownSession(f"unknown session {session_id!r}")
        if holder is not None and int(meta[b"holder"] or 0) != holder:
            raise replaced(session_id)
        if (meta[b"model"] != self.model or meta[b"version"] != self.version
                or meta[b"layout"] != self.layout):
            raise SessionOnOtherVersion(f"session {session_id!r} belongs to another model or "
                                        "version")
