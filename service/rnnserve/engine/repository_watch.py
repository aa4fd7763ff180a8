"""How model control tells that a model version's files changed: a fingerprint of the files
a version is loaded from (the size and modification time of each), read again at each poll
of the repository (`--model-control poll`) and at each repository API load.

A version's files are its model.onnx and every other file in its numbered folder (ONNX
external data, its own model.json), plus the model's shared model.json. The fingerprint is
taken before the files are loaded, so a file replaced during a load is loaded again at the
next poll. A file caught half-written fails to load (the previous instance serves on) and is
loaded again once it changes: writing a new file under a temporary name and renaming it into
place avoids even that."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rnnserve.engine.repository import ModelSource, SourceProblem, discover_model

Fingerprint = tuple[tuple[str, int, int], ...]
"""(file name, size, modification time in ns) of each file a version is loaded from."""


def version_files(source: ModelSource) -> list[Path]:
    """The files one version is loaded from (whether they exist or not)."""
    folder = source.onnx_path.parent
    if folder.name.isdigit():  # models/<name>/<N>/...: the whole version folder
        shared = folder.parent / "model.json"
        try:
            files = sorted(p for p in folder.rglob("*") if p.is_file())
        except OSError:
            files = [source.onnx_path]
        return [*files, shared]
    return [source.onnx_path, folder / "model.json"]  # models/<name>/model.onnx: version 1


def fingerprint(source: ModelSource) -> Fingerprint:
    """The version's files as they are now; a missing file counts as size -1."""
    marks: list[tuple[str, int, int]] = []
    for path in version_files(source):
        try:
            stat = os.stat(path)
        except OSError:
            marks.append((str(path), -1, 0))
            continue
        marks.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(marks)


@dataclass(frozen=True)
class ModelScan:
    """One model folder as it is on disk now: its servable versions with their fingerprints,
    and what in it cannot be used."""

    name: str
    sources: list[tuple[ModelSource, Fingerprint]]
    problems: list[SourceProblem]

    @property
    def folder_problem(self) -> SourceProblem | None:
        """A problem of the folder as a whole (no version of it can be read)."""
        return next((p for p in self.problems if p.version is None), None)

    def on_disk(self) -> set[int]:
        """The version numbers present, servable or not."""
        return ({s.version for s, _ in self.sources}
                | {p.version for p in self.problems if p.version is not None})


def scan_model(root: Path, name: str) -> ModelScan:
    """Read one model folder (blocking: model control runs it in a thread)."""
    sources, problems = discover_model(root, name)
    return ModelScan(name, [(s, fingerprint(s)) for s in sources], problems)
