"""The Redis state store: sessions shared by every replica that points at one Redis.

The keys and the bytes stored under them are laid out in redis_format; the Lua scripts
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
import math
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from rnnserve.errors import (
    RnnServeError,
    SessionOnOtherVersion,
    Unavailable,
    UnknownSession,
)
from rnnserve.state import redis_scripts
from rnnserve.state.base import (
    AttachEvent,
    Gathered,
    SessionEvent,
    SessionRecord,
    StateLayout,
    Written,
    replaced,
)
from rnnserve.state.redis_attach import RedisAttachments
from rnnserve.state.redis_client import connect, guard, safe_url
from rnnserve.state.redis_client_sets import ClientSets
from rnnserve.state.redis_format import (
    GEN,
    LIVE,
    MARKER,
    META,
    MODELS,
    OWNER,
    RECEIPT,
    RECEIPT_MS,
    SESSION,
    GatherToken,
    from_bytes,
    layout_json,
    not_found,
    outputs_from,
    record_from,
    state_bytes,
    text,
    write_id,
)
from rnnserve.state.redis_scatter import ScatterWriter

log = logging.getLogger("rnnserve.state.redis")

MARKER_GRACE_MS = 86_400_000  # how long after expiry an id still answers "expired"
SWEEP_LIMIT = 1000  # expired ids pruned per model per sweep (bounds the script's run time)
RESET_ATTEMPTS = 8


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
        max_sessions_per_client: int = 0,
        wait_replicas: int = 0,
        wait_timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._where = safe_url(url)
        self._on_event = on_event or (lambda event, model, steps: None)
        self._ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self._marker_ttl_ms = self._ttl_ms + MARKER_GRACE_MS
        self._ttl_label = f"{ttl_s:g}"
        self._sweep_interval = (sweep_interval_s if sweep_interval_s is not None
                                else max(0.05, min(5.0, ttl_s / 4)))
        self._client: aioredis.Redis = connect(url, connect_timeout_s, command_timeout_s)
        self._create = self._client.register_script(redis_scripts.CREATE)
        self._writer = ScatterWriter(self._client, self._where, ttl_ms=self._ttl_ms,
                                     marker_ttl_ms=self._marker_ttl_ms,
                                     ttl_label=self._ttl_label, wait_replicas=wait_replicas,
                                     wait_timeout_s=wait_timeout_s)
        self._reset = self._client.register_script(redis_scripts.RESET)
        self._delete = self._client.register_script(redis_scripts.DELETE)
        self._sweep = self._client.register_script(redis_scripts.SWEEP)
        self._owned = self._client.register_script(redis_scripts.OWNED)
        self.clients = ClientSets(self._client, self._where, max_sessions_per_client)
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False
        self._attachments = RedisAttachments(self._client, self._where)

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
                keys=[MODELS], args=[LIVE, SESSION, MARKER, SWEEP_LIMIT])
        for i in range(0, len(ended), 2):
            self._on_event("expired", text(ended[i]), int(ended[i + 1]))
        return {text(counts[i]): int(counts[i + 1]) for i in range(0, len(counts), 2)}

    # -- records ---------------------------------------------------------------------------

    def _record(self, session_id: str, meta: dict[bytes, Any]) -> SessionRecord:
        return record_from(session_id, meta, self.ttl_s)

    async def _fetch(self, session_id: str) -> dict[bytes, Any]:
        """The whole hash, or SessionNotFound saying unknown or expired: one round trip."""
        async with guard(self._where):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hgetall(SESSION + session_id)
                pipe.get(MARKER + session_id)
                fields, marker = await pipe.execute()
        if not fields:
            raise not_found(session_id, marker)
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
            "steps", 0, "owner", record.owner, "layout", layout_json(layout.tensors)]
        for (name, _, _), raw in zip(layout.tensors, state_bytes(layout.tensors, state),
                                     strict=True):
            fields += ["t:" + name, raw]
        async with guard(self._where):
            out = await self._create(
                keys=[SESSION + record.id, MARKER + record.id, GEN, MODELS, LIVE + layout.model,
                      OWNER + record.owner, *self.clients.keys(record.client)],
                args=[int(replace), self.max_sessions, self._ttl_ms, self._marker_ttl_ms,
                      self._ttl_label, record.id, layout.model, LIVE, OWNER,
                      *self.clients.args(record.client), write_id(), *fields])
        status = text(out[0])
        if status == "taken":
            raise Unavailable(f"session id {record.id!r} is taken", retry_after_s=0)
        if status == "full":
            raise Unavailable(f"the server holds its maximum of {self.max_sessions} live "
                              "sessions; delete idle ones or retry later", retry_after_s=5)
        if status == "client-full":
            raise self.clients.refusal(record.client)
        now, rmodel, rsteps, emodel, esteps = (text(v) for v in out[1:6])
        if emodel:
            self._on_event("expired", emodel, int(esteps))
        if rmodel:
            self._on_event("deleted", rmodel, int(rsteps))
        self._on_event("created", layout.model, 0)
        return SessionRecord(id=record.id, model=layout.model, version=layout.version,
                             created=record.created, last_used=float(now), ttl_s=self.ttl_s,
                             steps=0, owner=record.owner, client=record.client)

    async def get(self, session_id: str) -> SessionRecord:
        return self._record(session_id, await self._fetch(session_id))

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        """The record and the state, each tensor [layers, 1, hidden]."""
        fields = await self._fetch(session_id)
        state = {name: from_bytes(fields[b"t:" + name.encode()], layers, hidden)[:, None, :]
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
            for (name, _, _), raw in zip(tensors, state_bytes(tensors, state), strict=True):
                pairs += ["t:" + name, raw]
            async with guard(self._where):
                out = await self._reset(
                    keys=[SESSION + session_id, MARKER + session_id, GEN],
                    args=[fields[b"gen"], self._ttl_ms, self._marker_ttl_ms, self._ttl_label,
                          LIVE, session_id, OWNER, write_id(), *pairs])
            status = text(out[0])
            if status == "missing":
                raise not_found(session_id, out[1])
            if status == "ok":
                fields.update({b"last_used": out[1], b"steps": b"0"})
                return self._record(session_id, fields)
        raise Unavailable(f"session {session_id!r} is too busy to reset; retry",
                          retry_after_s=0.1)

    async def delete(self, session_id: str) -> None:
        async with guard(self._where):
            out = await self._delete(
                keys=[SESSION + session_id, MARKER + session_id, RECEIPT + write_id()],
                args=[LIVE, session_id, OWNER, self.clients.prefix, RECEIPT_MS])
        if text(out[0]) == "missing":
            raise not_found(session_id, out[1])
        self._on_event("deleted", text(out[1]), int(out[2]))

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        return await self._attachments.attach(session_id, owner, self.ttl_s)

    def watch_attachments(self, on_attach: AttachEvent) -> None:
        self._attachments.watch(on_attach)

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None],
        holders: list[int | None] | None = None,
    ) -> Gathered:
        """One pipelined round trip (HMGET of the fields this layout needs, and the marker
        to tell expired from unknown), stacked into [layers, batch, hidden] per tensor."""
        names = [b"t:" + name.encode() for name, _, _ in layout.tensors]
        expected_layout = layout_json(layout.tensors).encode()
        version = str(layout.version).encode()
        async with guard(self._where):
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
                errors[i] = not_found(session_id, marker)
                continue
            owner = owners[i]
            if owner is not None and text(meta.get(b"owner") or b"") != owner:
                errors[i] = UnknownSession(f"unknown session {session_id!r}")
                continue
            claimed = holders[i] if holders is not None else None
            if claimed is not None and int(meta[b"holder"] or 0) != claimed:
                errors[i] = replaced(session_id)
                continue
            if (meta[b"model"] != layout.model.encode() or meta[b"version"] != version
                    or meta[b"layout"] != expected_layout):
                errors[i] = SessionOnOtherVersion(f"session {session_id!r} belongs to another "
                                            "model or version")
                continue
            for (name, layers, hidden), raw in zip(layout.tensors, values[len(META):],
                                                   strict=True):
                states[name][:, i, :] = from_bytes(raw, layers, hidden)
            gens[i] = meta[b"gen"]
            records[i] = self._record(session_id, meta)
        return Gathered(ids, states, errors, token=GatherToken(layout, gens, records))

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        """One round trip: the recorded outputs if `step_id` is the session's last step."""
        async with guard(self._where):
            last_id, last_out, steps, who = await self._client.hmget(
                SESSION + session_id, [b"last_id", b"last_out", b"steps", b"owner"])
        if last_id is None or text(last_id) != step_id or not isinstance(last_out, bytes):
            return None
        if text(who or b"") != owner:
            return None
        return outputs_from(last_out), int(text(steps))

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None],
    ) -> Written:
        """The batch's write, and its WAIT when replicas must acknowledge it: redis_scatter."""
        return await self._writer.scatter(gathered, states, steps, outputs, step_ids)

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
