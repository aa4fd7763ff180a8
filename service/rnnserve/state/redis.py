"""The Redis state store: sessions shared by every replica that points at one Redis.

The keys and the bytes stored under them are laid out in redis_format, the numbered formats
of a session's record (and which one this store writes) in redis_records; the Lua scripts
that write them are redis_*.lua, loaded by redis_scripts; the connection is redis_client's.

Every write is one Lua script, so it is atomic and one round trip: scatter checks each row's
gen against the gathered one and writes only unchanged sessions (the others come back as
conflicts for the batcher to re-run), whatever the batch size. Each call carries a write id
of its own, stored with what it wrote, so a script resent after a lost reply answers as its
first run did (redis_client retries once on a fresh connection: see there). Reads (gather,
get, read) are one non-transactional pipeline. The scripts touch keys they derive from arguments
(rnnserve:live:{model}), which standalone Redis and Sentinel allow but Redis Cluster does not:
this store targets a single Redis (primary) by design; all sessions' keys share its memory.

Clocks: TTLs and `last_used` come from Redis's TIME inside the scripts, so replicas with
skewed clocks agree on when a session expires. `created` is the caller's timestamp.

Redis errors that remain after that retry surface as Unavailable: see redis_client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rnnserve.errors import RnnServeError, Unavailable
from rnnserve.state import redis_records, redis_scripts
from rnnserve.state.base import (
    AttachEvent,
    Gathered,
    SessionEvent,
    SessionRecord,
    StateLayout,
    Written,
)
from rnnserve.state.redis_attach import RedisAttachments
from rnnserve.state.redis_bulk import RedisBulkCreate
from rnnserve.state.redis_client import connect, guard, safe_url
from rnnserve.state.redis_client_sets import ClientSets
from rnnserve.state.redis_create import RedisCreate
from rnnserve.state.redis_format import (
    GEN,
    LIVE,
    MARKER,
    MODELS,
    OWNER,
    RECEIPT,
    RECEIPT_MS,
    SESSION,
    VLIVE,
    VLIVES,
    not_found,
    outputs_from,
    record_from,
    text,
    write_id,
)
from rnnserve.state.redis_gather import gather
from rnnserve.state.redis_history import HISTORY, find
from rnnserve.state.redis_move import RedisMigration
from rnnserve.state.redis_records import NEWEST, record_format, too_new
from rnnserve.state.redis_retired import RedisRetirements
from rnnserve.state.redis_scatter import ScatterWriter
from rnnserve.state.redis_ttl import Timeouts

log = logging.getLogger("rnnserve.state.redis")

SWEEP_LIMIT = 1000  # expired ids pruned per model per sweep (bounds the script's run time)
RESET_ATTEMPTS = 8


def sweep_interval(ttl_s: float) -> float:
    """How often to sweep for sessions of timeout `ttl_s`: a quarter of it, within bounds."""
    return max(0.05, min(5.0, ttl_s / 4))


class RedisStateStore(RedisMigration):
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
        max_sessions_per_client: int = 0,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
        record_format: int = 1,
        step_history: int = 16,
    ) -> None:
        """`record_format`: the format every write uses (redis_records.FORMATS); 1 until every
        replica on this Redis runs a release that reads the newer one. `step_history`: how
        many step ids each session keeps for replays (redis_history)."""
        if record_format not in redis_records.FORMATS:
            raise ValueError(f"record format {record_format} is not one of "
                             f"{redis_records.FORMATS}")
        self.url = url
        self.record_format = record_format
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._where = safe_url(url)
        self._on_event = on_event or (lambda event, model, steps: None)
        self._timeouts = Timeouts(ttl_s)  # the store's, and each version's (redis_ttl)
        self._sweep_fixed = sweep_interval_s is not None
        self._sweep_interval = (sweep_interval_s if sweep_interval_s is not None
                                else sweep_interval(ttl_s))
        self._client: aioredis.Redis = connect(url, connect_timeout_s, command_timeout_s)
        self._writer = ScatterWriter(self._client, self._where, timeouts=self._timeouts,
                                     wait_replicas=wait_replicas, wait_timeout_s=wait_timeout_s,
                                     record_format=record_format, history=step_history)
        self._reset = self._client.register_script(redis_scripts.RESET)
        self._move = self._client.register_script(redis_scripts.MOVE)
        self._delete = self._client.register_script(redis_scripts.DELETE)
        self._sweep = self._client.register_script(redis_scripts.SWEEP)
        self._owned = self._client.register_script(redis_scripts.OWNED)
        self.clients = ClientSets(self._client, self._where, max_sessions_per_client)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._attachments = RedisAttachments(self._client, self._where)
        self._retired = RedisRetirements(self._client, self._where)
        self._creator = RedisCreate(
            self._client, self._where, max_sessions=max_sessions, timeouts=self._timeouts,
            record_format=record_format, clients=self.clients,
            on_event=lambda event, model, steps: self._on_event(event, model, steps))
        self._bulk = RedisBulkCreate(
            self._client, self._where, max_sessions=max_sessions, timeouts=self._timeouts,
            record_format=record_format, clients=self.clients,
            on_event=lambda event, model, steps: self._on_event(event, model, steps))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and PING, so a server pointed at a dead Redis fails at start, clearly."""
        try:
            await self.ping()
        except Unavailable as exc:
            raise Unavailable(f"cannot start the Redis state store: {exc.message}; start "
                              "Redis or fix --state-store", retry_after_s=1) from exc
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="redis-session-sweeper")
        await self._attachments.start()

    async def ping(self) -> None:
        async with guard(self._where):
            await self._client.ping()

    async def close(self) -> None:
        self._closing = True
        await self._attachments.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
            self._sweeper = None
        await self._client.aclose()

    def _sweep_for(self, layout: StateLayout) -> None:
        """Sweep often enough for the shortest timeout seen (a version's own may be shorter
        than the store's) unless made with a `sweep_interval_s`: `expired` events then come
        a quarter of that timeout late at most, as with the store's own."""
        if layout.ttl_s is not None and not self._sweep_fixed:
            self._sweep_interval = min(self._sweep_interval, sweep_interval(layout.ttl_s))

    async def _sweep_forever(self) -> None:
        """Sweep until close(). The flag, not only the cancel, ends the loop: redis-py may
        turn a cancel that lands mid-command into a connection error (Unavailable here)."""
        while not self._closing:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
                await self.clients.sweep()
            except Unavailable as exc:  # Redis down for a while: keep serving what we can
                if self._closing:
                    return
                log.warning("session sweep failed: %s", exc.message)
            except Exception:  # never let a bad reply end the sweeping for good
                log.exception("session sweep failed")

    async def sweep(self) -> dict[str, int]:
        """Prune expired ids from the live sets (reporting each as an `expired` event, once
        across all replicas) and return the live sessions per model."""
        async with guard(self._where):
            counts, ended = await self._sweep(
                keys=[MODELS, VLIVES], args=[LIVE, SESSION, MARKER, SWEEP_LIMIT, VLIVE])
        for i in range(0, len(ended), 2):
            self._on_event("expired", text(ended[i]), int(ended[i + 1]))
        return {text(counts[i]): int(counts[i + 1]) for i in range(0, len(counts), 2)}

    # -- records ---------------------------------------------------------------------------

    def _record(self, session_id: str, meta: dict[bytes, Any]) -> SessionRecord:
        return record_from(session_id, meta, self.ttl_s)

    async def _fetch(self, session_id: str) -> dict[bytes, Any]:
        """The whole hash, or SessionNotFound saying unknown or expired: one round trip.
        A record of a format newer than this release reads is refused here (too_new)."""
        return (await self._fetch_with_state(session_id, state=False))[0]

    async def _fetch_with_state(self, session_id: str,
                                state: bool = True) -> tuple[dict[bytes, Any], Any]:
        """The hash and (with `state`) format 2's state key, read in one MULTI so that the
        two agree; SessionNotFound or too_new as _fetch."""
        async with guard(self._where):
            async with self._client.pipeline(transaction=state) as pipe:
                pipe.hgetall(SESSION + session_id)
                pipe.get(MARKER + session_id)
                if state:
                    pipe.get(redis_records.STATE + session_id)
                fields, marker, *whole = await pipe.execute()
        if not fields:
            raise not_found(session_id, marker)
        record_format(session_id, fields.get(redis_records.FORMAT))
        return dict(fields), whole[0] if whole else None

    # -- the interface ---------------------------------------------------------------------

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        """One script (redis_create): refuse a taken id (unless `replace`), an address over
        its cap, a version at its own cap or a full store, else write the session."""
        self._sweep_for(layout)
        return await self._creator.create(layout, record, state, replace=replace)

    async def create_many(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        """One script per chunk of sessions: redis_bulk."""
        self._sweep_for(layout)
        return await self._bulk.create_many(layout, records, states)

    async def get(self, session_id: str) -> SessionRecord:
        return self._record(session_id, await self._fetch(session_id))

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        """The record and the state, each tensor [layers, 1, hidden]."""
        fields, whole = await self._fetch_with_state(session_id)
        tensors = [(str(n), int(layers), int(hidden))
                   for n, layers, hidden in json.loads(fields[b"layout"])]
        fmt = record_format(session_id, fields.get(redis_records.FORMAT))
        wanted = redis_records.read_fields(tensors)
        row = redis_records.row_bytes(session_id, fmt, whole,
                                      [fields.get(f) for f in wanted[1:]], tensors)
        return self._record(session_id, fields), redis_records.unstack([row], tensors)

    async def reset(
        self, session_id: str, state: dict[str, np.ndarray] | None
    ) -> SessionRecord:
        """Read the layout, then a gen-checked write (retried if a step lands in between,
        since a reset must win over steps that ran before it)."""
        for _ in range(RESET_ATTEMPTS):
            fields = await self._fetch(session_id)
            ttl = self._timeouts.of_record(fields)  # the session's own (its version's)
            tensors = [(str(n), int(layers), int(hidden))
                       for n, layers, hidden in json.loads(fields[b"layout"])]
            pairs, whole = redis_records.state_fields(tensors, state, self.record_format)
            names = redis_records.tensor_fields(tensors)
            async with guard(self._where):
                out = await self._reset(
                    keys=[SESSION + session_id, MARKER + session_id, GEN,
                          redis_records.STATE + session_id, HISTORY + session_id],
                    args=[fields[b"gen"], ttl.ms, ttl.marker_ms, ttl.label,
                          LIVE, session_id, OWNER, write_id(), NEWEST, self.record_format,
                          whole, len(names), *names, *pairs[1::2]])
            status = text(out[0])
            if status == "missing":
                raise not_found(session_id, out[1])
            if status == "format":
                raise too_new(session_id, out[1])
            if status == "ok":
                fields.update({b"last_used": out[1], b"steps": b"0"})
                return self._record(session_id, fields)
        raise Unavailable(f"session {session_id!r} is too busy to reset; retry",
                          retry_after_s=0.1)

    async def delete(self, session_id: str) -> None:
        async with guard(self._where):
            out = await self._delete(
                keys=[SESSION + session_id, MARKER + session_id, RECEIPT + write_id(),
                      redis_records.STATE + session_id, HISTORY + session_id],
                args=[LIVE, session_id, OWNER, self.clients.prefix, RECEIPT_MS, NEWEST, VLIVE])
        if text(out[0]) == "missing":
            raise not_found(session_id, out[1])
        if text(out[0]) == "format":
            raise too_new(session_id, out[1])
        self._on_event("deleted", text(out[1]), int(out[2]))

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        return await self._attachments.attach(session_id, owner, self.ttl_s)

    def watch_attachments(self, on_attach: AttachEvent) -> None:
        self._attachments.watch(on_attach)

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None],
        holders: list[int | None] | None = None,
    ) -> Gathered:
        """A batch's sessions in one round trip: redis_gather."""
        return await gather(self._client, self._where, self._timeouts.of_layout(layout).ttl_s,
                            layout, ids, owners, holders)

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        """One round trip: the recorded outputs if `step_id` is the session's last step or
        in its replay window (redis_history)."""
        async with guard(self._where):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hmget(SESSION + session_id,
                           [b"last_id", b"last_out", b"steps", b"owner", redis_records.FORMAT])
                pipe.lrange(HISTORY + session_id, 0, -1)
                (last_id, last_out, steps, who, fmt), window = await pipe.execute()
        if steps is None or text(who or b"") != owner:
            return None
        record_format(session_id, fmt)
        if last_id is not None and text(last_id) == step_id and isinstance(last_out, bytes):
            return outputs_from(last_out), int(text(steps))
        return find(window, step_id)

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None], inputs: np.ndarray | None = None,
    ) -> Written:
        """The batch's write, and its WAIT when replicas must acknowledge it: redis_scatter."""
        return await self._writer.scatter(gathered, states, steps, outputs, step_ids, inputs)

    async def owned_sessions(self, owner: str) -> int:
        """Live sessions created by `owner`, across replicas: the size of its sorted set once
        ids past their expiry are dropped (one script, one round trip)."""
        async with guard(self._where):
            return int(await self._owned(keys=[OWNER + owner]))

    async def client_sessions(self, client: str) -> int:
        return await self.clients.count(client)

    async def live_sessions(self) -> dict[str, int]:
        """Live sessions per model across all replicas: the sizes of the live sorted sets
        after pruning expired ids (so exact up to the sweep it runs; no SCAN of the keys)."""
        return await self.sweep()

    # -- retired versions (redis_retired) --------------------------------------------------

    async def retire(self, model: str, version: int, until: float) -> float:
        return await self._retired.retire(model, version, until)

    async def unretire(self, model: str, version: int) -> None:
        await self._retired.unretire(model, version)

    async def retirements(self) -> dict[tuple[str, int], float]:
        return await self._retired.retirements()

    async def version_sessions(self, model: str) -> dict[int, int]:
        return await self._retired.version_sessions(model)

    async def version_session_ids(self, model: str, version: int, owner: str) -> list[str]:
        return await self._retired.version_session_ids(model, version, owner)
