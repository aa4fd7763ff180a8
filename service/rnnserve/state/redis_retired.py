"""Retired model versions in Redis, shared by every replica, and live sessions per version.

    rnnserve:retired       hash: "{model}/{version}" -> the end of the grace of its sessions,
                           epoch seconds (the retiring replica's clock). HSETNX: the first
                           replica to retire a version fixes it; a version loaded again is
                           deleted from it.

Live sessions per version are counted (redis_version_count.lua), and a version's ids listed
(redis_version_ids.lua), by one script over the model's live set."""

from __future__ import annotations

from typing import Any

from rnnserve.state import redis_scripts
from rnnserve.state.redis_client import guard
from rnnserve.state.redis_format import LIVE, PREFIX, SESSION, text

RETIRED = PREFIX + "retired"


def _field(model: str, version: int) -> str:
    return f"{model}/{version}"


class RedisRetirements:
    """`retire`, `unretire`, `retirements`, `version_sessions` for RedisStateStore."""

    def __init__(self, client: Any, where: str) -> None:
        self._client = client
        self._where = where
        self._count = client.register_script(redis_scripts.VERSION_COUNT)
        self._ids = client.register_script(redis_scripts.VERSION_IDS)

    async def retire(self, model: str, version: int, until: float) -> float:
        async with guard(self._where):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(RETIRED, _field(model, version), repr(until))
                pipe.hget(RETIRED, _field(model, version))
                _, recorded = await pipe.execute()
        return float(text(recorded))

    async def unretire(self, model: str, version: int) -> None:
        async with guard(self._where):
            await self._client.hdel(RETIRED, _field(model, version))

    async def retirements(self) -> dict[tuple[str, int], float]:
        async with guard(self._where):
            fields = await self._client.hgetall(RETIRED)
        out: dict[tuple[str, int], float] = {}
        for key, until in fields.items():
            model, _, version = text(key).rpartition("/")
            out[(model, int(version))] = float(text(until))
        return out

    async def version_sessions(self, model: str) -> dict[int, int]:
        async with guard(self._where):
            flat = await self._count(keys=[LIVE + model], args=[SESSION])
        return {int(text(flat[i])): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def version_session_ids(self, model: str, version: int, owner: str) -> list[str]:
        """The live sessions of the version that `owner` created (a bulk migration's)."""
        async with guard(self._where):
            ids = await self._ids(keys=[LIVE + model], args=[SESSION, version, owner])
        return [text(i) for i in ids]
