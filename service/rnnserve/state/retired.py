"""Retired model versions in the memory store, and its live sessions per version.

A retired version (model control unloaded it, or the repository lost it) takes no new
sessions; its live sessions step on until `until` (wall-clock seconds), then get the retired
error. The record lives in the state store so every replica sharing it answers alike (the
Redis store's is `redis_retired`); the first retirement of a version fixes its `until`."""

from __future__ import annotations

import numpy as np

from rnnserve.state.slab import Slab


class MemoryRetirements:
    """`retire`, `unretire`, `retirements` and `version_sessions` for MemoryStateStore."""

    _slabs: list[Slab]
    _retired: dict[tuple[str, int], float]
    _owner_ids: dict[str, int]

    async def retire(self, model: str, version: int, until: float) -> float:
        """Record the version as retired with its sessions stepping on until `until`; a
        version retired already keeps its first `until`, returned."""
        return self._retired.setdefault((model, version), until)

    async def unretire(self, model: str, version: int) -> None:
        """The version serves again (loaded once more): forget its retirement."""
        self._retired.pop((model, version), None)

    async def retirements(self) -> dict[tuple[str, int], float]:
        """Every retired version and the end of its sessions' grace."""
        return dict(self._retired)

    async def version_sessions(self, model: str) -> dict[int, int]:
        """Live sessions of `model` per version (versions with none are left out)."""
        counts: dict[int, int] = {}
        for slab in self._slabs:
            if slab.layout.model == model and slab.live:
                counts[slab.layout.version] = counts.get(slab.layout.version, 0) + slab.live
        return counts

    async def version_session_ids(self, model: str, version: int, owner: str) -> list[str]:
        """The live sessions of the version that `owner` created (a bulk migration's)."""
        owner_id = self._owner_ids.get(owner)
        if owner_id is None:
            return []
        for slab in self._slabs:
            if (slab.layout.model, slab.layout.version) == (model, version):
                n = slab.high_water
                slots = np.flatnonzero(slab.alive[:n] & (slab.owner[:n] == owner_id))
                return [str(slab.ids[slot]) for slot in slots.tolist()]
        return []
