"""Attaching a connection to a Redis session, and hearing of every replica's attaches.

The latest attach wins: a device that reconnects (its old TCP connection half-open, maybe to
another replica) takes its session over, and the older connection must stop stepping it. The
attach script (redis_attach.lua) raises the session's holder number and publishes
"{id} {holder}" on one channel; each replica listens there and tells its own connections to
let go. The channel only makes the close prompt: correctness never waits on it, since a
step that claims an older holder is refused by the gather, and one gathered before the
attach fails its gen check at the scatter and is gathered again."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rnnserve.errors import UnknownSession
from rnnserve.state import redis_scripts
from rnnserve.state.base import AttachEvent, SessionRecord
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import (
    GEN,
    MARKER,
    PREFIX,
    SESSION,
    not_found,
    text,
    write_id,
)
from rnnserve.state.redis_history import HISTORY
from rnnserve.state.redis_records import NEWEST, too_new
from rnnserve.state.redis_ttl import TTL, record_ttl

log = logging.getLogger("rnnserve.state.redis")

CHANNEL = PREFIX + "attached"
RECONNECT_S = 0.5


class RedisAttachments:
    """The attach script and the channel listener of one Redis store."""

    def __init__(self, client: aioredis.Redis, where: str) -> None:
        self._client = client
        self._where = where
        self._attach = client.register_script(redis_scripts.ATTACH)
        self._watchers: list[AttachEvent] = []
        self._listener: asyncio.Task[None] | None = None
        self._closing = False

    def watch(self, on_attach: AttachEvent) -> None:
        self._watchers.append(on_attach)

    async def attach(self, session_id: str, owner: str, ttl_s: float) -> SessionRecord:
        """Run the attach script; the record as it stands after the attach (`ttl_s`: the
        timeout of a record that stores none, from an older release)."""
        async with guard(self._where):
            out = await self._attach(keys=[SESSION + session_id, MARKER + session_id, GEN,
                                           HISTORY + session_id],
                                     args=[owner, CHANNEL, session_id, write_id(), NEWEST])
        status = text(out[0])
        if status == "format":
            raise too_new(session_id, out[1])
        if status == "other":  # another key's session: unknown to this one, left as it was
            raise UnknownSession(f"unknown session {session_id!r}")
        if status == "missing":
            raise not_found(session_id, out[1])
        holder = int(text(out[1]))
        model, version, created, last_used, steps, latest = (text(v) for v in out[2:8])
        ttl_s = record_ttl({TTL: out[8]}, ttl_s) or ttl_s  # the session's own, if stored
        self._tell(session_id, holder)  # this process at once; the channel echoes it later
        return SessionRecord(id=session_id, model=model, version=int(version),
                             created=float(created), last_used=float(last_used), ttl_s=ttl_s,
                             steps=int(steps), owner=owner, holder=holder,
                             last_step_id=latest or None)

    def _tell(self, session_id: str, holder: int) -> None:
        for on_attach in self._watchers:
            try:
                on_attach(session_id, holder)
            except Exception:
                log.exception("an attach watcher failed")

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen_forever(), name="redis-attach-listener")

    async def close(self) -> None:
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    async def _listen_forever(self) -> None:
        """Subscribe, relay, and subscribe again after Redis went away (logged once per
        outage): a replica that missed a message still refuses the old holder's steps."""
        failing = False
        while not self._closing:
            try:
                async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    if failing:
                        log.info("listening for other replicas' attaches again")
                        failing = False
                    while not self._closing:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            self._relay(message["data"])
            except (RedisError, OSError) as exc:
                if not failing and not self._closing:
                    log.warning("cannot listen for other replicas' attaches (%s); retrying",
                                exc)
                failing = True
                await asyncio.sleep(RECONNECT_S)

    def _relay(self, data: bytes) -> None:
        session_id, _, holder = text(data).rpartition(" ")
        if session_id and holder.isdigit():
            self._tell(session_id, int(holder))
