"""One batcher per loaded model instance: made when the engine opens (every instance loaded at
start) or when model control serves a new one, closed when model control lets an instance
go (its queued and running work finishes first) or the engine closes. The engine's hooks for
model control (`model_control.RunnerHooks`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rnnserve.engine.batcher import Batcher, BatcherOptions
from rnnserve.engine.runner import Runner
from rnnserve.engine.sessions import Sessions
from rnnserve.errors import RnnServeError
from rnnserve.metrics import Metrics
from rnnserve.settings import Settings
from rnnserve.state import StateStore
from rnnserve.tracing import Tracing


class InstanceBatchers:
    """Runner instance → its batcher. An instance runs with its model's settings
    (`Runner.settings`: `max_batch`, `max_delay_ms`; the flags where model.json says
    nothing). Batchers share the server's run slots (--inference-workers), except those of a
    model that declares `inference_workers`: each of its instances has that many slots of its
    own (and its own worker threads, `Runner`)."""

    def __init__(self, settings: Settings, metrics: Metrics, tracing: Tracing,
                 served_version: Callable[[str, int], Runner | None]) -> None:
        self._max_queue = settings.max_queue
        self._workers = settings.inference_workers
        self._metrics = metrics
        self._tracing = tracing
        self._served_version = served_version
        self._batchers: dict[Runner, Batcher] = {}
        self._store: StateStore | None = None
        self._sessions: Sessions | None = None
        self._slots: asyncio.Semaphore | None = None

    def open(self, store: StateStore, sessions: Sessions) -> None:
        """In the running loop, once the store is open."""
        self._store, self._sessions = store, sessions
        self._slots = asyncio.Semaphore(self._workers)

    def get(self, runner: Runner) -> Batcher | None:
        return self._batchers.get(runner)

    def start_runner(self, runner: Runner) -> None:
        """Give an instance its batcher (before it is published to lookups)."""
        assert self._store is not None and self._slots is not None, "not open"
        own = runner.settings
        options = BatcherOptions(own.max_batch, own.max_delay_ms / 1000, self._max_queue)
        slots = (asyncio.Semaphore(own.inference_workers)
                 if own.is_declared("inference_workers") else self._slots)
        self._batchers[runner] = Batcher(runner, self._store, slots, options,
                                         self._metrics, self._tracing)
        self._metrics.model_loaded.labels(runner.name, str(runner.version)).set(1)

    @property
    def store(self) -> StateStore | None:
        return self._store

    async def stop_runner(self, runner: Runner, reason: str,
                          error: RnnServeError | None = None) -> None:
        """Finish an instance's queued and running work, then refuse more with `reason` (or
        `error`: a retired version's)."""
        batcher = self._batchers.pop(runner, None)
        if self._sessions is not None:
            self._sessions.forget(runner)
        if self._served_version(runner.name, runner.version) is None:
            self._metrics.model_loaded.labels(runner.name, str(runner.version)).set(0)
        if batcher is not None:
            await batcher.close(reason, error)
        runner.close()

    def idle_s(self, runner: Runner) -> float:
        """Seconds since the instance's last batch began (since its batcher was made)."""
        batcher = self._batchers.get(runner)
        return 0.0 if batcher is None else time.perf_counter() - batcher.last_active

    async def close_all(self) -> None:
        """At shutdown: every batcher finishes what it holds."""
        for runner, batcher in list(self._batchers.items()):
            await batcher.close()
            runner.close()
