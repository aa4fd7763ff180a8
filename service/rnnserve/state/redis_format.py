"""How the Redis store lays sessions out: the keys, and the bytes of states and outputs.

Key layout (PREFIX is `rnnserve:`):

    rnnserve:s:{id}        hash, the session; PEXPIRE = the idle timeout, refreshed on every write
        model, version     the model version the state belongs to
        created, last_used epoch seconds (last_used is Redis's clock, the one its TTL runs on)
        steps, owner       timesteps taken since create/reset; the creating client
        holder             which attach holds the session (absent: 0, its creator); raised by
                           redis_attach.lua, which also publishes "{id} {holder}" on
                           rnnserve:attached for every replica
        client             the client address the session counts against (keys off), if any
        gen                the optimistic-concurrency stamp; every write takes a fresh value
                           from rnnserve:gen, so a gathered gen can never match a later
                           incarnation of the same id (no ABA after delete + create)
        wid                the write id of the last script that wrote the hash: a random
                           128-bit hex the server makes per call, so a script resent after a
                           lost reply finds its own id and answers as its first run did
                           (scatter: 'landed', written) instead of failing its gen check
        layout             JSON [[name, layers, hidden], ...] of the state tensors
        ttl                the session's idle timeout in seconds: its model version's
                           (redis_ttl); absent in records of older releases
        fmt                the record format (absent: 1), which says where the state is
                           (redis_records):
        t:{name}           format 1: raw float32 little-endian bytes of that tensor,
                           [layers, hidden], one field per tensor
        last_id, last_out  the latest step id and its outputs (outputs_bytes), for a replay
    rnnserve:h:{id}        list, the replay window's earlier steps, newest first
                           (redis_history); the hash's TTL as of its latest push
    rnnserve:t:{id}        format 2: string, the state tensors' bytes back to back in layout
                           order; the hash's TTL, set by the same scripts
    rnnserve:k:{id}        string "{ttl_s} {steps} {model}", TTL = idle timeout + 1 day. It
                           outlives the hash, so a missing hash with a marker means "expired"
                           (and says after how long) rather than "unknown"; delete removes it
    rnnserve:w:{wid}       a delete's receipt "{steps} {model}", for a minute: the hash that
                           would hold its write id is gone, and a resent delete answers from it
    rnnserve:gen           counter behind every gen
    rnnserve:models        set of model names that have (or had) live sessions
    rnnserve:live:{model}  sorted set: session id -> expiry in epoch ms (Redis clock). It is
                           what counts live sessions (max_sessions, live_sessions(), metrics)
                           without a SCAN; it is kept in step with the hash by the same scripts
    rnnserve:vlive:{model}/{version}  sorted set: session id -> a lower bound of its expiry,
                           per model version, for the version's own max_sessions
                           (redis_create): written by creates, pruned where counted
    rnnserve:vlives        set of "{model}/{version}" that have such a set (the sweep's list)
    rnnserve:owner:{owner} the same per creating owner (API key identity), for per-key caps;
                           pruned by score when that owner creates or is counted
    rnnserve:client:{addr} sorted set: session id -> expiry as of its create, per client
                           address (the per-address cap; see redis_client_sets)
    rnnserve:clients       sorted set: address -> the earliest score in its client set"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnserve.errors import InvalidInput, SessionNotFound, UnknownSession
from rnnserve.state.base import SessionRecord, StateLayout
from rnnserve.state.redis_ttl import record_ttl

PREFIX = "rnnserve:"
SESSION = PREFIX + "s:"
MARKER = PREFIX + "k:"
LIVE = PREFIX + "live:"
MODELS = PREFIX + "models"
GEN = PREFIX + "gen"
OWNER = PREFIX + "owner:"
CLIENT = PREFIX + "client:"
CLIENTS = PREFIX + "clients"
RECEIPT = PREFIX + "w:"
RECEIPT_MS = 60_000  # how long a delete's receipt answers a resend of that delete
VLIVE = PREFIX + "vlive:"
VLIVES = PREFIX + "vlives"
META = (b"model", b"version", b"gen", b"steps", b"created", b"last_used", b"owner", b"layout",
        b"holder", b"ttl")


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def write_id() -> str:
    """A fresh write id for one script call: made here, with no round trip, and random enough
    (128 bits) that no two calls of any replica share one."""
    return secrets.token_hex(16)


def layout_json(tensors: Sequence[tuple[str, int, int]]) -> str:
    return json.dumps([[name, layers, hidden] for name, layers, hidden in tensors],
                      separators=(",", ":"))


def state_bytes(
    tensors: Sequence[tuple[str, int, int]], state: dict[str, np.ndarray] | None
) -> list[bytes]:
    """Each tensor of a [layers, 1, hidden] state as raw float32 LE bytes (zeros if absent)."""
    out: list[bytes] = []
    for name, layers, hidden in tensors:
        value = None if state is None else state.get(name)
        if value is None:
            out.append(bytes(4 * layers * hidden))
            continue
        arr = np.asarray(value)
        if arr.size != layers * hidden:
            raise InvalidInput(f"state {name!r} has shape {list(arr.shape)}; expected "
                               f"[{layers}, 1, {hidden}]")
        out.append(np.ascontiguousarray(arr.reshape(layers, hidden), dtype="<f4").tobytes())
    return out


def outputs_bytes(outputs: np.ndarray) -> bytes:
    """A step's outputs [time, out] as 8 bytes of shape (two uint32) then float32 data."""
    arr = np.ascontiguousarray(outputs, dtype="<f4")
    return np.asarray(arr.shape, "<u4").tobytes() + arr.tobytes()


def outputs_from(raw: bytes) -> np.ndarray:
    shape = tuple(int(d) for d in np.frombuffer(raw[:8], "<u4"))
    return np.frombuffer(raw[8:], "<f4").reshape(shape).copy()


def not_found(session_id: str, marker: Any) -> SessionNotFound:
    """Unknown, or expired (its marker outlives the hash and holds the timeout then)."""
    if marker:
        ttl = text(marker).split(" ", 1)[0]
        return SessionNotFound(f"session {session_id!r} expired after {ttl} s idle; "
                               "create a new one")
    return UnknownSession(f"unknown session {session_id!r}")


def version_key(model: str, version: int | str) -> str:
    """The sorted set of one model version's live ids (its max_sessions)."""
    return f"{VLIVE}{model}/{version}"


def record_from(session_id: str, meta: dict[bytes, Any], ttl_s: float) -> SessionRecord:
    """A session's record from its hash fields (a missing holder field is 0: its creator;
    a missing `ttl`, from an older release, is `ttl_s`: the reader's default)."""
    return SessionRecord(
        id=session_id, model=text(meta[b"model"]), version=int(meta[b"version"]),
        created=float(meta[b"created"]), last_used=float(meta[b"last_used"]),
        ttl_s=record_ttl(meta, ttl_s) or ttl_s, steps=int(meta[b"steps"]),
        owner=text(meta.get(b"owner", b"")),
        holder=int(meta.get(b"holder") or 0), client=text(meta.get(b"client", b"")),
        last_step_id=text(meta[b"last_id"]) if meta.get(b"last_id") else None,
    )


@dataclass
class GatherToken:
    """What gather learnt, for scatter: the layout, each row's gen and record."""

    layout: StateLayout
    gens: list[bytes | None]
    records: list[SessionRecord | None]
