"""The Redis state store: sessions shared by every replica that points at one Redis.

Key layout (PREFIX is `rnnserve:`):

    rnnserve:s:{id}        hash, the session; PEXPIRE = the idle timeout, refreshed on every write
        model, version     the model version the state belongs to
        created, last_used epoch seconds (last_used is Redis's clock, the one its TTL runs on)
        steps, owner       timesteps taken since create/reset; the creating client
        gen                the optimistic-concurrency stamp; every write takes a fresh value
                           from rnnserve:gen, so a gathered gen can never match a later
                           incarnation of the same id (no ABA after delete + create)
        layout             JSON [[name, layers, hidden], ...] of the state tensors
        t:{name}           raw float32 little-endian bytes of that tensor, [layers, hidden]
    rnnserve:k:{id}        string "{ttl_s} {steps} {model}", TTL = idle timeout + 1 day. It
                           outlives the hash, so a missing hash with a marker means "expired"
                           (and says after how long) rather than "unknown"; delete removes it
    rnnserve:gen           counter behind every gen
    rnnserve:models        set of model names that have (or had) live sessions
    rnnserve:live:{model}  sorted set: session id -> expiry in epoch ms (Redis clock). It is
                           what counts live sessions (max_sessions, live_sessions(), metrics)
                           without a SCAN; it is kept in step with the hash by the same scripts
    rnnserve:owner:{owner} the same per creating owner (API key identity), for per-key caps;
                           pruned by score when that owner creates or is counted

Every write is one Lua script, so it is atomic and one round trip: scatter checks each row's
gen against the gathered one and writes only unchanged sessions (the others come back as
conflicts for the batcher to re-run), whatever the batch size. Reads (gather, get, read) are
one non-transactional pipeline. The scripts touch keys they derive from arguments
(rnnserve:live:{model}), which standalone Redis and Sentinel allow but Redis Cluster does not:
this store targets a single Redis (primary) by design; all sessions' keys share its memory.

Clocks: TTLs and `last_used` come from Redis's TIME inside the scripts, so replicas with
skewed clocks agree on when a session expires. `created` is the caller's timestamp.

Delivery is at-least-once: redis-py is told not to retry, because a scatter whose reply was
lost may have been applied; a retried one would then fail its gen check and the step would
run twice. A connection error surfaces as Unavailable (503, retry after 1 s) instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rnnserve.errors import (
    InvalidInput,
    RnnServeError,
    SessionNotFound,
    SessionOnOtherVersion,
    Unavailable,
)
from rnnserve.state.base import Gathered, SessionRecord, StateLayout, Written

log = logging.getLogger("rnnserve.state.redis")

SessionEvent = Callable[[str, str, int], None]
"""(event, model, steps): event is created, deleted or expired."""

PREFIX = "rnnserve:"
SESSION = PREFIX + "s:"
MARKER = PREFIX + "k:"
LIVE = PREFIX + "live:"
MODELS = PREFIX + "models"
GEN = PREFIX + "gen"
OWNER = PREFIX + "owner:"
MARKER_GRACE_MS = 86_400_000  # how long after expiry an id still answers "expired"
SWEEP_LIMIT = 1000  # expired ids pruned per model per sweep (bounds the script's run time)
RESET_ATTEMPTS = 8
META = (b"model", b"version", b"gen", b"steps", b"created", b"last_used", b"owner", b"layout")

# The shared head of the write scripts: Redis's clock, as ms and as "seconds.micros".
_NOW = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
"""

# KEYS: hash, marker, gen counter, models set, live zset of the model, owner zset.
# ARGV: replace (0/1), max_sessions, ttl_ms, marker_ttl_ms, ttl label, id, model, live prefix,
#       owner prefix, then field, value pairs (without gen and last_used).
# -> {'taken'} | {'full', n} | {'ok', now, replaced_model, replaced_steps, expired_model,
#    expired_steps} (empty strings where nothing was replaced or found expired)
_CREATE = _NOW + """
local old = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner')
local rmodel, rsteps, emodel, esteps = '', '', '', ''
if old[1] then
  if ARGV[1] ~= '1' then return {'taken'} end
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[8] .. old[1], ARGV[6])
  redis.call('ZREM', ARGV[9] .. (old[3] or ''), ARGV[6])
  rmodel, rsteps = old[1], old[2] or '0'
else
  local mark = redis.call('GET', KEYS[2])
  if mark then  -- an expiry no sweep has counted yet: count it now, exactly once
    local label, steps, model = string.match(mark, '^(%S+) (%S+) (.*)$')
    if model and redis.call('ZREM', ARGV[8] .. model, ARGV[6]) == 1 then
      emodel, esteps = model, steps
    end
  end
  local total = 0
  for _, m in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    total = total + redis.call('ZCOUNT', ARGV[8] .. m, '(' .. now_ms, '+inf')
  end
  if total >= tonumber(ARGV[2]) then return {'full', tostring(total)} end
end
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now}
for i = 10, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[5] .. ' 0 ' .. ARGV[7], 'PX', ARGV[4])
redis.call('SADD', KEYS[4], ARGV[7])
redis.call('ZADD', KEYS[5], now_ms + tonumber(ARGV[3]), ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now_ms)
redis.call('ZADD', KEYS[6], now_ms + tonumber(ARGV[3]), ARGV[6])
return {'ok', now, rmodel, rsteps, emodel, esteps}
"""

# KEYS: gen counter, live zset of the model, then hash, marker per row.
# ARGV: ttl_ms, marker_ttl_ms, ttl label, model, k (tensors), k field names, owner prefix,
#       then per row: id, gathered gen, steps to add, owner, step id ('' for none),
#       outputs bytes, k state byte strings.
# -> {now, then per row: status ('ok' | 'conflict' | 'missing' | 'replay'), steps or marker,
#     recorded outputs (replay only, else '')}
_SCATTER = _NOW + """
local ttl_ms, marker_ttl_ms = tonumber(ARGV[1]), ARGV[2]
local k = tonumber(ARGV[5])
local owners = ARGV[6 + k]
local stride = 6 + k
local out = {now}
for r = 0, (#KEYS - 2) / 2 - 1 do
  local hash, marker = KEYS[3 + 2 * r], KEYS[4 + 2 * r]
  local base = 6 + k + r * stride
  local step_id = ARGV[base + 5]
  local cur = redis.call('HMGET', hash, 'gen', 'last_id', 'last_out', 'steps')
  if not cur[1] then
    out[#out + 1] = 'missing'
    out[#out + 1] = redis.call('GET', marker) or ''
    out[#out + 1] = ''
  elseif step_id ~= '' and cur[2] == step_id then
    out[#out + 1] = 'replay'
    out[#out + 1] = cur[4]
    out[#out + 1] = cur[3]
  elseif cur[1] ~= ARGV[base + 2] then
    out[#out + 1] = 'conflict'
    out[#out + 1] = ''
    out[#out + 1] = ''
  else
    local args = {'last_used', now, 'gen', tostring(redis.call('INCR', KEYS[1]))}
    for j = 1, k do
      args[#args + 1] = ARGV[5 + j]
      args[#args + 1] = ARGV[base + 6 + j]
    end
    if step_id ~= '' then
      args[#args + 1] = 'last_id'
      args[#args + 1] = step_id
      args[#args + 1] = 'last_out'
      args[#args + 1] = ARGV[base + 6]
    elseif cur[2] then
      redis.call('HDEL', hash, 'last_id', 'last_out')
    end
    redis.call('HSET', hash, unpack(args))
    local steps = redis.call('HINCRBY', hash, 'steps', ARGV[base + 3])
    redis.call('PEXPIRE', hash, ttl_ms)
    redis.call('SET', marker, ARGV[3] .. ' ' .. steps .. ' ' .. ARGV[4], 'PX', marker_ttl_ms)
    redis.call('ZADD', KEYS[2], now_ms + ttl_ms, ARGV[base + 1])
    redis.call('ZADD', owners .. ARGV[base + 4], now_ms + ttl_ms, ARGV[base + 1])
    out[#out + 1] = 'ok'
    out[#out + 1] = tostring(steps)
    out[#out + 1] = ''
  end
end
return out
"""

# KEYS: hash, marker, gen counter. ARGV: gathered gen, ttl_ms, marker_ttl_ms, ttl label,
# live prefix, id, owner prefix, then field, value pairs of the new state.
# -> {'missing', marker} | {'conflict'} | {'ok', now}
_RESET = _NOW + """
local cur = redis.call('HMGET', KEYS[1], 'gen', 'model', 'owner')
if not cur[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
if cur[1] ~= ARGV[1] then return {'conflict'} end
local args = {'gen', tostring(redis.call('INCR', KEYS[3])), 'last_used', now, 'steps', '0'}
for i = 8, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('HDEL', KEYS[1], 'last_id', 'last_out')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[4] .. ' 0 ' .. cur[2], 'PX', ARGV[3])
redis.call('ZADD', ARGV[5] .. cur[2], now_ms + tonumber(ARGV[2]), ARGV[6])
redis.call('ZADD', ARGV[7] .. (cur[3] or ''), now_ms + tonumber(ARGV[2]), ARGV[6])
return {'ok', now}
"""

# KEYS: hash, marker. ARGV: live prefix, id, owner prefix.
# -> {'missing', marker} | {'deleted', model, steps}
_DELETE = """
local v = redis.call('HMGET', KEYS[1], 'model', 'steps', 'owner')
if not v[1] then return {'missing', redis.call('GET', KEYS[2]) or ''} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', ARGV[1] .. v[1], ARGV[2])
redis.call('ZREM', ARGV[3] .. (v[3] or ''), ARGV[2])
return {'deleted', v[1], v[2] or '0'}
"""

# KEYS: models set. ARGV: live prefix, session prefix, marker prefix, limit.
# Drops ids whose expiry passed from each live zset (re-scoring any whose hash is in fact
# still alive), and forgets models with no live session left.
# -> {{model, live count, ...}, {model, steps of an expired session, ...}}
_SWEEP = _NOW + """
local counts, ended = {}, {}
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local z = ARGV[1] .. m
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[4]))
  for _, id in ipairs(ids) do
    local h = ARGV[2] .. id
    local pttl = redis.call('PTTL', h)
    if pttl > 0 and redis.call('HGET', h, 'model') == m then
      redis.call('ZADD', z, now_ms + pttl, id)
    else
      redis.call('ZREM', z, id)
      local mark = redis.call('GET', ARGV[3] .. id)
      local steps = '0'
      if mark then steps = string.match(mark, '^%S+ (%S+) ') or '0' end
      ended[#ended + 1] = m
      ended[#ended + 1] = steps
    end
  end
  local n = redis.call('ZCARD', z)
  if n == 0 then
    redis.call('SREM', KEYS[1], m)
  else
    counts[#counts + 1] = m
    counts[#counts + 1] = tostring(n)
  end
end
return {counts, ended}
"""

# KEYS: owner zset. -> live sessions of that owner (expired ids pruned first)
_OWNED = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZCARD', KEYS[1])
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe_url(url: str) -> str:
    """The URL without credentials, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _layout_json(tensors: Sequence[tuple[str, int, int]]) -> str:
    return json.dumps([[name, layers, hidden] for name, layers, hidden in tensors],
                      separators=(",", ":"))


def _state_bytes(
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


def _outputs_bytes(outputs: np.ndarray) -> bytes:
    """A step's outputs [time, out] as 8 bytes of shape (two uint32) then float32 data."""
    arr = np.ascontiguousarray(outputs, dtype="<f4")
    return np.asarray(arr.shape, "<u4").tobytes() + arr.tobytes()


def _outputs_from(raw: bytes) -> np.ndarray:
    shape = tuple(int(d) for d in np.frombuffer(raw[:8], "<u4"))
    return np.frombuffer(raw[8:], "<f4").reshape(shape).copy()


def _from_bytes(raw: bytes, layers: int, hidden: int) -> np.ndarray:
    if len(raw) != 4 * layers * hidden:
        raise RnnServeError(f"a stored state has {len(raw)} bytes; expected "
                            f"{4 * layers * hidden} ([{layers}, {hidden}] float32)")
    return np.frombuffer(raw, dtype="<f4").reshape(layers, hidden).astype(np.float32)


@dataclass
class _Token:
    """What gather learnt, for scatter: the layout, each row's gen and record."""

    layout: StateLayout
    gens: list[bytes | None]
    records: list[SessionRecord | None]


class RedisStateStore:
    """Sessions in Redis, shared by replicas; the memory store's semantics, except:

    - a full store always rejects (no LRU eviction; `when_full` is not offered);
    - a step gathered before another write to its session (another replica's step, a reset,
      a delete + create of the same id) comes back as a conflict and is re-run by the batcher
      on the new state, where the memory store keeps a reset and still returns the step;
    - `expired` events come from whichever replica's sweep (or create) notices the expiry
      first, a sweep interval late at most, each exactly once across replicas: so each
      replica's live gauge fed by these events drifts, but their sum across replicas holds;
      live_sessions() is the exact shared count."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        max_sessions: int,
        on_event: SessionEvent | None = None,
        connect_timeout_s: float = 2.0,
        command_timeout_s: float = 5.0,
        sweep_interval_s: float | None = None,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._where = _safe_url(url)
        self._on_event = on_event or (lambda event, model, steps: None)
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._marker_ttl_ms = self._ttl_ms + MARKER_GRACE_MS
        self._ttl_label = f"{ttl_s:g}"
        self._sweep_interval = (sweep_interval_s if sweep_interval_s is not None
                                else max(0.05, min(5.0, ttl_s / 4)))
        self._client: aioredis.Redis = aioredis.from_url(
            url, decode_responses=False, socket_connect_timeout=connect_timeout_s,
            socket_timeout=command_timeout_s, retry=Retry(NoBackoff(), 0),
            health_check_interval=10,
        )
        self._create = self._client.register_script(_CREATE)
        self._scatter = self._client.register_script(_SCATTER)
        self._reset = self._client.register_script(_RESET)
        self._delete = self._client.register_script(_DELETE)
        self._sweep = self._client.register_script(_SWEEP)
        self._owned = self._client.register_script(_OWNED)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    # -- errors ----------------------------------------------------------------------------

    def _unavailable(self, exc: RedisError) -> NoReturn:
        if isinstance(exc, RedisConnectionError | RedisTimeoutError):
            raise Unavailable(f"the state store (Redis at {self._where}) is unreachable: "
                              f"{exc}", retry_after_s=1) from exc
        raise Unavailable(f"the state store (Redis at {self._where}) failed: {exc}",
                          retry_after_s=1) from exc

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Redis errors become Unavailable here: nothing of redis-py leaks past this store."""
        try:
            yield
        except RedisError as exc:
            self._unavailable(exc)
        except OSError as exc:  # a socket error redis-py did not wrap
            raise Unavailable(f"the state store (Redis at {self._where}) is unreachable: "
                              f"{exc}", retry_after_s=1) from exc

    def _not_found(self, session_id: str, marker: Any) -> SessionNotFound:
        """Unknown, or expired (its marker outlives the hash and holds the timeout then)."""
        if marker:
            ttl = _text(marker).split(" ", 1)[0]
            return SessionNotFound(f"session {session_id!r} expired after {ttl} s idle; "
                                   "create a new one")
        return SessionNotFound(f"unknown session {session_id!r}: create one with POST "
                               "/v1/models/{model}/sessions")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and PING, so a server pointed at a dead Redis fails at start, clearly."""
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise Unavailable(f"cannot start the Redis state store: Redis at {self._where} "
                              f"does not answer ({exc}); start Redis or fix --state-store",
                              retry_after_s=1) from exc
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="redis-session-sweeper")

    async def close(self) -> None:
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
            self._sweeper = None
        await self._client.aclose()

    async def _sweep_forever(self) -> None:
        """Sweep until close(). The flag, not only the cancel, ends the loop: redis-py may
        turn a cancel that lands mid-command into a connection error (Unavailable here)."""
        while not self._closing:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except Unavailable as exc:  # Redis down for a while: keep serving what we can
                if self._closing:
                    return
                log.warning("session sweep failed: %s", exc.message)
            except Exception:  # never let a bad reply end the sweeping for good
                log.exception("session sweep failed")

    async def sweep(self) -> dict[str, int]:
        """Prune expired ids from the live sets (reporting each as an `expired` event, once
        across all replicas) and return the live sessions per model."""
        async with self._guard():
            counts, ended = await self._sweep(
                keys=[MODELS], args=[LIVE, SESSION, MARKER, SWEEP_LIMIT])
        for i in range(0, len(ended), 2):
            self._on_event("expired", _text(ended[i]), int(ended[i + 1]))
        return {_text(counts[i]): int(counts[i + 1]) for i in range(0, len(counts), 2)}

    # -- records ---------------------------------------------------------------------------

    def _record(self, session_id: str, meta: dict[bytes, Any]) -> SessionRecord:
        return SessionRecord(
            id=session_id, model=_text(meta[b"model"]), version=int(meta[b"version"]),
            created=float(meta[b"created"]), last_used=float(meta[b"last_used"]),
            ttl_s=self.ttl_s, steps=int(meta[b"steps"]), owner=_text(meta.get(b"owner", b"")),
        )

    async def _fetch(self, session_id: str) -> dict[bytes, Any]:
        """The whole hash, or SessionNotFound saying unknown or expired: one round trip."""
        async with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(SESSION + session_id)
                pipe.get(MARKER + session_id)
                fields, marker = await pipe.execute()
        if not fields:
            raise self._not_found(session_id, marker)
        return dict(fields)

    # -- the interface ---------------------------------------------------------------------

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        """One script: refuse a taken id (unless `replace`) or a full store, then write the
        hash, its marker and its live-set entry together."""
        fields: list[Any] = [
            "model", layout.model, "version", layout.version, "created", repr(record.created),
            "steps", 0, "owner", record.owner, "layout", _layout_json(layout.tensors)]
        for (name, _, _), raw in zip(layout.tensors, _state_bytes(layout.tensors, state),
                                     strict=True):
            fields += ["t:" + name, raw]
        async with self._guard():
            out = await self._create(
                keys=[SESSION + record.id, MARKER + record.id, GEN, MODELS, LIVE + layout.model,
                      OWNER + record.owner],
                args=[int(replace), self.max_sessions, self._ttl_ms, self._marker_ttl_ms,
                      self._ttl_label, record.id, layout.model, LIVE, OWNER, *fields])
        status = _text(out[0])
        if status == "taken":
            raise Unavailable(f"session id {record.id!r} is taken", retry_after_s=0)
        if status == "full":
            raise Unavailable(f"the server holds its maximum of {self.max_sessions} live "
                              "sessions; delete idle ones or retry later", retry_after_s=5)
        now, rmodel, rsteps, emodel, esteps = (_text(v) for v in out[1:6])
        if emodel:
            self._on_event("expired", emodel, int(esteps))
        if rmodel:
            self._on_event("deleted", rmodel, int(rsteps))
        self._on_event("created", layout.model, 0)
        return SessionRecord(id=record.id, model=layout.model, version=layout.version,
                             created=record.created, last_used=float(now), ttl_s=self.ttl_s,
                             steps=0, owner=record.owner)

    async def get(self, session_id: str) -> SessionRecord:
        return self._record(session_id, await self._fetch(session_id))

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        """The record and the state, each tensor [layers, 1, hidden]."""
        fields = await self._fetch(session_id)
        state = {name: _from_bytes(fields[b"t:" + name.encode()], layers, hidden)[:, None, :]
                 for name, layers, hidden in json.loads(fields[b"layout"])}
        return self._record(session_id, fields), state

    async def reset(
        self, session_id: str, state: dict[str, np.ndarray] | None
    ) -> SessionRecord:
        """Read the layout, then a gen-checked write (retried if a step lands in between,
        since a reset must win over steps that ran before it)."""
        for _ in range(RESET_ATTEMPTS):
            fields = await self._fetch(session_id)
            tensors = [(str(n), int(layers), int(hidden))
                       for n, layers, hidden in json.loads(fields[b"layout"])]
            pairs: list[Any] = []
            for (name, _, _), raw in zip(tensors, _state_bytes(tensors, state), strict=True):
                pairs += ["t:" + name, raw]
            async with self._guard():
                out = await self._reset(
                    keys=[SESSION + session_id, MARKER + session_id, GEN],
                    args=[fields[b"gen"], self._ttl_ms, self._marker_ttl_ms, self._ttl_label,
                          LIVE, session_id, OWNER, *pairs])
            status = _text(out[0])
            if status == "missing":
                raise self._not_found(session_id, out[1])
            if status == "ok":
                fields.update({b"last_used": out[1], b"steps": b"0"})
                return self._record(session_id, fields)
        raise Unavailable(f"session {session_id!r} is too busy to reset; retry",
                          retry_after_s=0.1)

    async def delete(self, session_id: str) -> None:
        async with self._guard():
            out = await self._delete(keys=[SESSION + session_id, MARKER + session_id],
                                     args=[LIVE, session_id, OWNER])
        if _text(out[0]) == "missing":
            raise self._not_found(session_id, out[1])
        self._on_event("deleted", _text(out[1]), int(out[2]))

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None]
    ) -> Gathered:
        """One pipelined round trip (HMGET of the fields this layout needs, and the marker
        to tell expired from unknown), stacked into [layers, batch, hidden] per tensor."""
        names = [b"t:" + name.encode() for name, _, _ in layout.tensors]
        expected_layout = _layout_json(layout.tensors).encode()
        version = str(layout.version).encode()
        async with self._guard():
            async with self._client.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    pipe.hmget(SESSION + session_id, [*META, *names])
                    pipe.get(MARKER + session_id)
                replies = await pipe.execute() if ids else []
        states = layout.zeros(len(ids))
        errors: list[RnnServeError | None] = [None] * len(ids)
        gens: list[bytes | None] = [None] * len(ids)
        records: list[SessionRecord | None] = [None] * len(ids)
        for i, session_id in enumerate(ids):
            values, marker = replies[2 * i], replies[2 * i + 1]
            meta = dict(zip(META, values[: len(META)], strict=True))
            if meta[b"gen"] is None:
                errors[i] = self._not_found(session_id, marker)
                continue
            owner = owners[i]
            if owner is not None and _text(meta.get(b"owner") or b"") != owner:
                errors[i] = SessionNotFound(f"unknown session {session_id!r}: create one with "
                                            "POST /v1/models/{model}/sessions")
                continue
            if (meta[b"model"] != layout.model.encode() or meta[b"version"] != version
                    or meta[b"layout"] != expected_layout):
                errors[i] = SessionOnOtherVersion(f"session {session_id!r} belongs to another "
                                            "model or version")
                continue
            for (name, layers, hidden), raw in zip(layout.tensors, values[len(META):],
                                                   strict=True):
                states[name][:, i, :] = _from_bytes(raw, layers, hidden)
            gens[i] = meta[b"gen"]
            records[i] = self._record(session_id, meta)
        return Gathered(ids, states, errors, token=_Token(layout, gens, records))

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        """One round trip: the recorded outputs if `step_id` is the session's last step."""
        async with self._guard():
            last_id, last_out, steps, who = await self._client.hmget(
                SESSION + session_id, [b"last_id", b"last_out", b"steps", b"owner"])
        if last_id is None or _text(last_id) != step_id or not isinstance(last_out, bytes):
            return None
        if _text(who or b"") != owner:
            return None
        return _outputs_from(last_out), int(_text(steps))

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None],
    ) -> Written:
        """One script call for the batch: each row is written only if its gen is still the
        gathered one; a changed gen is a conflict (another writer came first: run again), a
        missing hash an error (deleted or expired meanwhile). A row whose step id is already
        the session's last one is replayed, never applied twice."""
        token: _Token = gathered.token
        layout = token.layout
        rows = [i for i, error in enumerate(gathered.errors) if error is None]
        n = len(gathered.ids)
        after = [0] * n
        conflict = [False] * n
        errors: list[RnnServeError | None] = list(gathered.errors)
        replayed: list[tuple[np.ndarray, int] | None] = [None] * n
        if not rows:
            return Written(after, conflict, errors, replayed)
        keys: list[str] = [GEN, LIVE + layout.model]
        args: list[Any] = [self._ttl_ms, self._marker_ttl_ms, self._ttl_label, layout.model,
                           len(layout.tensors), *("t:" + name for name, _, _ in layout.tensors),
                           OWNER]
        per_tensor = {name: np.ascontiguousarray(states[name].transpose(1, 0, 2), dtype="<f4")
                      for name, _, _ in layout.tensors}
        for i in rows:
            session_id, before = gathered.ids[i], token.records[i]
            assert before is not None  # gather made a record for every row without error
            keys += [SESSION + session_id, MARKER + session_id]
            step_id = step_ids[i] or ""
            args += [session_id, token.gens[i], int(steps[i]), before.owner, step_id,
                     _outputs_bytes(outputs[i]) if step_id else b"",
                     *(per_tensor[name][i].tobytes() for name, _, _ in layout.tensors)]
        async with self._guard():
            out = await self._scatter(keys=keys, args=args)
        for j, i in enumerate(rows):
            status, value = _text(out[1 + 3 * j]), out[2 + 3 * j]
            if status == "replay":
                replayed[i] = (_outputs_from(bytes(out[3 + 3 * j])), int(_text(value)))
                after[i] = replayed[i][1]  # type: ignore[index]
            elif status == "ok":
                after[i] = int(_text(value))
            elif status == "conflict":
                conflict[i] = True
            elif value:
                errors[i] = self._not_found(gathered.ids[i], value)
            else:
                errors[i] = SessionNotFound(f"session {gathered.ids[i]!r} was deleted during "
                                            "its step")
        return Written(after, conflict, errors, replayed)

    async def owned_sessions(self, owner: str) -> int:
        """Live sessions created by `owner`, across replicas: the size of its sorted set once
        ids past their expiry are dropped (one script, one round trip)."""
        async with self._guard():
            return int(await self._owned(keys=[OWNER + owner]))

    async def live_sessions(self) -> dict[str, int]:
        """Live sessions per model across all replicas: the sizes of the live sorted sets
        after pruning expired ids (so exact up to the sweep it runs; no SCAN of the keys)."""
        return await self.sweep()
