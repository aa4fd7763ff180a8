"""Discover the model repository on disk (the contract in README.md, "Model repository"):

    models/<name>/model.onnx            one version (version 1)
    models/<name>/<N>/model.onnx        numbered versions; the highest is the default
    models/<name>/model.json            optional metadata (also models/<name>/<N>/model.json)

Only paths found here are ever opened: request paths name models by key, never by path."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnserve.engine.model_settings import DeclaredSettings, declared_settings
from rnnserve.whole_numbers import whole_number

log = logging.getLogger("rnnserve.repository")

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
"""Names a model folder may have: no separators, no leading dot, so no path tricks."""


@dataclass(frozen=True)
class ModelSource:
    """One version of one model as found on disk, not yet loaded."""

    name: str
    version: int
    onnx_path: Path
    metadata: dict[str, Any] = field(default_factory=dict)
    settings: DeclaredSettings = field(default_factory=DeclaredSettings)
    """The serving settings its model.json files declare (checked; model_settings.py)."""


@dataclass(frozen=True)
class SourceProblem:
    """A folder that looked like a model but cannot be served, and why."""

    name: str
    version: int | None
    reason: str
    missing: bool = False
    """Nothing to serve is on disk (no folder, no model.onnx), as opposed to files that are
    there but cannot be used: model control unloads what is missing and keeps serving a
    version whose new files are broken."""


def is_valid_model_name(name: str) -> bool:
    return bool(MODEL_NAME.match(name)) and ".." not in name


def _read_metadata(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def discover(root: Path) -> tuple[list[ModelSource], list[SourceProblem]]:
    """Every servable model version under `root`, and the folders that could not be used."""
    sources: list[ModelSource] = []
    problems: list[SourceProblem] = []
    if not root.is_dir():
        raise FileNotFoundError(f"model repository {root} is not a directory")
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        found, failed = discover_folder(folder)
        sources += found
        problems += failed
    return sources, problems


def model_names(root: Path) -> list[str]:
    """The names of the model folders under `root` (valid or not), as `discover` walks them."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def discover_model(root: Path, name: str) -> tuple[list[ModelSource], list[SourceProblem]]:
    """`discover` for the one model folder `root/name` (the repository API loads one model):
    a name that could escape the folder is refused, a folder that is not there is a problem."""
    if not is_valid_model_name(name):
        return [], [SourceProblem(name, None, "invalid model name (letters, digits, '_', '.', "
                                              "'-'; no leading dot)")]
    folder = root / name
    if not folder.is_dir():
        return [], [SourceProblem(name, None, f"no folder {name!r} in the model repository",
                                  missing=True)]
    return discover_folder(folder)


def discover_folder(folder: Path) -> tuple[list[ModelSource], list[SourceProblem]]:
    """The servable versions of one model folder, and what could not be used in it."""
    sources: list[ModelSource] = []
    problems: list[SourceProblem] = []
    name = folder.name
    if not is_valid_model_name(name):
        return [], [SourceProblem(name, None, "invalid model folder name")]
    try:
        shared_meta = _read_metadata(folder / "model.json")
        shared_settings = declared_settings(shared_meta, folder / "model.json")
    except ValueError as exc:  # ModelSettingsError is one: it names the file and field
        return [], [SourceProblem(name, None, str(exc))]
    versions = sorted(
        number for p in folder.iterdir()
        if p.is_dir() and (number := whole_number(p.name)) is not None
    )
    found = False
    for version in versions:
        onnx_path = folder / str(version) / "model.onnx"
        if not onnx_path.is_file():
            continue
        version_json = folder / str(version) / "model.json"
        try:
            own_meta = _read_metadata(version_json)
            settings = declared_settings(own_meta, version_json).over(shared_settings)
        except ValueError as exc:
            problems.append(SourceProblem(name, version, str(exc)))
            continue
        sources.append(ModelSource(name, version, onnx_path, {**shared_meta, **own_meta},
                                   settings))
        found = True
    if not found and (folder / "model.onnx").is_file():
        sources.append(ModelSource(name, 1, folder / "model.onnx", shared_meta,
                                   shared_settings))
        found = True
    if not found:
        problems.append(
            SourceProblem(name, None, "no model.onnx (expected <name>/model.onnx or "
                                      "<name>/<N>/model.onnx)", missing=True)
        )
    return sources, problems
