"""Which loaded instances serve each model version, and what the repository API reports for
each version (its state and why).

A version is served by one current instance (`LoadedModels.versions`, what every lookup
finds). When its files change and load again (model control), the new instance becomes
current and the old one is kept as *superseded* for the sessions created before the change:
a session finishes on the weights it started with (`session_runner`), while new sessions,
predictions and v2 calls go to the new instance. A superseded instance is let go once no
session can need it any more (`drop_superseded`, asked by model control). A version unloaded
or removed while it holds live sessions is *retiring* (`retire_version`): no longer served
for new work, its instances kept for its sessions until the end of its grace
(`finish_retirement`; the policy is retirement.py's).

Only the event loop touches a registry: model control loads in a worker thread and installs
the result here from the loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rnnserve.engine.models import LoadedModels
from rnnserve.engine.repository import SourceProblem
from rnnserve.engine.runner import Runner

READY = "READY"
LOADING = "LOADING"
UNLOADING = "UNLOADING"
UNAVAILABLE = "UNAVAILABLE"
"""The version states of Triton's repository index."""


@dataclass(frozen=True)
class IndexEntry:
    """One row of the repository index: a model version (version None: the model as a whole,
    when no version of it is known, e.g. a folder never loaded or one that cannot be read)."""

    name: str
    version: int | None
    state: str
    reason: str


@dataclass(frozen=True)
class Instance:
    """A loaded runner and the wall-clock time it began to serve its version (compared with
    session records' `created`, also wall-clock)."""

    runner: Runner
    serving_since: float


VersionKey = tuple[str, int | None]


class ModelRegistry:
    """The served view (`models`, shared with every reader) plus instances and states."""

    def __init__(self, models: LoadedModels, clock: Callable[[], float] = time.time) -> None:
        self.models = models
        self._clock = clock
        self._instances: dict[tuple[str, int], list[Instance]] = {}  # oldest first; last current
        self._states: dict[VersionKey, tuple[str, str]] = {}
        self.retiring: dict[tuple[str, int], float] = {}  # -> the end of the grace (epoch s)
        for name, versions in models.versions.items():
            for version, runner in versions.items():
                self._instances[(name, version)] = [Instance(runner, 0.0)]  # since the start
                self._states[(name, version)] = (READY, "")
        for problem in models.problems:
            self._states[(problem.name, problem.version)] = (UNAVAILABLE, problem.reason)

    # -- lookups ---------------------------------------------------------------------------

    def session_runner(self, model: str, version: int, created: float) -> Runner | None:
        """The instance a session created at `created` steps on: the newest that was serving
        by then (the oldest kept when it predates them all: a session from before this
        process started); None when the version is not served."""
        instances = self._instances.get((model, version))
        if not instances:
            return None
        if len(instances) == 1:
            return instances[0].runner
        chosen = instances[0].runner
        for instance in instances:
            if instance.serving_since <= created:
                chosen = instance.runner
        return chosen

    def has_superseded(self, model: str, version: int) -> bool:
        """Whether sessions of this version may still step on an older instance than the
        current one (then a stream must look each step's session up)."""
        return len(self._instances.get((model, version), ())) > 1

    def instances(self, model: str, version: int) -> list[Runner]:
        return [i.runner for i in self._instances.get((model, version), ())]

    def newest_known(self, model: str) -> int | None:
        """The highest version of `model` this server knows in any state (None: none)."""
        versions = [v for (name, v) in self._states if name == model and v is not None]
        return max(versions, default=None)

    def known_names(self) -> set[str]:
        return {name for name, _ in self._states}

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every model version this server knows, by name and version; a model that has a
        version row has no row of its own."""
        with_versions = {name for name, version in self._states if version is not None}
        rows = [IndexEntry(name, version, state, reason)
                for (name, version), (state, reason) in self._states.items()
                if version is not None or name not in with_versions]
        rows.sort(key=lambda row: (row.name, -1 if row.version is None else row.version))
        return [row for row in rows if row.state == READY or not ready_only]

    def version_states(self, model: str) -> list[dict[str, Any]]:
        """Every version of the model this server knows, served or not, with its state (the
        index's), why, and a served version's settings (GET /v1/models, the console)."""
        rows = []
        for entry in self.index():
            if entry.name != model or entry.version is None:
                continue
            served = self.models.versions.get(model, {}).get(entry.version)
            rows.append({"version": entry.version, "state": entry.state, "reason": entry.reason,
                         "settings": served.settings.describe() if served else None})
        return rows

    # -- changes ---------------------------------------------------------------------------

    def set_state(self, name: str, version: int | None, state: str, reason: str = "") -> None:
        self._states[(name, version)] = (state, reason)

    def install(self, runner: Runner) -> Runner | None:
        """Serve `runner` as its version's current instance; returns the instance it
        supersedes (kept for the sessions created before now), if any."""
        key = (runner.name, runner.version)
        instances = self._instances.setdefault(key, [])
        previous = instances[-1].runner if instances else None
        instances.append(Instance(runner, self._clock()))
        self.models.versions.setdefault(runner.name, {})[runner.version] = runner
        self._states[key] = (READY, "")
        self.retiring.pop(key, None)
        self._states.pop((runner.name, None), None)
        self._forget_problems(runner.name, (runner.version, None))
        return previous

    def failed(self, name: str, version: int | None, reason: str) -> None:
        """A load of this version (or of the model, version None) failed: a version still
        served stays READY and says why its new files are not; otherwise it is UNAVAILABLE
        and listed as a problem (GET /v1/models)."""
        served = self.models.versions.get(name, {})
        if version is not None and version in served:
            self._states[(name, version)] = (
                READY, f"new files failed to load, the previous ones serve on: {reason}")
            return
        if version is None and served:
            for number in served:
                self._states[(name, number)] = (
                    READY, f"the model folder cannot be read, this version serves on as "
                           f"loaded before: {reason}")
            return
        self._states[(name, version)] = (UNAVAILABLE, reason)
        self._forget_problems(name, (version,))
        self.models.problems.append(SourceProblem(name, version, reason))

    def remove_version(self, name: str, version: int, reason: str) -> list[Runner]:
        """Stop serving a version (every instance of it); returns the instances to let go."""
        instances = self._instances.pop((name, version), [])
        served = self.models.versions.get(name, {})
        served.pop(version, None)
        if not served:
            self.models.versions.pop(name, None)
        self._states[(name, version)] = (UNAVAILABLE, reason)
        self._forget_problems(name, (version,))
        return [i.runner for i in instances]

    def retire_version(self, name: str, version: int, until: float, reason: str) -> None:
        """Serve the version no longer for new work (no new session, prediction or v2 call;
        not the default), while its sessions step on its instances until `until`."""
        served = self.models.versions.get(name, {})
        served.pop(version, None)
        if not served:
            self.models.versions.pop(name, None)
        self.retiring[(name, version)] = until
        self._states[(name, version)] = (UNLOADING, reason)

    def finish_retirement(self, name: str, version: int, reason: str) -> list[Runner]:
        """The grace is over (or no session is left): the instances to let go."""
        self.retiring.pop((name, version), None)
        return self.remove_version(name, version, reason)

    def remove_model(self, name: str, reason: str) -> list[Runner]:
        """Stop serving every version of a model; its rows stay in the index, UNAVAILABLE."""
        released: list[Runner] = []
        versions = {v for n, v in self._states if n == name and v is not None}
        versions |= set(self.models.versions.get(name, {}))
        for version in sorted(versions):
            released += self.remove_version(name, version, reason)
        if not versions:
            self._states[(name, None)] = (UNAVAILABLE, reason)
        self._forget_problems(name, None)
        return released

    def drop_superseded(self, unused: Callable[[Runner], bool]) -> list[Runner]:
        """Let go of the superseded instances `unused` says no session needs any more."""
        released: list[Runner] = []
        for key, instances in self._instances.items():
            older, current = instances[:-1], instances[-1]
            gone = [i for i in older if unused(i.runner)]
            if gone:
                self._instances[key] = [i for i in older if i not in gone] + [current]
                released += [i.runner for i in gone]
        return released

    def _forget_problems(self, name: str, versions: tuple[int | None, ...] | None) -> None:
        """Drop the problems recorded for `name` (for those versions; None: all of them)."""
        self.models.problems[:] = [
            p for p in self.models.problems
            if p.name != name or (versions is not None and p.version not in versions)]
