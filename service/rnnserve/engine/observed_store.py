"""The state store as the engine uses it: every call also tells `StoreHealth` whether the
store could be reached, so that readiness follows real traffic as well as the probe.

A StoreUnreachable (no connection, a timeout) is a failure dated from the start of the call;
any answer is a success, an error answer too (no such session, store full): the store was
there to give it. Errors pass through unchanged, so the callers (batch.py, sessions.py) still
tell the client whether its step was applied."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
from prometheus_client import Counter

from rnnserve.engine.store_health import StoreHealth
from rnnserve.errors import RnnServeError, SessionFormatTooNew, StoreFull, StoreUnreachable
from rnnserve.state import (
    AttachEvent,
    Gathered,
    SessionRecord,
    StateLayout,
    StateStore,
    Written,
)

T = TypeVar("T")


class ObservedStore:
    """A StateStore that forwards every call to `inner` and reports how it went."""

    def __init__(self, inner: StateStore, health: StoreHealth,
                 errors: Counter | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._health = health
        self._errors = errors  # rnnserve_state_store_errors_total, by kind

    async def _observed(self, call: Awaitable[T]) -> T:
        started = self._health.clock()
        try:
            result = await call
        except StoreUnreachable as exc:
            self._health.failed(exc.message, started)
            self._count("unreachable")
            raise
        except RnnServeError as exc:
            self._health.succeeded()
            if isinstance(exc, StoreFull):
                self._count("full")
            elif isinstance(exc, SessionFormatTooNew):
                self._count("format")
            raise
        self._health.succeeded()
        return result

    def _count(self, kind: str) -> None:
        if self._errors is not None:
            self._errors.labels(self.name, kind).inc()

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self._observed(self.inner.ping())

    async def create(
        self, layout: StateLayout, record: SessionRecord, state: dict[str, np.ndarray] | None,
        *, replace: bool = False,
    ) -> SessionRecord:
        return await self._observed(self.inner.create(layout, record, state, replace=replace))

    async def create_many(
        self, layout: StateLayout, records: list[SessionRecord],
        states: list[dict[str, np.ndarray] | None],
    ) -> list[SessionRecord | RnnServeError]:
        return await self._observed(self.inner.create_many(layout, records, states))

    async def get(self, session_id: str) -> SessionRecord:
        return await self._observed(self.inner.get(session_id))

    async def read(self, session_id: str) -> tuple[SessionRecord, dict[str, np.ndarray]]:
        return await self._observed(self.inner.read(session_id))

    async def reset(
        self, session_id: str, state: dict[str, np.ndarray] | None
    ) -> SessionRecord:
        return await self._observed(self.inner.reset(session_id, state))

    async def delete(self, session_id: str) -> None:
        await self._observed(self.inner.delete(session_id))

    async def gather(
        self, layout: StateLayout, ids: list[str], owners: list[str | None],
        holders: list[int | None] | None = None,
    ) -> Gathered:
        return await self._observed(self.inner.gather(layout, ids, owners, holders))

    async def attach(self, session_id: str, owner: str) -> SessionRecord:
        return await self._observed(self.inner.attach(session_id, owner))

    def watch_attachments(self, on_attach: AttachEvent) -> None:
        self.inner.watch_attachments(on_attach)

    async def scatter(
        self, gathered: Gathered, states: dict[str, np.ndarray], steps: list[int],
        outputs: np.ndarray, step_ids: list[str | None], inputs: np.ndarray | None = None,
    ) -> Written:
        # passed on only when given: stores (and test doubles) without the argument still work
        kept = {} if inputs is None else {"inputs": inputs}
        return await self._observed(
            self.inner.scatter(gathered, states, steps, outputs, step_ids, **kept))

    async def recent_inputs(self, session_id: str, features: int
                            ) -> tuple[SessionRecord, np.ndarray]:
        return await self._observed(self.inner.recent_inputs(session_id, features))

    async def move(self, layout: StateLayout, expect: SessionRecord,
                   state: dict[str, np.ndarray], inputs: np.ndarray) -> SessionRecord:
        return await self._observed(self.inner.move(layout, expect, state, inputs))

    async def replay(
        self, session_id: str, step_id: str, owner: str
    ) -> tuple[np.ndarray, int] | None:
        return await self._observed(self.inner.replay(session_id, step_id, owner))

    async def live_sessions(self) -> dict[str, int]:
        return await self._observed(self.inner.live_sessions())

    async def owned_sessions(self, owner: str) -> int:
        return await self._observed(self.inner.owned_sessions(owner))

    async def version_sessions(self, model: str) -> dict[int, int]:
        return await self._observed(self.inner.version_sessions(model))

    async def version_session_ids(self, model: str, version: int, owner: str) -> list[str]:
        return await self._observed(self.inner.version_session_ids(model, version, owner))

    async def retire(self, model: str, version: int, until: float) -> float:
        return await self._observed(self.inner.retire(model, version, until))

    async def unretire(self, model: str, version: int) -> None:
        await self._observed(self.inner.unretire(model, version))

    async def retirements(self) -> dict[tuple[str, int], float]:
        return await self._observed(self.inner.retirements())

    async def client_sessions(self, client: str) -> int:
        return await self._observed(self.inner.client_sessions(client))
