"""The Redis store's count of live sessions per client address, for the per-address cap that
holds while API keys are off: one count across all replicas, checked and written by the create
script itself, so concurrent creates (on any replica) cannot overshoot it.

Each address has a sorted set, rnnserve:client:{address}: session id -> the expiry as of its
create (Redis clock, ms). Steps do not refresh it, so the step path stays as it was; instead an
id whose score has passed is looked up before it counts (`prune_client`, in
redis_client_prune.lua): re-scored from its hash's TTL while the session lives, dropped once it
is gone. Delete removes the id at once. rnnserve:clients scores each address with the earliest
score in its set, so the sweep finds the sets of clients that never come back and drops them,
without a SCAN."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from rnnserve.errors import SessionQuotaExceeded
from rnnserve.state import redis_scripts
from rnnserve.state.base import client_quota_exceeded
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import CLIENT, CLIENTS, SESSION

SWEEP_LIMIT = 1000
"""Ids looked up per sweep across the client sets (bounds the script's run time)."""


class ClientSets:
    """The client sets of one store: what the create script needs of them, the count, and
    their sweep. `cap` is --max-sessions-per-client (0: counted, never refused)."""

    prefix = CLIENT  # the delete script's last ARGV: it drops the id from its client's set

    def __init__(self, client: aioredis.Redis, where: str, cap: int) -> None:
        self.cap = cap
        self._where = where
        self._count = client.register_script(redis_scripts.CLIENT_COUNT)
        self._sweep = client.register_script(redis_scripts.CLIENT_SWEEP)

    @staticmethod
    def keys(address: str) -> list[str]:
        """The create script's KEYS after the owner set."""
        return [CLIENT + address, CLIENTS]

    def args(self, address: str) -> list[Any]:
        """The create script's ARGV after the owner prefix ('' for a session not counted)."""
        return [address, self.cap, SESSION, CLIENT]

    def refusal(self, address: str) -> SessionQuotaExceeded:
        return client_quota_exceeded(address, self.cap)

    async def count(self, address: str) -> int:
        async with guard(self._where):
            return int(await self._count(keys=[CLIENT + address], args=[address, SESSION]))

    async def sweep(self) -> int:
        """Look up the ids past their expiry in the sets that are due; forget addresses with
        no live session left. Returns how many addresses it looked at."""
        async with guard(self._where):
            return int(await self._sweep(keys=[CLIENTS], args=[CLIENT, SESSION, SWEEP_LIMIT]))
