"""The loaded models: every version's Runner, keyed by name and version, plus the folders that
failed to load and why. Loading one model never stops the others; a device that cannot be
used (`--device cuda` without a usable GPU) stops them all, since no model would run where it
was asked to."""

from __future__ import annotations

import logging
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rnnserve.engine.providers import DeviceUnavailable
from rnnserve.engine.repository import SourceProblem, discover
from rnnserve.engine.runner import Runner, RunnerOptions
from rnnserve.errors import ModelNotFound
from rnnserve.whole_numbers import version_number

log = logging.getLogger("rnnserve.models")


@dataclass
class LoadedModels:
    """Name → version → Runner; the highest version is the default."""

    versions: dict[str, dict[int, Runner]] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path, options: RunnerOptions, pool: ThreadPoolExecutor,
             only: Collection[str] | None = None) -> LoadedModels:
        """Discover, create a session for and warm up every model version under `root` (of
        the models named in `only`, when given: explicit model control's --load-model; a
        name not in the repository is reported as a problem)."""
        sources, problems = discover(root)
        if only is not None:
            sources = [s for s in sources if s.name in only]
            problems = [p for p in problems if p.name in only]
            found = {s.name for s in sources} | {p.name for p in problems}
            problems += [SourceProblem(name, None, f"--load-model {name}: no such model in "
                                       f"{root}", missing=True)
                         for name in sorted(set(only) - found)]
        loaded = cls(problems=list(problems))
        for problem in problems:
            log.error("model %s not served: %s", problem.name, problem.reason)
        for source in sources:
            try:
                runner = Runner(source, options, pool)
            except DeviceUnavailable:
                raise  # the server's fault, not the file's: `rnnserve serve` exits 2
            except Exception as exc:  # any reason a file cannot be served: report, go on
                loaded.problems.append(SourceProblem(source.name, source.version, str(exc)))
                log.error("model %s version %d failed to load from %s: %s",
                          source.name, source.version, source.onnx_path, exc)
                continue
            loaded.versions.setdefault(source.name, {})[source.version] = runner
            sig = runner.signature
            states = ", ".join(f"{s.input}[{s.layers},B,{s.hidden}]" for s in sig.states)
            log.info("loaded %s version %d: cell=%s input=%d output=%d state=%s provider=%s "
                     "directions=%d streamable=%s (%.2f s)", source.name, source.version,
                     sig.cell, sig.input_size, sig.output_size, states or "none",
                     runner.provider, sig.directions, runner.streaming.streamable,
                     runner.load_seconds)
            if not runner.streaming.streamable:
                log.warning("model %s version %d serves predict only, no sessions or "
                            "sequences: %s", source.name, source.version,
                            runner.streaming.reason)
        return loaded

    def names(self) -> list[str]:
        return sorted(self.versions)

    def get(self, name: str, version: str | int | None = None) -> Runner:
        """The runner for a model (and version, default the highest); 404 with choices if not."""
        by_version = self.versions.get(name)
        if by_version is None:
            failed = [p for p in self.problems if p.name == name]
            if failed:
                raise ModelNotFound(f"model {name!r} failed to load: {failed[0].reason}")
            raise ModelNotFound(f"unknown model {name!r}; loaded models: {self.names()}")
        if version is None:  # ("" names no version: a blank field must not mean "latest")
            return by_version[max(by_version)]
        number = version_number(version)
        if number is None or number not in by_version:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; "
                                f"available versions: {sorted(by_version)}")
        return by_version[number]
