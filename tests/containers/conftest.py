"""Fixtures of the container tests: podman ready, the project's image built once per run, and
the figures the tests measure collected in test-artifacts/container-figures.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.containers.podman import ROOT, BuiltImage, build_image, ensure_engine

FIGURES = ROOT / "test-artifacts" / "container-figures.json"


@pytest.fixture(scope="session")
def figures() -> Iterator[dict[str, Any]]:
    """Figures for the closing note and the docs; written when the session ends."""
    found: dict[str, Any] = {}
    yield found
    if found:
        FIGURES.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        FIGURES.write_text(json.dumps({**previous, **found}, indent=2) + "\n")


@pytest.fixture(scope="session")
def built_image(figures: dict[str, Any]) -> BuiltImage:
    """The CPU image from the committed Dockerfile (base: the Python stand-in)."""
    ensure_engine()
    image = build_image("runtime")
    figures["cpu_image"] = {
        "tag": image.tag, "build_s": round(image.build_s, 1),
        "size_mb": round(image.size_bytes / 1e6, 1),
        "base_size_mb": round(image.base_size_bytes / 1e6, 1),
        "own_layers_mb": round(image.own_bytes / 1e6, 1),
    }
    print(f"\nimage {image.tag}: {image.size_bytes / 1e6:.0f} MB "
          f"({image.own_bytes / 1e6:.0f} MB over its {image.base_size_bytes / 1e6:.0f} MB "
          f"base), built in {image.build_s:.0f} s")
    return image


def models_in(folder: Path) -> set[str]:
    """The model names a repository folder holds (folders with a model.onnx somewhere)."""
    return {p.name for p in folder.iterdir() if p.is_dir() and any(p.rglob("model.onnx"))}
