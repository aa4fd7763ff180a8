"""Model control, as Triton defines its three modes (`--model-control`):

- `none` (the default): the repository is loaded at start and never looked at again.
- `poll`: the repository is read every `--repository-poll-s` seconds: new models and versions
  are loaded, a version whose files changed is loaded again as a new instance (sessions that
  were live before finish on the instance they started on: model_registry.py), and removed
  ones are unloaded.
- `explicit`: only the models named by `--load-model` (`'*'`: all) are loaded at start; then
  the repository API (`load`, `unload`) says what is served.

Loading runs in a thread of its own (never on the event loop, never in the inference workers),
so the other models serve on while a model loads. A version that fails to load leaves the
instance that served before serving, and the index says why. Changes are made one at a time
(one lock for polls and API calls); each instance gets its batcher before it is published, and
an unloaded instance's batcher finishes its queued and running work before it stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rnnserve.engine.model_registry import (
    LOADING,
    UNAVAILABLE,
    UNLOADING,
    IndexEntry,
    ModelRegistry,
)
from rnnserve.engine.repository import ModelSource, is_valid_model_name, model_names
from rnnserve.engine.repository_watch import Fingerprint, ModelScan, fingerprint, scan_model
from rnnserve.engine.retirement import Retirement, retired
from rnnserve.engine.runner import Runner
from rnnserve.errors import (
    InvalidInput,
    ModelControlDisabled,
    ModelLoadFailed,
    ModelNotFound,
    RnnServeError,
)
from rnnserve.state import StateStore

log = logging.getLogger("rnnserve.model_control")
T = TypeVar("T")

NOT_ALLOWED = "explicit model load / unload is not allowed if polling is enabled"
"""Triton's message for a load or unload outside explicit mode (in its none mode too)."""
REMOVED = "removed from the repository"
UNLOADED = "unloaded (repository API)"
SWEEP_S = 10.0
"""How often explicit mode looks for superseded instances to let go (poll mode: each poll)."""
RETIRE_TICK_S = 1.0
"""How often retiring versions are checked (grace over, no session left) and the store's
retirements read (retirement.py)."""


def check_load_parameters(names: Collection[str]) -> None:
    """rnnserve loads models from the repository only: Triton's load parameters `config` (a
    model config to load with) and `file:<path>` (model files sent with the request) are
    refused by name, and so is any other (load takes none)."""
    overrides = sorted(k for k in names if k == "config" or k.startswith("file:"))
    if overrides:
        raise InvalidInput(
            f"load parameter(s) {overrides} are not supported: rnnserve loads a model from "
            "the files in its repository only (no config override, no files in the request); "
            "put the files in the repository, then load without parameters")
    if names:
        raise InvalidInput(f"unknown load parameter(s) {sorted(names)}; load takes none")


class RunnerHooks(Protocol):
    """What model control needs of the engine around each instance (the engine is one)."""

    def start_runner(self, runner: Runner) -> None:
        """Give a new instance its batcher (before it is published)."""

    async def stop_runner(self, runner: Runner, reason: str,
                          error: RnnServeError | None = None) -> None:
        """Finish the instance's queued and running work, then refuse more with `reason`
        (or with `error`)."""

    def idle_s(self, runner: Runner) -> float:
        """Seconds since the instance last ran a batch."""

    @property
    def store(self) -> StateStore | None:
        """The state store once open (retirements are recorded there)."""


class ModelControl:
    """Loads and unloads model versions while serving; see the module's docstring."""

    def __init__(self, mode: str, root: Path, poll_s: float, session_ttl_s: float,
                 registry: ModelRegistry, build: Callable[[ModelSource], Runner],
                 hooks: RunnerHooks, retire_grace_s: float = 0.0) -> None:
        self.mode = mode
        self._root = root
        self._poll_s = poll_s
        self._session_ttl_s = session_ttl_s
        self._registry = registry
        self._build = build
        self._hooks = hooks
        self.retirement = Retirement(registry, retire_grace_s, lambda: hooks.store)
        self._loader: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        # each version's files at its last load attempt: a poll loads only what changed since
        self._tried: dict[tuple[str, int], Fingerprint] = {
            (runner.name, runner.version): fingerprint(runner.source)
            for versions in registry.models.versions.values() for runner in versions.values()}
        self._failed: set[tuple[str, int]] = set()  # of those, the attempts that failed

    # -- the repository API ----------------------------------------------------------------

    def require_explicit(self) -> None:
        """Load and unload answer Triton's error unless the mode is explicit."""
        if self.mode != "explicit":
            raise ModelControlDisabled(
                f"{NOT_ALLOWED} (this server runs --model-control {self.mode}; start it with "
                "--model-control explicit to load and unload models through the repository "
                "API)")

    async def load(self, name: str) -> None:
        """Load (or load again what changed of) every version of `name` on disk; unload its
        versions that are gone. ModelLoadFailed says which versions did not load and why."""
        self.require_explicit()
        if not is_valid_model_name(name):  # refused, and not kept as a model that failed
            raise InvalidInput(f"invalid model name {name[:200]!r}: letters, digits, '_', '.' "
                               "and '-', with no leading dot (the model's folder name)")
        failures = await self._whole(self._sync(name, retry_failed=True))
        if failures:
            serving = sorted(self._registry.models.versions.get(name, {}))
            still = f"; serving on: version(s) {serving}" if serving else ""
            raise ModelLoadFailed(f"failed to load {name!r}: {'; '.join(failures)}{still}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name`: no new sessions or calls; a version with
        live sessions retires (retirement.py), the others stop once their queued and running
        work is done."""
        self.require_explicit()
        if name not in self._registry.known_names():
            if not (is_valid_model_name(name) and (self._root / name).is_dir()):
                raise ModelNotFound(f"unknown model {name!r}: nothing to unload; the "
                                    "index (POST /v2/repository/index) lists the models")
            return  # in the repository, never loaded: nothing to do
        await self._whole(self._remove_model(name, UNLOADED))

    async def _whole(self, change: Coroutine[Any, Any, T]) -> T:
        """Run a change under the lock to its end even if the caller goes away meanwhile (a
        client that disconnects, a request time limit): a change is never left half made."""
        async def locked() -> T:
            async with self._lock:
                return await change
        return await asyncio.shield(asyncio.ensure_future(locked()))

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every known model version with its state and reason; in explicit mode also the
        repository's models that were never loaded."""
        rows = self._registry.index(ready_only)
        if ready_only or self.mode != "explicit":
            return rows
        known = self._registry.known_names()
        on_disk = await asyncio.to_thread(model_names, self._root)
        rows += [IndexEntry(name, None, UNAVAILABLE,
                            "not loaded (load it with POST /v2/repository/models/"
                            f"{name}/load)") for name in on_disk if name not in known]
        return sorted(rows, key=lambda r: (r.name, -1 if r.version is None else r.version))

    # -- polling ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The background task of poll and explicit modes (cancelled at shutdown)."""
        for name, versions in list(self._registry.models.versions.items()):
            for version in versions:  # served from the start: any old retirement is over
                await self.retirement.loaded(name, version)
        retiring = asyncio.create_task(self._follow_retirements(), name="retirements")
        try:
            await self._passes()
        finally:
            retiring.cancel()

    async def _follow_retirements(self) -> None:
        """Each second: let go of retiring versions whose grace is over or whose sessions
        are all gone; retire here what another replica retired (recorded in the store)."""
        while True:
            await asyncio.sleep(RETIRE_TICK_S)
            try:
                async with self._lock:
                    adopt, done = await self.retirement.follow()
                    for name, version, until in adopt:
                        if version in self._registry.models.versions.get(name, {}):
                            await self._retire(name, version, until, "retired by a replica")
                    for name, version in done:
                        await self._let_go(name, version, "retired")
            except Exception:  # a bad pass must not end it: the next second tries again
                log.exception("retirement pass failed")

    async def _passes(self) -> None:
        interval = self._poll_s if self.mode == "poll" else SWEEP_S
        while True:
            await asyncio.sleep(interval)
            try:
                if self.mode == "poll":
                    await self.poll()
                else:
                    async with self._lock:
                        await self._sweep()
            except Exception:  # a bad pass must not end polling: the next one tries again
                log.exception("model control pass failed")

    async def poll(self) -> None:
        """One pass over the repository: what is new or changed loads, what is gone unloads,
        superseded instances no session needs any more are let go."""
        async with self._lock:
            names = await asyncio.to_thread(model_names, self._root)
            for name in names:
                await self._sync(name, retry_failed=False)
            for name in sorted(self._registry.known_names() - set(names)):
                if self._registry.models.versions.get(name):
                    await self._remove_model(name, REMOVED)
            await self._sweep()

    def close(self) -> None:
        if self._loader is not None:
            self._loader.shutdown(wait=True)
            self._loader = None

    # -- the work --------------------------------------------------------------------------

    async def _sync(self, name: str, *, retry_failed: bool) -> list[str]:
        """Bring one model in line with its folder; the failures, described."""
        scan: ModelScan = await asyncio.to_thread(scan_model, self._root, name)
        served = set(self._registry.models.versions.get(name, {}))
        failures: list[str] = []
        folder = scan.folder_problem
        if folder is not None and folder.missing:
            if served:
                await self._remove_model(name, REMOVED)
            return [folder.reason]
        if folder is not None:
            self._registry.failed(name, None, folder.reason)
            return [folder.reason]
        for problem in scan.problems:
            self._registry.failed(name, problem.version, problem.reason)
            failures.append(f"version {problem.version}: {problem.reason}")
        for source, marks in scan.sources:
            key = (name, source.version)
            if self._tried.get(key) == marks and (key not in self._failed or not retry_failed):
                continue  # unchanged since it loaded (or, polling, since it failed)
            failed = await self._load(source, replacing=source.version in served)
            self._tried[key] = marks
            if failed is None:
                self._failed.discard(key)
            else:
                self._failed.add(key)
                failures.append(f"version {source.version}: {failed}")
        for version in sorted(served - scan.on_disk()):
            await self._remove_version(name, version, REMOVED)
        return failures

    async def _load(self, source: ModelSource, *, replacing: bool) -> str | None:
        """Load one version in the loader thread and serve it; the reason when it fails."""
        if not replacing:
            self._registry.set_state(source.name, source.version, LOADING)
        if self._loader is None:
            self._loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        loop = asyncio.get_running_loop()
        try:
            runner = await loop.run_in_executor(self._loader, self._build, source)
        except Exception as exc:  # any reason a file cannot be served (a device, too)
            reason = str(exc) or type(exc).__name__
            log.error("model %s version %d failed to load from %s: %s", source.name,
                      source.version, source.onnx_path, reason)
            self._registry.failed(source.name, source.version, reason)
            return reason
        self._hooks.start_runner(runner)
        previous = self._registry.install(runner)
        await self.retirement.loaded(runner.name, runner.version)
        log.info("model %s version %d %s from %s (%.2f s)", source.name, source.version,
                 "loaded again as a new instance" if previous else "loaded",
                 source.onnx_path, runner.load_seconds)
        return None

    async def _remove_model(self, name: str, reason: str) -> None:
        versions = sorted(self._registry.models.versions.get(name, {}))
        for version in versions:
            await self._remove_version(name, version, reason)
        if not versions and not any(m == name for m, _ in self._registry.retiring):
            for runner in self._registry.remove_model(name, reason):
                await self._hooks.stop_runner(runner, reason)
        self._tried = {k: v for k, v in self._tried.items() if k[0] != name}
        self._failed = {k for k in self._failed if k[0] != name}

    async def _remove_version(self, name: str, version: int, reason: str) -> None:
        """A version unloaded or removed: it retires when it holds live sessions (they step
        on within the grace), and stops now when it holds none."""
        self._tried.pop((name, version), None)
        self._failed.discard((name, version))
        until = await self.retirement.begin(name, version, reason)
        if until is None:
            await self._let_go(name, version, reason)

    async def _retire(self, name: str, version: int, until: float, reason: str) -> None:
        """Retire here a version another replica retired, with the end it recorded (its
        files here stay as tried: a poll loads them again only once they change)."""
        self._registry.retire_version(name, version, until, f"{reason}: no new sessions")
        log.info("model %s version %d %s: retiring here too", name, version, reason)

    async def _let_go(self, name: str, version: int, reason: str) -> None:
        """Stop the version's instances (queued and running work first); later steps of its
        sessions get the retired error."""
        until = self.retirement.until(name, version)
        runners = self._registry.finish_retirement(name, version, reason)
        self._registry.set_state(name, version, UNLOADING, reason)
        for runner in runners:
            await self._hooks.stop_runner(
                runner, f"model {name!r} version {version} was {reason}",
                None if until is None else retired(name, version, until))
        self._registry.set_state(name, version, UNAVAILABLE, reason)
        log.info("model %s version %d %s", name, version, reason)

    async def _sweep(self) -> None:
        """Let go of superseded instances that ran nothing for a session TTL: every session
        created before their version changed has expired by then (each step renews it)."""
        idle = self._registry.drop_superseded(
            lambda runner: self._hooks.idle_s(runner) > self._session_ttl_s)
        for runner in idle:
            await self._hooks.stop_runner(runner, "superseded by newer files")
            log.info("model %s version %d: the instance loaded before its files changed "
                     "is let go (idle for the session TTL)", runner.name, runner.version)
