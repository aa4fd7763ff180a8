"""The record formats of a Redis session: where its state tensors are kept, by number.

    format 1  no `fmt` field (every record written before formats had numbers): one hash field
              per state tensor, `t:{name}`, its raw float32 little-endian bytes [layers, hidden]
    format 2  `fmt` = 2 in the hash; the state in a string key of its own, rnnserve:t:{id}, the
              tensors' bytes back to back in layout order, given the hash's TTL by every write
              that refreshes the hash's

Why format 2: a Redis hash whose values all fit in 64 bytes is kept as one compact listpack;
a single larger value (any state tensor) turns the whole hash into a hashtable, which costs
an entry, a key string and an allocation per field. Without the tensors the hash holds only
small values, and the state's own key costs less than what that saves: bench/redis_records.py
measures Redis memory per session both ways.

Every other field (model, version, gen, steps, owner, holder, wid, last_id, last_out, layout)
means the same in both. This release reads both formats and writes the one that
--redis-record-format names. A replica of an older release finds no `t:` fields in a format 2
record and cannot step it, so the default stays 1 until every replica runs a release that
reads 2; then the setting is rolled out. A write converts the record it writes to the
configured format (the other format's fields and key go in the same script), so records move
over as their sessions step, and one left idle ends with its TTL.

A record of a format above NEWEST comes from a newer release. Every path refuses it before it
reads or writes anything (SessionFormatTooNew, 503): the session is left exactly as it was,
for a replica of that release to serve. The Lua side of all this is redis_records.lua."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rnnserve.errors import RnnServeError, SessionFormatTooNew
from rnnserve.state.redis_format import PREFIX, state_bytes, text

NEWEST = 2
"""The newest record format this release reads (it reads every one from 1 up)."""
FORMATS = (1, 2)
"""The formats this release can write (--redis-record-format)."""
FORMAT = b"fmt"
STATE = PREFIX + "t:"
"""Format 2's state key prefix: rnnserve:t:{id}."""

Tensors = Sequence[tuple[str, int, int]]


def record_format(session_id: str, raw: Any) -> int:
    """The format of a record from its `fmt` field (absent: 1); SessionFormatTooNew above
    NEWEST, or for a value that is no format number at all."""
    if raw is None:
        return 1
    value = text(raw)
    if value.isdigit() and 1 <= int(value) <= NEWEST:
        return int(value)
    raise too_new(session_id, value)


def too_new(session_id: str, value: Any) -> SessionFormatTooNew:
    return SessionFormatTooNew(
        f"session {session_id!r} is stored in record format {text(value)}, which this "
        f"replica does not read (it reads formats 1 to {NEWEST}): a replica of a newer "
        "rnnserve release wrote it. The session is left as it was; retry (a replica of that "
        "release can serve it) or upgrade this replica", retry_after_s=5)


def tensor_fields(tensors: Tensors) -> list[str]:
    """Format 1's state fields, in layout order."""
    return ["t:" + name for name, _, _ in tensors]


def state_fields(tensors: Tensors, state: dict[str, np.ndarray] | None,
                 fmt: int) -> tuple[list[Any], bytes]:
    """How a write stores `state` (zeros where absent) in format `fmt`: the hash's field,
    value pairs (format 1: one per tensor; format 2: none, the scripts add `fmt`) and the
    state key's value (format 2: all tensors back to back; format 1: empty)."""
    raws = state_bytes(tensors, state)
    if fmt == 1:
        pairs: list[Any] = []
        for field, raw in zip(tensor_fields(tensors), raws, strict=True):
            pairs += [field, raw]
        return pairs, b""
    return [], b"".join(raws)


def read_fields(tensors: Tensors) -> list[bytes]:
    """The hash fields to fetch for a state in either format: `fmt`, then each `t:{name}`
    (format 2's state is the value of its state key, fetched beside them)."""
    return [FORMAT, *(field.encode() for field in tensor_fields(tensors))]


def row_bytes(session_id: str, fmt: int, whole: Any, fields: Sequence[Any],
              tensors: Tensors) -> bytes:
    """One record's state as one float32 LE string in layout order: format 2's state key
    value `whole`, or format 1's `t:` field values `fields` joined."""
    raw = whole if fmt == 2 else b"".join(v or b"" for v in fields)
    expected = 4 * sum(layers * hidden for _, layers, hidden in tensors)
    if not isinstance(raw, bytes) or len(raw) != expected:
        size = len(raw) if isinstance(raw, bytes) else 0
        raise RnnServeError(f"session {session_id!r}: its stored state (record format {fmt}) "
                            f"has {size} bytes; its layout needs {expected}")
    return raw


def unstack(rows: Sequence[bytes], tensors: Tensors) -> dict[str, np.ndarray]:
    """Rows of row_bytes() as each tensor [layers, rows, hidden] (float32, writable)."""
    width = sum(layers * hidden for _, layers, hidden in tensors)
    block = np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), width)
    out: dict[str, np.ndarray] = {}
    at = 0
    for name, layers, hidden in tensors:
        part = block[:, at:at + layers * hidden].reshape(len(rows), layers, hidden)
        out[name] = part.transpose(1, 0, 2).astype(np.float32)
        at += layers * hidden
    return out


def stack_rows(states: Mapping[str, np.ndarray], tensors: Tensors, fmt: int) -> list[np.ndarray]:
    """A batch's states [layers, batch, hidden] per tensor as the per-row values a scatter
    sends in format `fmt`: each tensor [batch, layers*hidden] (format 1), or one
    [batch, total] of them all (format 2)."""
    parts = [np.ascontiguousarray(states[name].transpose(1, 0, 2), dtype="<f4")
             .reshape(states[name].shape[1], layers * hidden)
             for name, layers, hidden in tensors]
    if fmt == 1:
        return parts
    return [np.ascontiguousarray(np.concatenate(parts, axis=1))]
